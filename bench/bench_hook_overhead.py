"""Overhead of the controlkit vLLM hook on the real vLLM 0.33.0 scheduler (offline, CPU).

For each number of running requests (64, 256, 512 by default) one scheduler is filled with
requests in pure decode, then blocks of ``--block-steps`` steps are run, cycling through
the variants in a rotating order (interleaved A/B/C..., so drift and noise hit all alike):

* ``off``: vLLM's own ``Scheduler.schedule`` / ``update_from_output`` (hook bypassed);
* ``static``: the hook with the static policy (the hook's own floor: observation, guard,
  bookkeeping, a decision that costs next to nothing);
* ``pid``: the hook with a designed PID policy (``controlkit.design.design_pid``), deciding
  every step (``decide_period_s=0``; the hook's default for a designed controller is its
  design sample period, the ``pid@T`` row);
* ``pid+log``: the same, plus the JSONL step log;
* ``pid@T``: the PID decided at its design sample period (``decide_period_s="auto"``),
  the other steps only bookkeeping;
* ``mpc``: the hook with a designed MPC policy, re-solved every step;
* ``mpc/k``: the MPC amortised: re-solved every ``--mpc-every`` steps.

Only ``schedule()`` + ``update_from_output()`` are timed (``time.perf_counter``); building the
fake model output is not.  The report gives, per variant, the median (over blocks) of the
block-median step time, and two ratios to ``off`` (goal: <= 1.02): ``paired``, the median
over rounds of block/off-block of the same round, and ``best``, fastest block over fastest
``off`` block (timeit-style, least disturbed by other processes).  On a shared machine those
A/B ratios carry a few percent of noise, so the hooked variants also time the hook's own
three calls inside each step (``hook us``, median) and report ``in-step`` =
1 + hook time / vLLM's step time, which other processes disturb far less.  ``policy us`` is
the median time inside the policy's ``decide`` (the guard's own timing; 0 on steps without a
decision), so ``hook us - policy us`` is what the adapter itself costs.
Policies may be replaced with ``--policy NAME=SPEC``.

Run: ``HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_hook_overhead.py [--running 64 256 512]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
os.environ.setdefault("VLLM_DO_NOT_TRACK", "1")
os.environ.setdefault("VLLM_CACHE_ROOT", tempfile.mkdtemp(prefix="ck-vllm-cache-"))
warnings.simplefilter("ignore")

BLOCK = 16
PROMPT = 16


def designed_policies(ceiling: int, mpc_every: int) -> dict[str, Any]:
    """PID and MPC policy files designed on a nominal plant (decode steps of ~20-60 ms)."""
    from controlkit.design import design_mpc, design_pid
    from controlkit.plant import DesignPlant
    from controlkit.policyfile import PolicyFile

    plant = DesignPlant(
        sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4, b_min=1,
        b_max=ceiling, kv_capacity_blocks=200_000, block_size=BLOCK, tokens_per_seq=600,
        arrival_rate_per_s=5, prompt_tokens_mean=400, output_tokens_mean=200,
    )
    pid = design_pid(plant, 0.05, 2.0, method="simc").to_policy_file()
    mpc = design_mpc(plant, 0.05, 2.0).to_policy_file()
    doc = mpc.to_dict()
    doc["params"] = {**doc["params"], "every_k": mpc_every}
    static = PolicyFile.from_dict({**doc, "kind": "static", "params": {"max_num_seqs": ceiling}})
    return {"static": static, "pid": pid, "mpc": mpc, f"mpc/{mpc_every}": PolicyFile.from_dict(doc)}


def build_scheduler(model_dir: str, running: int) -> Any:
    """A real ControlledScheduler sized for ``running`` long decodes (VLLM.md §4)."""
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    from policies.vllm.config import HookConfig
    from policies.vllm.scheduler import ControlledScheduler

    blocks = running * (4096 // BLOCK) + 16
    model = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float16", max_model_len=4096, seed=0)
    sched_cfg = SchedulerConfig(max_num_seqs=running, max_num_batched_tokens=max(8192, running * PROMPT),
                                max_model_len=4096, is_encoder_decoder=False, enable_chunked_prefill=True,
                                async_scheduling=False)
    cache = CacheConfig(block_size=BLOCK, enable_prefix_caching=False)
    vcfg = VllmConfig(model_config=model, scheduler_config=sched_cfg, cache_config=cache,
                      device_config=DeviceConfig(device="cpu"))
    cache.num_gpu_blocks = blocks
    kv = KVCacheConfig(num_blocks=blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(
        ["model.layers.0.self_attn.attn"],
        FullAttentionSpec(block_size=BLOCK, num_kv_heads=4, head_size=16, dtype=torch.float16))])
    return ControlledScheduler(vllm_config=vcfg, kv_cache_config=kv,
                               structured_output_manager=StructuredOutputManager(vcfg),
                               block_size=BLOCK, log_stats=True, controlkit=HookConfig())


def fake_output(sched: Any, so: Any) -> Any:
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(so.num_scheduled_tokens)
    return ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                             sampled_token_ids=[[] if sched.requests[r].is_prefill_chunk else [7] for r in ids])


def measure(model_dir: str, running: int, policies: dict[str, Any], blocks: int, block_steps: int,
            log_dir: Path) -> dict[str, list[list[float]]]:
    """Per-step times (s), by block, of each variant on one scheduler holding ``running`` decodes."""
    from vllm import SamplingParams
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.request import Request

    from policies.vllm.config import HookConfig
    from policies.vllm.scheduler import HookRuntime

    sched = build_scheduler(model_dir, running)
    steps_needed = blocks * block_steps * (len(policies) + 3) + 50  # + off, pid+log, pid@T
    for i in range(running):
        sched.add_request(Request(request_id=f"r{i}", prompt_token_ids=[5] * PROMPT, pooling_params=None,
                                  sampling_params=SamplingParams(max_tokens=min(4000, steps_needed), ignore_eos=True)))
    for _ in range(5):  # prefill everything
        so = sched.schedule()
        sched.update_from_output(so, fake_output(sched, so))
    assert len(sched.running) == running, (len(sched.running), running)
    runtimes: dict[str, Any] = {"off": None}
    for name, pf in policies.items():
        # every step (decide_period_s=0): the hook's default, "auto", would decide a designed
        # controller only at its design sample period, which is what pid@T measures
        runtimes[name] = HookRuntime(sched, HookConfig(policy=pf, decide_budget_s=1.0, decide_period_s=0.0))
        if name == "pid":
            runtimes["pid+log"] = HookRuntime(sched, HookConfig(
                policy=pf, decide_budget_s=1.0, decide_period_s=0.0,
                step_log=str(log_dir / f"steps-{running}.jsonl")))
            # the PID at its design sample period (CONTROLKIT_DECIDE_PERIOD_S=auto)
            runtimes["pid@T"] = HookRuntime(sched, HookConfig(policy=pf, decide_budget_s=1.0,
                                                               decide_period_s="auto"))
    names = list(runtimes)
    times: dict[str, list[list[float]]] = {n: [] for n in names}
    hooks: dict[str, list[float]] = {n: [] for n in names}
    decides: dict[str, list[float]] = {n: [] for n in names}
    base_schedule, base_update = Scheduler.schedule, Scheduler.update_from_output
    perf = time.perf_counter
    for b in range(blocks):
        order = names[b % len(names):] + names[: b % len(names)]
        for name in order:
            rt = runtimes[name]
            if rt is not None:
                sched.controlkit = rt
            block: list[float] = []
            times[name].append(block)
            for _ in range(block_steps):
                if rt is None:
                    t0 = perf()
                    so = base_schedule(sched)
                    t1 = perf()
                    mro = fake_output(sched, so)
                    t2 = perf()
                    base_update(sched, so, mro)
                    t3 = perf()
                    hook_s = 0.0
                else:  # exactly what ControlledScheduler.schedule/update_from_output do
                    t0 = perf()
                    rt.before_schedule(sched)
                    h0 = perf()
                    so = base_schedule(sched)
                    h1 = perf()
                    rt.after_schedule(sched, so)
                    t1 = perf()
                    mro = fake_output(sched, so)
                    t2 = perf()
                    base_update(sched, so, mro)
                    h2 = perf()
                    rt.after_update(sched, so)
                    t3 = perf()
                    hook_s = (h0 - t0) + (t1 - h1) + (t3 - h2)
                    guard = rt.guard
                    if guard is not None:
                        decides[name].append(guard.last_decide_s)
                        guard.last_decide_s = 0.0
                block.append((t1 - t0) + (t3 - t2))
                hooks[name].append(hook_s)
    assert len(sched.running) == running, "requests finished during the measurement"
    for rt in runtimes.values():
        if rt is not None:
            rt.close()
            if rt.guard is not None:
                assert rt.guard.total_faults == 0, rt.guard.summary()
    times["hook_only"] = [[statistics.median(h)] if h else [0.0] for h in hooks.values()]
    times["policy_only"] = [[statistics.median(d)] if d else [0.0] for d in decides.values()]
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--running", type=int, nargs="+", default=[64, 256, 512])
    parser.add_argument("--blocks", type=int, default=12, help="blocks per variant")
    parser.add_argument("--block-steps", type=int, default=25)
    parser.add_argument("--mpc-every", type=int, default=10)
    parser.add_argument("--policy", action="append", default=[], metavar="NAME=SPEC",
                        help="replace/add a variant: a policy spec string or file")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from transformers import LlamaConfig

    work = Path(tempfile.mkdtemp(prefix="ck-bench-"))
    model_dir = work / "model"
    LlamaConfig(vocab_size=1024, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=8192).save_pretrained(model_dir)
    report: dict[str, Any] = {}
    for running in args.running:
        policies: dict[str, Any] = designed_policies(max(running, 8), args.mpc_every)
        for item in args.policy:
            name, _, spec = item.partition("=")
            policies[name] = spec
        times = measure(str(model_dir), running, policies, args.blocks, args.block_steps, work)
        variants = [n for n in times if n not in ("hook_only", "policy_only")]
        hook_only = dict(zip(variants, times.pop("hook_only"), strict=True))
        policy_only = dict(zip(variants, times.pop("policy_only"), strict=True))
        off_blocks = [statistics.median(b) for b in times["off"]]
        off = statistics.median(off_blocks)
        row = {}
        print(f"\nrunning={running}: vLLM alone {off * 1e3:.3f} ms/step (median of block medians; "
              f"{args.blocks} interleaved blocks x {args.block_steps} steps per variant)")
        print(f"  {'variant':10s} {'ms/step':>9s} {'paired':>7s} {'best':>7s} {'extra us':>9s} "
              f"{'hook us':>8s} {'policy us':>9s} {'in-step':>8s}")
        for name, blocks in times.items():
            meds = [statistics.median(b) for b in blocks]
            med = statistics.median(meds)
            # paired: each block against the 'off' block of the same rotation round
            paired = statistics.median(m / o for m, o in zip(meds, off_blocks, strict=True))
            best = min(meds) / min(off_blocks)  # least-disturbed blocks (timeit-style)
            hook_s, policy_s = hook_only[name][0], policy_only[name][0]
            in_step = 1.0 + hook_s / off  # hook time measured inside the same steps, over vLLM's time
            row[name] = {"ms_per_step": med * 1e3, "ratio_paired": paired, "ratio_best": best,
                         "extra_us": (med - off) * 1e6, "hook_us": hook_s * 1e6, "policy_us": policy_s * 1e6,
                         "ratio_in_step": in_step}
            print(f"  {name:10s} {med * 1e3:9.3f} {paired:7.3f} {best:7.3f} {(med - off) * 1e6:9.1f} "
                  f"{hook_s * 1e6:8.1f} {policy_s * 1e6:9.1f} {in_step:8.3f}")
        report[str(running)] = row
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
