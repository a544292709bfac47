"""How much the BCA replay depended on WHICH 2,000 ShareGPT requests the old reconstruction drew.

Before the measured request sequence (:func:`controlkit.sim.fidelity.bca_workload`, read off the
``N = 1`` runs), the replay drew 2,000 requests at random from the Llama-2 ShareGPT length file
(:func:`controlkit.sim.fidelity.bca_sharegpt_workload`, seed 0), shaped to the measured token
totals and steady KV per request.  This script replays every run with the seeds ``0 .. K-1`` of
that reconstruction (nothing else changes, nothing is fitted) and prints, per cell, the mean and
range of the throughput and median-TPOT errors, and how many cells are within 5 % on both for
each seed: the sampling uncertainty that the measured sequence removes.

Usage: .venv/bin/python bench/fidelity_seeds.py [--seeds K] [model ...]
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from controlkit.sim.fidelity import bca_runs, bca_sharegpt_workload, replay_bca
from controlkit.sim.plants import BCA_MODELS, vllm_h100_plant


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=8, help="number of workload draws (seeds 0..K-1)")
    ap.add_argument("models", nargs="*", default=list(BCA_MODELS))
    args = ap.parse_args()
    runs = bca_runs()
    seeds = range(args.seeds)
    within_by_seed = np.zeros(args.seeds, dtype=int)
    total = 0
    print(f"{'model':12s} {'N':>4}  tok/s err mean [min, max]      TPOT err mean [min, max]     seeds within 5%")
    for model in args.models:
        plant = vllm_h100_plant(model)
        workloads = [bca_sharegpt_workload(model, seed=s) for s in seeds]
        for n in [int(v) for v in runs[runs["model"] == model]["max_num_seqs"]]:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                rows = [replay_bca(model, n, plant=plant, workload=wl) for wl in workloads]
            tok = 100.0 * np.array([r.tok_s_error for r in rows])
            tpot = 100.0 * np.array([r.tpot_error for r in rows])
            ok = (np.abs(tok) <= 5.0) & (np.abs(tpot) <= 5.0)
            within_by_seed += ok
            total += 1
            print(
                f"{model:12s} {n:>4}  {tok.mean():+5.1f}% [{tok.min():+5.1f}, {tok.max():+5.1f}]"
                f"      {tpot.mean():+5.1f}% [{tpot.min():+5.1f}, {tpot.max():+5.1f}]      {int(ok.sum())}/{len(rows)}"
            )
    print()
    per_seed = ", ".join(f"{s}: {w}/{total}" for s, w in zip(seeds, within_by_seed, strict=True))
    print("cells within 5% on both, per seed: " + per_seed)


if __name__ == "__main__":
    main()
