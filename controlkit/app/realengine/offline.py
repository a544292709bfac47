r"""Run the tiny model with ``vllm.LLM`` (offline engine), with or without the controlkit hook.

Command line (in the real-engine venv; prints one JSON object)::

    python -m controlkit.app.realengine.offline MODEL_DIR --policy static:max_num_seqs=4 \\
        --step-log steps.jsonl --num-requests 48 --seed 0

The engine runs in vLLM's default multiprocess mode, so the engine-core process imports
``policies.vllm.make_scheduler`` by name (``policies`` must be importable there).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np

from controlkit.app.realengine.server import ENGINE_ENV

__all__ = ["engine_kwargs", "generate", "make_llm"]

#: The hook's ``scheduler_cls`` value (a factory: vLLM 0.32 and 0.33 both accept any callable).
HOOK = "policies.vllm.make_scheduler"


def engine_kwargs(*, max_num_seqs: int = 32, max_model_len: int = 1024, num_gpu_blocks: int | None = None,
                  ) -> dict[str, Any]:
    """``LLM`` keyword arguments shared by every real-engine run (eager, fp32, no prefix cache)."""
    kw: dict[str, Any] = {"max_num_seqs": max_num_seqs, "max_model_len": max_model_len, "dtype": "float32",
                          "enforce_eager": True, "enable_prefix_caching": False, "seed": 0}
    if num_gpu_blocks is not None:
        kw["num_gpu_blocks_override"] = num_gpu_blocks
    return kw


def make_llm(model: str, *, hooked: bool, policy: str | None = None, step_log: str | None = None,
             **kwargs: Any) -> Any:
    """Build ``vllm.LLM`` for ``model``; with ``hooked`` the controlkit scheduler is installed."""
    for key, value in ENGINE_ENV.items():
        os.environ.setdefault(key, value)
    from vllm import LLM

    if hooked:
        section: dict[str, Any] = {}
        if policy:
            section["policy"] = policy
        if step_log:
            section["step_log"] = step_log
        kwargs = {**kwargs, "scheduler_cls": HOOK, "additional_config": {"controlkit": section}}
    return LLM(model, **kwargs)


def generate(llm: Any, prompt_tokens: list[int], output_tokens: list[int], *, seed: int = 0,
             vocab: int = 512) -> tuple[float, list[int]]:
    """Generate for token-id prompts of the given lengths; (wall seconds, output lengths)."""
    from vllm import SamplingParams, TokensPrompt

    rng = np.random.default_rng(seed)
    prompts = [TokensPrompt(prompt_token_ids=[int(t) for t in rng.integers(3, vocab, n)]) for n in prompt_tokens]
    params = [SamplingParams(max_tokens=n, min_tokens=n, ignore_eos=True, temperature=0.0) for n in output_tokens]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, params, use_tqdm=False)
    wall = time.perf_counter() - t0
    return wall, [len(o.outputs[0].token_ids) for o in outs]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (see the module docstring)."""
    ap = argparse.ArgumentParser(description="Run the tiny model with vllm.LLM and the controlkit hook.")
    ap.add_argument("model")
    ap.add_argument("--policy", default=None)
    ap.add_argument("--step-log", default=None)
    ap.add_argument("--no-hook", action="store_true")
    ap.add_argument("--num-requests", type=int, default=48)
    ap.add_argument("--max-num-seqs", type=int, default=32)
    ap.add_argument("--num-gpu-blocks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    prompts = [int(n) for n in rng.integers(16, 128, args.num_requests)]
    outputs = [int(n) for n in rng.integers(4, 64, args.num_requests)]
    t0 = time.perf_counter()
    llm = make_llm(args.model, hooked=not args.no_hook, policy=args.policy, step_log=args.step_log,
                   **engine_kwargs(max_num_seqs=args.max_num_seqs, num_gpu_blocks=args.num_gpu_blocks))
    init_s = time.perf_counter() - t0
    wall, got = generate(llm, prompts, outputs, seed=args.seed)
    print(json.dumps({"init_s": init_s, "generate_s": wall, "requested_output_tokens": outputs,
                      "output_tokens": got}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
