"""Overhead of the controlkit vLLM hook on the real vLLM 0.33.0 scheduler (offline, CPU).

For each number of running requests (64, 256, 512 by default) one scheduler is filled with
requests in pure decode, then blocks of ``--block-steps`` steps are run, cycling through
the variants in a rotating order (interleaved A/B/C..., so drift and noise hit all alike):

* ``off``: vLLM's own ``Scheduler.schedule`` / ``update_from_output`` (hook bypassed);
* ``pid``: the hook with a designed PID policy (``controlkit.design.design_pid``);
* ``pid+log``: the same, plus the JSONL step log;
* ``mpc``: the hook with a designed MPC policy, re-solved every step;
* ``mpc/k``: the MPC amortised: re-solved every ``--mpc-every`` steps.

Only ``schedule()`` + ``update_from_output()`` are timed (``time.perf_counter``); building the
fake model output is not.  The report gives, per variant, the median step time and the
ratio to ``off`` (goal: <= 1.02).  Policies may be replaced with ``--policy NAME=SPEC``.

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
    return {"pid": pid, "mpc": mpc, f"mpc/{mpc_every}": PolicyFile.from_dict(doc)}


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
            log_dir: Path) -> dict[str, list[float]]:
    """Per-step times (s) of each variant on one scheduler holding ``running`` decodes."""
    from vllm import SamplingParams
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.request import Request

    from policies.vllm.config import HookConfig
    from policies.vllm.scheduler import HookRuntime

    sched = build_scheduler(model_dir, running)
    steps_needed = blocks * block_steps * (len(policies) + 2) + 50
    for i in range(running):
        sched.add_request(Request(request_id=f"r{i}", prompt_token_ids=[5] * PROMPT, pooling_params=None,
                                  sampling_params=SamplingParams(max_tokens=min(4000, steps_needed), ignore_eos=True)))
    for _ in range(5):  # prefill everything
        so = sched.schedule()
        sched.update_from_output(so, fake_output(sched, so))
    assert len(sched.running) == running, (len(sched.running), running)
    runtimes: dict[str, Any] = {"off": None}
    for name, pf in policies.items():
        runtimes[name] = HookRuntime(sched, HookConfig(policy=pf, decide_budget_s=1.0))
        if name == "pid":
            runtimes["pid+log"] = HookRuntime(sched, HookConfig(
                policy=pf, decide_budget_s=1.0, step_log=str(log_dir / f"steps-{running}.jsonl")))
    names = list(runtimes)
    times: dict[str, list[float]] = {n: [] for n in names}
    base_schedule, base_update = Scheduler.schedule, Scheduler.update_from_output
    perf = time.perf_counter
    for b in range(blocks):
        order = names[b % len(names):] + names[: b % len(names)]
        for name in order:
            rt = runtimes[name]
            if rt is not None:
                sched.controlkit = rt
            for _ in range(block_steps):
                if rt is None:
                    t0 = perf()
                    so = base_schedule(sched)
                    t1 = perf()
                    mro = fake_output(sched, so)
                    t2 = perf()
                    base_update(sched, so, mro)
                    t3 = perf()
                else:
                    t0 = perf()
                    so = sched.schedule()
                    t1 = perf()
                    mro = fake_output(sched, so)
                    t2 = perf()
                    sched.update_from_output(so, mro)
                    t3 = perf()
                times[name].append((t1 - t0) + (t3 - t2))
    assert len(sched.running) == running, "requests finished during the measurement"
    for rt in runtimes.values():
        if rt is not None:
            rt.close()
            if rt.guard is not None:
                assert rt.guard.total_faults == 0, rt.guard.summary()
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
        off = statistics.median(times["off"])
        row = {}
        print(f"\nrunning={running}: off median {off * 1e3:.3f} ms/step "
              f"({len(times['off'])} steps per variant, interleaved blocks of {args.block_steps})")
        for name, ts in times.items():
            med = statistics.median(ts)
            mean_ratio = statistics.fmean(ts) / statistics.fmean(times["off"])
            row[name] = {"median_ms": med * 1e3, "ratio_median": med / off, "ratio_mean": mean_ratio}
            print(f"  {name:10s} median {med * 1e3:8.3f} ms   ratio(median) {med / off:6.3f}   "
                  f"ratio(mean) {mean_ratio:6.3f}")
        report[str(running)] = row
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
