"""Run vLLM's whole ``LLM`` engine with a fake executor (VLLM.md §5); a script for subprocesses.

``python fake_engine.py MODE OUT_JSON`` builds ``LLM(...)`` in process with a fake executor
whose "model" emits token 7 once a request's prompt is computed, generates a fixed batch of
prompts (unequal output lengths), and writes what happened as JSON: the scheduler class the engine used, the running
counts per engine step, the Prometheus exposition text of the default registry, and so on.

MODE is one of

* ``string``: ``scheduler_cls="policies.vllm.make_scheduler"`` (the documented flag);
* ``plugin``: no ``scheduler_cls``; ``CONTROLKIT_ENABLE=1`` and vLLM's plugin loader;
* ``plugin-explicit``: the plugin is on *and* an explicit vLLM scheduler class is given.

It runs in a subprocess so that ``VLLM_TARGET_DEVICE=cpu`` and the in-process engine do not
leak into the test process (vLLM resolves its platform once per process).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings
from concurrent.futures import Future
from pathlib import Path
from typing import Any

NUM_PROMPTS = 20
#: Output lengths, one per prompt: unequal, so requests finish at different steps and the
#: running batch varies (1..cap) for ``identify`` to see a slope.
OUTPUT_TOKENS = [8 + 4 * (i % 5) for i in range(NUM_PROMPTS)]
PROMPT_TOKENS = 24
# The fake "forward pass" takes STEP_BASE_S + STEP_PER_SEQ_S per scheduled sequence, so the
# hook's step log has a known, positive latency slope for ``identify`` to find (without it
# step time is scheduler noise and the fitted slope can come out negative).
STEP_BASE_S = 2e-3
STEP_PER_SEQ_S = 1e-3


def _fake_executor_class() -> Any:
    import torch
    from vllm.v1.executor.abstract import Executor
    from vllm.v1.kv_cache_interface import FullAttentionSpec
    from vllm.v1.outputs import ModelRunnerOutput

    class FakeExecutor(Executor):  # type: ignore[misc]
        """Answers the worker RPCs; 'executes' by emitting token 7 after each prompt."""

        def _init_executor(self) -> None:
            self.total_len: dict[str, int] = {}
            self.pending: Any = None

        def collective_rpc(self, method: Any, timeout: Any = None, args: tuple[Any, ...] = (),
                           kwargs: Any = None, non_block: bool = False) -> Any:
            name = method if isinstance(method, str) else getattr(method, "__name__", "")
            if name == "get_kv_cache_spec":
                spec = FullAttentionSpec(block_size=16, num_kv_heads=4, head_size=16, dtype=torch.float16)
                out: Any = [{"model.layers.0.self_attn.attn": spec}]
            elif name == "determine_available_memory":
                out = [64 * 2**20]
            elif name == "get_supported_kv_cache_layouts":
                out = [["NHD"]]
            elif name == "get_supported_tasks":
                out = [("generate",)]
            elif name in ("compile_or_warm_up_model",):
                out = []
            else:
                out = [None]
            if non_block:
                fut: Future[Any] = Future()
                fut.set_result(out)
                return fut
            return out

        def check_health(self) -> None:
            return None

        def execute_model(self, scheduler_output: Any, non_block: bool = False) -> Any:
            self.pending = scheduler_output
            return self._maybe_future(None, non_block)

        def sample_tokens(self, grammar_output: Any, non_block: bool = False) -> Any:
            so, self.pending = self.pending, None
            time.sleep(STEP_BASE_S + STEP_PER_SEQ_S * len(so.num_scheduled_tokens))
            before: dict[str, int] = {}
            for nr in so.scheduled_new_reqs:
                self.total_len[nr.req_id] = len(nr.prompt_token_ids)
                before[nr.req_id] = nr.num_computed_tokens
            cached = so.scheduled_cached_reqs
            for rid, n in zip(cached.req_ids, cached.num_computed_tokens, strict=True):
                before[rid] = n
            ids = list(so.num_scheduled_tokens)
            sampled = []
            for rid in ids:
                done = before.get(rid, 0) + so.num_scheduled_tokens[rid]
                if done >= self.total_len[rid]:
                    sampled.append([7])
                    self.total_len[rid] += 1
                else:
                    sampled.append([])
            for rid in so.finished_req_ids:
                self.total_len.pop(rid, None)
            mro = ModelRunnerOutput(
                req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)}, sampled_token_ids=sampled
            )
            return self._maybe_future(mro, non_block)

        @staticmethod
        def _maybe_future(value: Any, non_block: bool) -> Any:
            if not non_block:
                return value
            fut: Future[Any] = Future()
            fut.set_result(value)
            return fut

        @classmethod
        def supports_async_scheduling(cls) -> bool:
            return False

    return FakeExecutor


def run(mode: str, model_dir: str) -> dict[str, Any]:
    """Build the engine for ``mode``, generate, and report."""
    from prometheus_client import REGISTRY, generate_latest
    from vllm import LLM, SamplingParams

    kwargs: dict[str, Any] = {}
    if mode == "string":
        kwargs["scheduler_cls"] = "policies.vllm.make_scheduler"
    elif mode == "plugin-explicit":
        kwargs["scheduler_cls"] = "vllm.v1.core.sched.scheduler.Scheduler"
    llm = LLM(
        model=model_dir, skip_tokenizer_init=True, enforce_eager=True, max_model_len=1024,
        max_num_seqs=16, max_num_batched_tokens=1024, distributed_executor_backend=_fake_executor_class(),
        disable_log_stats=False, seed=0, **kwargs,
    )
    core = llm.llm_engine.engine_core.engine_core
    sched = core.scheduler
    running: list[int] = []
    original = sched.schedule

    def counting_schedule(*a: Any, **k: Any) -> Any:
        out = original(*a, **k)
        running.append(len(sched.running))
        return out

    sched.schedule = counting_schedule
    prompts = [{"prompt_token_ids": [11 + i] * PROMPT_TOKENS} for i in range(NUM_PROMPTS)]
    params = [SamplingParams(max_tokens=n, ignore_eos=True, detokenize=False) for n in OUTPUT_TOKENS]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    hook = getattr(sched, "controlkit", None)
    if hook is not None:
        hook.close()
    return {
        "scheduler": type(sched).__name__,
        "running": running,
        "completion_tokens": [len(o.outputs[0].token_ids) for o in outputs],
        "faults": 0 if hook is None or hook.guard is None else hook.guard.total_faults,
        "metrics": generate_latest(REGISTRY).decode(),
    }


def main(argv: list[str]) -> int:
    """``fake_engine.py MODES MODEL_DIR OUT_JSON``; MODES is a comma-separated list.

    The ``plugin`` modes need ``CONTROLKIT_ENABLE=1`` from the start (vLLM loads its
    plugins once per process), so they are never mixed with ``string`` in one process.
    """
    modes, model_dir, out = argv
    os.environ.setdefault("VLLM_TARGET_DEVICE", "cpu")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if "plugin" in modes:
        os.environ["CONTROLKIT_ENABLE"] = "1"
    warnings.simplefilter("ignore")
    results = {}
    for mode in modes.split(","):
        if mode == "string":
            os.environ.pop("CONTROLKIT_ENABLE", None)
        results[mode] = run(mode, model_dir)
    Path(out).write_text(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
