"""Cost per decision of the controlkit runtime policies (µs), MPC against PID and optimal.

Run: .venv/bin/python bench/bench_mpc_cost.py   (prints figures; no thresholds)
"""

from __future__ import annotations

import timeit

from controlkit.contract import Observation
from controlkit.design import design_mpc, design_optimal, design_pid
from controlkit.plant import DesignPlant
from policies.registry import build_policy

P = DesignPlant.example(
    b_max=256, arrival_rate_per_s=5, prompt_tokens_mean=400, output_tokens_mean=200, prefill_s_per_token=1e-5
)


def main() -> None:
    obs = Observation(
        t_s=1.0,
        num_running=120,
        num_waiting=40,
        kv_blocks_used=3000,
        kv_blocks_total=8000,
        last_step_s=0.04,
        ttft_s=(0.3,),
        oldest_wait_s=0.5,
    )
    rows = []
    for name, d in (
        ("pid", design_pid(P, 0.05, 2.0, method="simc")),
        ("optimal", design_optimal(P, 0.05, 2.0)),
        ("mpc", design_mpc(P, 0.05, 2.0)),
    ):
        pf = d.to_policy_file()
        for k in (1, 4, 16) if name == "mpc" else (1,):
            if name == "mpc":
                pf = type(pf).from_dict(pf.to_dict() | {"params": dict(pf.params) | {"every_k": k}})
            pol = build_policy(pf)
            n = 5000
            us = timeit.timeit(lambda pol=pol: pol.decide(obs), number=n) / n * 1e6
            rows.append((f"{name}" + (f" every_k={k}" if name == "mpc" else ""), us))
    step_us = 0.04 * 1e6
    print(f"{'policy':<20}{'us/decision':>12}{'% of a 40 ms step':>20}")
    for name, us in rows:
        print(f"{name:<20}{us:>12.1f}{100 * us / step_us:>19.3f}%")


if __name__ == "__main__":
    main()
