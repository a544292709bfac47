"""Simulator speed: the one-hour Azure conv trace on vllm-h100:llama-2-7b with a static cap.

Prints wall seconds and simulated steps per second (target: <= 5 s on the dev machine).
Usage: .venv/bin/python bench/bench_sim_speed.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

from controlkit.sim import load_plant, load_workload, simulate
from controlkit.sim.fidelity import FixedCap
from controlkit.sim.metrics import default_slo


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--plant", default="vllm-h100:llama-2-7b")
    ap.add_argument("--workload", default="azure-conv")
    args = ap.parse_args()
    plant = load_plant(args.plant)
    wl = load_workload(args.workload)
    slo = default_slo(plant.decode_s(1))
    best = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = simulate(plant, wl, FixedCap(256), slo=slo)
        best = min(best, time.perf_counter() - t0)
    m = res.metrics
    print(f"plant={plant.name} workload={wl.name} requests={len(wl)} simulated={m.sim_time_s:.0f} s")
    print(
        f"steps={m.num_steps} wall={best:.2f} s (best of {args.repeat}) steps/s={m.num_steps / best:,.0f} "
        f"speedup={m.sim_time_s / best:,.0f}x real time"
    )
    print(
        f"throughput={m.throughput_tok_s:.0f} tok/s attainment={m.slo_attainment:.3f} "
        f"preemptions={m.num_preemptions}"
    )


if __name__ == "__main__":
    main()
