"""Cross-plant x cross-workload matrix: design a controller on condition X, run it on condition Y.

Conditions (plant x workload, 2 x 2 = 4):

* plants: ``vllm-h100:llama-2-7b`` and the same plant **1.5x slower** (every step time, decode
  and prefill, x1.5: an older GPU or a bigger model);
* workloads: ``steady`` (ShareGPT lengths, Poisson arrivals) and ``bursty-prefill`` (ShareGPT
  prompts x4, outputs / 4, gamma arrivals with CV 3: prefill-heavy and bursty).

For each X the controller is designed as a user would: the engine runs X's workload as a ramp
(0.2 -> 1.2 x X's nominal rate, static cap 256, seed 101), ``identification.identify`` fits the
telemetry (with measured-style noise from ``controlkit.sim.telemetry.BCA_H100_NOISE`` unless
``--clean``), and ``design_pid`` / ``design_adaptive_pid`` design from the model.  Every X design
then runs on every Y at ``--load`` x Y's nominal rate (evaluation seed 7, never used for design).
Reported per cell: goodput (requests/s meeting TTFT and TPOT) as a ratio to vLLM's static
default (256) on Y, and to the same controller kind designed on Y (the diagonal); TPOT p99 / SLO.
Goals (issue 13): never below static 256, and >= 0.9x the controller designed on Y.

Usage: PYTHONPATH=$PWD .venv/bin/python bench/cross_matrix.py [--load 0.9] [--requests 1200]
       [--kinds pid,pid-adaptive] [--clean]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import identification
from controlkit.app.bench.backend import nominal_rate_req_s
from controlkit.design import design_pid
from controlkit.plant import DesignPlant
from controlkit.schedule import design_adaptive_pid
from controlkit.sim import SLO, Plant, Workload, load_plant, simulate
from controlkit.sim.telemetry import BCA_H100_NOISE, add_measurement_noise, write_requests, write_steps
from controlkit.sim.workloads import sharegpt_lengths
from policies import build_policy
from policies.registry import PolicyContext

TPOT_S, TTFT_S = 0.05, 2.0
DESIGN_SEED, EVAL_SEED = 101, 7


def slower(plant: Plant, factor: float) -> Plant:
    """Every step time (decode table, prefill, context and idle costs) times ``factor``."""
    return dataclasses.replace(
        plant,
        name=f"{plant.name}*{factor:g}",
        decode_step_s=tuple(factor * y for y in plant.decode_step_s),
        prefill_base_s=factor * plant.prefill_base_s,
        prefill_s_per_token=factor * plant.prefill_s_per_token,
        context_s_per_token=factor * plant.context_s_per_token,
        idle_s_per_seq=factor * plant.idle_s_per_seq,
    )


def workload(kind: str, rate_at: Any, n: int, seed: int) -> Workload:
    """``steady`` or ``bursty-prefill`` requests; ``rate_at(i / n)`` is the rate for request ``i``."""
    rng = np.random.default_rng(seed)
    prompt, output = sharegpt_lengths()
    idx = rng.integers(0, len(prompt), size=n)
    p, o = prompt[idx], output[idx]
    rates = np.array([rate_at(i / n) for i in range(n)])
    if kind == "steady":
        gaps = rng.exponential(1.0 / rates)
    else:  # gamma inter-arrivals with CV 3: bursts, then gaps
        shape = 1.0 / 9.0
        gaps = rng.gamma(shape, 1.0 / (rates * shape))
        p, o = np.minimum(4 * p, 1500), np.maximum(o // 4, 1)
    return Workload(f"{kind}", np.cumsum(gaps) - gaps[0], p.astype(np.int64), o.astype(np.int64))


def nominal(plant: Plant, kind: str) -> float:
    wl = workload(kind, lambda _: 1.0, 2000, 0)
    return nominal_rate_req_s(
        plant,
        prompt_tokens=float(wl.prompt_tokens.mean()),
        output_tokens=float(wl.output_tokens.mean()),
        tpot_slo_s=TPOT_S,
        max_num_seqs=256,
    )


def _ctx(plant: Plant) -> PolicyContext:
    return PolicyContext(kv_blocks_total=plant.kv_blocks_total, block_size=plant.block_size, max_num_seqs=256)


def design_on(plant: Plant, kind: str, kinds: list[str], *, clean: bool) -> dict[str, Any]:
    """Identify condition X from its own (noisy) telemetry and design each controller kind."""
    lam = nominal(plant, kind)
    wl = workload(kind, lambda f: lam * (0.2 + 1.0 * f), 1500, DESIGN_SEED)
    with tempfile.TemporaryDirectory() as tmp:
        res = simulate(
            plant,
            wl,
            build_policy("static:max_num_seqs=256", _ctx(plant)),
            slo=SLO(ttft_s=TTFT_S, tpot_s=TPOT_S),
            record_steps=True,
            seed=DESIGN_SEED,
        )
        steps = res.steps if clean else add_measurement_noise(res.steps, BCA_H100_NOISE, seed=DESIGN_SEED)
        write_steps(Path(tmp) / "s.jsonl", steps, plant=plant, workload=wl.name)
        write_requests(Path(tmp) / "r.jsonl", res.requests)
        model = identification.identify(identification.read_telemetry([Path(tmp) / "s.jsonl", Path(tmp) / "r.jsonl"]))
    dp = DesignPlant.from_model(model)
    out: dict[str, Any] = {"slope_interval": (dp.k_min, dp.k_max)}
    for k in kinds:
        fn = design_pid if k == "pid" else design_adaptive_pid
        d = fn(dp, TPOT_S, TTFT_S)
        out[k] = d.to_policy_file(allow_uncertified=True)
        out[f"{k}:certified"] = d.certificate.holds
    return out


def run_on(plant: Plant, kind: str, spec: Any, load: float, n: int) -> tuple[float, float]:
    lam = load * nominal(plant, kind)
    wl = workload(kind, lambda _: lam, n, EVAL_SEED)
    m = simulate(
        plant, wl, build_policy(spec, _ctx(plant)), slo=SLO(ttft_s=TTFT_S, tpot_s=TPOT_S), seed=EVAL_SEED
    ).metrics
    return m.goodput_req_s, m.tpot_p99_s / TPOT_S


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--load", type=float, default=0.9)
    ap.add_argument("--requests", type=int, default=1200)
    ap.add_argument("--kinds", default="pid,pid-adaptive")
    ap.add_argument("--clean", action="store_true", help="identify from noiseless telemetry")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    base = load_plant("vllm-h100:llama-2-7b")
    plants = {"h100": base, "h100x1.5": slower(base, 1.5)}
    conds = [(p, w) for p in plants for w in ("steady", "bursty-prefill")]
    kinds = args.kinds.split(",")
    t0 = time.time()
    designs = {c: design_on(plants[c[0]], c[1], kinds, clean=args.clean) for c in conds}
    print(f"designs: {time.time() - t0:.0f} s; TPOT SLO {TPOT_S} s, TTFT SLO {TTFT_S} s, load {args.load}")
    for c in conds:
        lo, hi = designs[c]["slope_interval"]
        cert = ", ".join(f"{k} certified={designs[c][f'{k}:certified']}" for k in kinds)
        print(f"  X={c[0]}/{c[1]}: identified slope [{lo:.4g}, {hi:.4g}] s/seq; {cert}")
    for k in kinds:
        print(f"\n### {k}: goodput vs static 256 on Y | vs {k} designed on Y | TPOT p99/SLO")
        print("| X (design) \\ Y (run) | " + " | ".join(f"{p}/{w}" for p, w in conds) + " |")
        print("|---|" + "---:|" * len(conds))
        cells: dict[tuple[Any, Any], tuple[float, float]] = {}
        static = {y: run_on(plants[y[0]], y[1], "static:max_num_seqs=256", args.load, args.requests)[0] for y in conds}
        for x in conds:
            for y in conds:
                cells[(x, y)] = run_on(plants[y[0]], y[1], designs[x][k], args.load, args.requests)
        worst_static, worst_diag = np.inf, np.inf
        for x in conds:
            row = []
            for y in conds:
                g, tp = cells[(x, y)]
                diag = cells[(y, y)][0]
                rs, rd = g / max(static[y], 1e-9), g / max(diag, 1e-9)
                worst_static, worst_diag = min(worst_static, rs), min(worst_diag, rd)
                row.append(f"{rs:.2f}x \\| {rd:.2f}x \\| {tp:.2f}")
            print(f"| {x[0]}/{x[1]} | " + " | ".join(row) + " |")
        print("static 256 goodput on Y (req/s): " + ", ".join(f"{y[0]}/{y[1]} {static[y]:.2f}" for y in conds))
        print(
            f"worst vs static: {worst_static:.2f}x (goal >= 1); worst vs designed-on-Y: {worst_diag:.2f}x (goal >= 0.9)"
        )
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
