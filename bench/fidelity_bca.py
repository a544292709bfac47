"""Fidelity of the simulator against the measured H100 vLLM runs (BCA data).

Replays every background run (2,000 ShareGPT prompts at t=0, static max_num_seqs=N) for the
four models and prints measured vs simulated output throughput, median TPOT, preemptions,
and the preemption onset (smallest N with preemptions) per model.
With ``--split-half`` each run is replayed on a plant whose engine-side costs (prefill fixed
cost, per-stalled-request cost, attention per context token) were fitted on the drain phases
of the OTHER half of the runs (every other N), and whose engine-pause fractions were measured
on that other half and interpolated in batch: a held-out check of those four quantities.
``--no-pauses`` replays on plants without the engine-pause charge, for comparison.
Usage: .venv/bin/python bench/fidelity_bca.py [--markdown] [--split-half] [--no-pauses]
"""

from __future__ import annotations

import argparse

from controlkit.sim.fidelity import bca_runs, bca_workload, replay_bca
from controlkit.sim.plants import BCA_MODELS, vllm_h100_plant

ROW = "{:12s} N={:>4} tok/s {:>6} {:>6} {:>7}  TPOT {:>6} {:>6} {:>7}  pre {:>5} {:>5}  ex {}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--split-half", action="store_true", help="fit the drain-phase costs on the other half of the runs")
    ap.add_argument("--no-pauses", action="store_true", help="plants without the engine-pause charge (for comparison)")
    args = ap.parse_args()
    runs = bca_runs()
    md = args.markdown
    if md:
        print(
            "| model | N | tok/s meas | tok/s sim | err | TPOT ms meas | TPOT ms sim | err | preempt meas | "
            "preempt sim | extrap. steps |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    within = total = 0
    onsets: list[str] = []
    for model in BCA_MODELS:
        wl = bca_workload(model)
        grid = [int(n) for n in runs[runs["model"] == model]["max_num_seqs"]]
        if args.split_half:
            halves = (grid[0::2], grid[1::2])
            plants = {
                n: vllm_h100_plant(
                    model,
                    drain_runs=halves[1] if n in halves[0] else halves[0],
                    pause_runs=halves[1] if n in halves[0] else halves[0],
                    pauses=not args.no_pauses,
                )
                for n in grid[:2]
            }
            plant_of = {n: plants[grid[0]] if n in halves[0] else plants[grid[1]] for n in grid}
        else:
            plant = vllm_h100_plant(model, pauses=not args.no_pauses)
            plant_of = dict.fromkeys(grid, plant)
        meas_onset = sim_onset = None
        for n in grid:
            r = replay_bca(model, n, plant=plant_of[n], workload=wl)
            ok = abs(r.tok_s_error) <= 0.05 and abs(r.tpot_error) <= 0.05
            within += ok
            total += 1
            if meas_onset is None and r.measured_preemptions > 0:
                meas_onset = n
            if sim_onset is None and r.simulated_preemptions > 0:
                sim_onset = n
            cells = (
                model,
                n,
                f"{r.measured_tok_s:.0f}",
                f"{r.simulated_tok_s:.0f}",
                f"{100 * r.tok_s_error:+.1f}%",
                f"{1000 * r.measured_tpot_s:.2f}",
                f"{1000 * r.simulated_tpot_s:.2f}",
                f"{100 * r.tpot_error:+.1f}%",
                r.measured_preemptions,
                r.simulated_preemptions,
                r.extrapolated_steps,
            )
            if md:
                print("| " + " | ".join(str(c) for c in cells) + " |")
            else:
                print(ROW.format(*cells))
        steps = (
            "same N"
            if meas_onset == sim_onset
            else (
                "within one grid step"
                if meas_onset is not None
                and sim_onset is not None
                and abs(grid.index(meas_onset) - grid.index(sim_onset)) <= 1
                else "MISSED"
            )
        )
        onsets.append(f"{model}: preemption onset measured N={meas_onset}, simulated N={sim_onset} ({steps})")
    print()
    for line in onsets:
        print(line)
    print(f"cells with both throughput and median TPOT within 5%: {within}/{total}")


if __name__ == "__main__":
    main()
