"""How the fidelity replay moves with the engine-pause detector's settings.

The vllm-h100 plants charge the share of wall time the engine lost to its 0.15-0.2 s stalls
(:func:`controlkit.sim.context_fit.pause_fraction`: an interval is a pause interval when its
wall time per decode iteration exceeds ``threshold`` times the centred running median of
``window`` intervals).  This replays all 54 BCA runs without the charge and with it for a grid
of detector settings, and prints, per setting, the cells within 5 % on both throughput and
median TPOT, the mean and worst absolute errors, and the mean signed throughput error of the
OPT and Llama runs.
Usage: .venv/bin/python bench/fidelity_pauses.py
"""

from __future__ import annotations

import numpy as np

from controlkit.sim.context_fit import PAUSE_THRESHOLD, PAUSE_WINDOW
from controlkit.sim.fidelity import bca_runs, bca_workload, replay_bca
from controlkit.sim.plants import BCA_MODELS, vllm_h100_plant


def main() -> None:
    runs = bca_runs()
    settings: list[tuple[str, float | None, int | None]] = [("no pauses", None, None)]
    for t in (1.08, PAUSE_THRESHOLD, 1.2):
        for w in (7, PAUSE_WINDOW, 21):
            settings.append((f"threshold {t:.2f}, window {w}", t, w))
    workloads = {m: bca_workload(m) for m in BCA_MODELS}
    print(
        f"{'detector':28s} {'within 5%':>9s} {'mean|tok/s|':>11s} {'mean|TPOT|':>10s} {'worst':>6s} "
        f"{'OPT tok/s':>9s} {'Llama tok/s':>11s}"
    )
    for label, thr, win in settings:
        errs: list[tuple[str, float, float]] = []
        for model in BCA_MODELS:
            plant = vllm_h100_plant(model, pauses=thr is not None, pause_threshold=thr, pause_window=win)
            for n in runs[runs["model"] == model]["max_num_seqs"]:
                r = replay_bca(model, int(n), plant=plant, workload=workloads[model])
                errs.append((model, r.tok_s_error, r.tpot_error))
        tok = np.array([e[1] for e in errs])
        tpot = np.array([e[2] for e in errs])
        opt = np.array([e[0].startswith("opt") for e in errs])
        within = int(np.sum((np.abs(tok) <= 0.05) & (np.abs(tpot) <= 0.05)))
        worst = float(max(np.abs(tok).max(), np.abs(tpot).max()))
        print(
            f"{label:28s} {within:>6d}/{len(errs)} {100 * np.abs(tok).mean():>10.2f}% "
            f"{100 * np.abs(tpot).mean():>9.2f}% "
            f"{100 * worst:>5.1f}% {100 * tok[opt].mean():>+8.2f}% {100 * tok[~opt].mean():>+10.2f}%"
        )


if __name__ == "__main__":
    main()
