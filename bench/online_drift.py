"""Slope drift mid-run in the engine simulator: pid-adaptive vs the fixed-gain PID vs static 256.

Plant ``vllm-h100:llama-2-7b``; the design plant is a line fitted to its decode table (slope
interval +-5 %); TPOT SLO 3 x the batch-1 step, no TTFT SLO; ShareGPT at 10 req/s (the queue
never empties, so the cap binds).  At engine step 6000 the decode slope is multiplied by each
``--factors`` value (controlkit.sim.drift).  Both controllers are designed here
(``design_pid`` and ``design_adaptive_pid``, robust tuning).  Printed per run: TPOT p99 / SLO of
the requests whose first token comes before the change, in ``[0, settle)`` after it, and after
``settle`` (default 10 s, the stated settling time), the mean step / SLO after ``settle``, and
the finished requests per second after ``settle`` as a ratio to the PID's.

Usage: PYTHONPATH=$PWD .venv/bin/python bench/online_drift.py [--factors 2,0.5,3] [--settle-s 10]
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import numpy as np

from controlkit.design import design_pid
from controlkit.plant import DesignPlant
from controlkit.schedule import design_adaptive_pid
from controlkit.sim import SLO, load_plant, load_workload, simulate
from controlkit.sim.drift import DriftingPlant, slope_scaled
from identification.errors import ExtrapolationWarning
from policies import build_policy
from policies.registry import PolicyContext

SWITCH_STEP = 6000


def _design_plant(p: Any, tpot_s: float) -> DesignPlant:
    k, a = np.polyfit(np.asarray(p.decode_batch), np.asarray(p.decode_step_s), 1)
    return DesignPlant(
        sample_period_s=0.9 * tpot_s,
        intercept_s=float(a),
        k_min=0.95 * k,
        k_nom=float(k),
        k_max=1.05 * k,
        b_min=1,
        b_max=256,
        kv_capacity_blocks=p.kv_blocks_total,
        block_size=p.block_size,
        tokens_per_seq=500,
        prompt_tokens_mean=200,
        output_tokens_mean=250,
        prefill_s_per_token=p.prefill_s_per_token,
    )


def _windows(res: Any, tpot_s: float, settle_s: float) -> dict[str, float]:
    t_sw = float(res.steps.t_s.iloc[SWITCH_STEP])
    req, st = res.requests, res.steps
    tp = req.tpot_s
    ok = np.isfinite(tp) & (req.output_tokens > 1)
    out: dict[str, float] = {}
    for name, lo, hi in (("before", 0.0, t_sw), ("settling", t_sw, t_sw + settle_s), ("after", t_sw + settle_s, 1e18)):
        m = ok & (req.first_token_s >= lo) & (req.first_token_s < hi)
        out[name] = float(np.quantile(tp[m], 0.99) / tpot_s) if m.any() else float("nan")
    late = st.t_s >= t_sw + settle_s
    out["step"] = float(st.step_s[late].mean() / tpot_s)
    done = (req.finish_s >= t_sw + settle_s) & np.isfinite(req.finish_s)
    out["req_s"] = float(done.sum() / max(float(req.finish_s[done].max()) - (t_sw + settle_s), 1e-9))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", default="2,0.5,3")
    ap.add_argument("--settle-s", type=float, default=10.0)
    ap.add_argument("--requests", type=int, default=3000)
    args = ap.parse_args()
    p = load_plant("vllm-h100:llama-2-7b")
    tpot = 3.0 * p.step_s(1, 0)
    dp = _design_plant(p, tpot)
    specs: dict[str, Any] = {"static-256": "static:max_num_seqs=256"}
    for name, design in (("pid", design_pid(dp, tpot, None)), ("pid-adaptive", design_adaptive_pid(dp, tpot, None))):
        specs[name] = design.to_policy_file()
        assert design.controller is not None
        print(
            f"{name}: gains kp={design.controller.kp:.4g} ki={design.controller.ki:.4g}; "
            f"certified={design.certificate.holds}"
        )
    wl = load_workload("sharegpt:poisson:10", num_requests=args.requests, seed=1)
    ctx = PolicyContext(kv_blocks_total=p.kv_blocks_total, max_num_seqs=256)
    print(f"TPOT SLO {tpot * 1e3:.2f} ms; slope x factor at step {SWITCH_STEP}; settle {args.settle_s:g} s")
    print(
        "| factor | policy | p99 TPOT/SLO before | settling | after | mean step/SLO after "
        "| req/s after vs pid | re-tunes |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for factor in (float(f) for f in args.factors.split(",")):
        rows = {}
        for name, spec in specs.items():
            drift = DriftingPlant(p, slope_scaled(p, factor), switch_after_steps=SWITCH_STEP)
            pol = build_policy(spec, ctx)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExtrapolationWarning)
                res = simulate(drift.as_plant(), wl, pol, slo=SLO(ttft_s=1e6, tpot_s=tpot), record_steps=True)
            rows[name] = (_windows(res, tpot, args.settle_s), getattr(pol, "counters", {}).get("retunes", "-"))
        for name, (w, retunes) in rows.items():
            print(
                f"| {factor:g} | {name} | {w['before']:.3f} | {w['settling']:.3f} | {w['after']:.3f} | {w['step']:.3f} "
                f"| {w['req_s'] / rows['pid'][0]['req_s']:.3f} | {retunes} |"
            )


if __name__ == "__main__":
    main()
