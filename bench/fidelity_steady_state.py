"""Where the BCA replay's large-N TPOT misses come from: the steady state, measured both ways.

For each model and N, simulate the BCA run (as :mod:`bench.fidelity_bca` does) and compare,
over the same steady window as ``derived_steady_state_step_times.csv`` (1-s samples with
``running >= 0.95 N``):

* KV held per running request: the median of the 1-s KV gauge (blocks x 16 / N), simulated
  vs measured (``kv_usage_median``), and the number of steady 1-s samples;
* wall seconds per decode iteration: simulated (steady steps' total time / decode steps) vs
  measured (``est_wall_ms_per_step``), and the simulated pure decode step vs the ITL table.

Usage: .venv/bin/python bench/fidelity_steady_state.py [model ...]
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pandas as pd

from controlkit.sim.engine import simulate
from controlkit.sim.fidelity import FixedCap, bca_workload
from controlkit.sim.metrics import SLO
from controlkit.sim.plants import BCA_MODELS, default_data_dir, vllm_h100_plant
from identification.errors import ExtrapolationWarning


def main() -> None:
    models = sys.argv[1:] or list(BCA_MODELS)
    ss = pd.read_csv(default_data_dir() / "bca_memory_gap" / "derived_steady_state_step_times.csv")
    print(f"{'model':12s} {'N':>4}  KV/seq sim meas  samples sim meas  wall/iter ms sim meas  err  decode ms sim table")
    for model in models:
        plant = vllm_h100_plant(model)
        wl = bca_workload(model)
        for _, r in ss[(ss["model"] == model) & (ss["samples"] >= 20)].iterrows():
            n = int(r["max_num_seqs"])
            if n < 16:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ExtrapolationWarning)
                res = simulate(
                    plant, wl, FixedCap(n), slo=SLO(1e9, 1e9), max_num_seqs=n, chunked_prefill=False, record_steps=True
                )
            f = res.steps
            t = f["t_s"].to_numpy()
            at = np.minimum(np.searchsorted(t, np.arange(0.5, t[-1], 1.0)), len(t) - 1)
            g = f.iloc[at]
            g = g[g["num_running"] >= 0.95 * n]
            kv_sim = 16.0 * float(g["kv_blocks_used"].median()) / n
            kv_meas = float(r["kv_usage_median"] * r["num_gpu_blocks"] * 16.0 / r["mean_running"])
            st = f[f["num_running"] >= 0.95 * n]
            dec = st[st["num_decode_tokens"] > 0]
            wall_sim = 1000.0 * float(st["step_s"].sum()) / max(1, len(dec))
            wall_meas = float(r["est_wall_ms_per_step"])
            print(
                f"{model:12s} {n:>4}  {kv_sim:>11.0f} {kv_meas:>4.0f}  {len(g):>11d} {int(r['samples']):>4d}  "
                f"{wall_sim:>16.1f} {wall_meas:>5.1f} {100 * (wall_sim / wall_meas - 1):+5.1f}%  "
                f"{1000 * float(dec['step_s'].mean()):>13.1f} {1000 * plant.decode_s(n):>5.1f}"
            )


if __name__ == "__main__":
    main()
