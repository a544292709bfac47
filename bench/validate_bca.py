"""Validate identification on the real vLLM H100 logs (BCA / Memory-Gap repository).

For each model, fit on every other ``max_num_seqs`` run below the observed preemption point
(plus the largest such run, so the held-out runs are interpolation), predict the steady-state
step time at the held-out runs, and compare with the measured steady-state step time
(``derived_steady_state_step_times.csv``: ``est_wall_ms_per_step``) and the benchmark's median
TPOT (run index).  The memory model's preemption onset is compared with the observed one (the
smallest N whose run has ``num_preemptions_total > 0``).

Run: ``.venv/bin/python bench/validate_bca.py [DATA_DIR]``
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from identification import read_telemetry
from identification.derive import derive_observations
from identification.latency import LatencyModel
from identification.memory import MemoryModel

MODELS = ("opt-1.3b", "opt-2.7b", "llama-2-7b", "llama-2-13b")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "bca_memory_gap"


@dataclass(frozen=True)
class ModelResult:
    model: str
    train_n: tuple[int, ...]
    test_n: tuple[int, ...]
    form: str
    slope_ms: float
    slope_interval_ms: tuple[float, float]
    mape_wall: float
    mape_tpot: float
    max_ape: float
    onset_pred: int | None
    onset_obs: int | None
    onset_ok: bool
    grid: tuple[int, ...]


def validate_model(data: Path, model: str) -> ModelResult:
    steady = pd.read_csv(data / "derived_steady_state_step_times.csv")
    steady = steady[steady["model"] == model].sort_values("max_num_seqs")
    grid = tuple(int(n) for n in steady["max_num_seqs"])
    preempting = steady.loc[steady["preemptions_total"] > 0, "max_num_seqs"]
    onset_obs = int(preempting.min()) if len(preempting) else None
    below = [n for n in grid if onset_obs is None or n < onset_obs]
    train = sorted(set(below[::2]) | {below[-1]})
    test = [n for n in below if n not in train]
    tel = read_telemetry([data / "background_engine_metrics.csv.gz", data / "background_runs_index.csv"],
                         where={"model": model})
    samples = tel.samples[tel.samples["max_num_seqs"].astype(float).isin([float(n) for n in train])]
    obs = derive_observations(type(tel)(samples=samples.reset_index(drop=True), sources=tel.sources))
    lat = LatencyModel().fit(obs)
    mem = MemoryModel().fit(obs)
    rows = steady[steady["max_num_seqs"].isin(test)]
    pred_ms = np.asarray(lat.predict_step_s(rows["max_num_seqs"].to_numpy(float))) * 1e3
    ape_wall = np.abs(pred_ms / rows["est_wall_ms_per_step"].to_numpy() - 1)
    ape_tpot = np.abs(pred_ms / rows["median_tpot_ms"].to_numpy() - 1)
    onset = mem.preemption_onset_
    onset_ok = _within_one_step(onset, onset_obs, grid)
    return ModelResult(model, tuple(train), tuple(test), lat.form_, lat.slope_ * 1e3,
                       (lat.slope_interval_[0] * 1e3, lat.slope_interval_[1] * 1e3),
                       float(ape_wall.mean()), float(ape_tpot.mean()),
                       float(max(ape_wall.max(), ape_tpot.max())), onset, onset_obs, onset_ok, grid)


def _within_one_step(pred: int | None, obs: int | None, grid: tuple[int, ...]) -> bool:
    """Predicted onset lies between the grid neighbours of the observed onset.

    With no preemption observed anywhere on the grid, the onset lies beyond the largest N, and
    the prediction must not be below the grid point before the largest.
    """
    if pred is None:
        return obs is None
    if obs is None:
        return pred >= grid[-2]
    i = grid.index(obs)
    lo = grid[i - 1] if i > 0 else 0
    hi = grid[i + 1] if i + 1 < len(grid) else 2 * grid[i]
    return lo <= pred <= hi


def main(argv: list[str]) -> int:
    data = Path(argv[0]) if argv else DEFAULT_DATA
    t0 = time.perf_counter()
    results = [validate_model(data, m) for m in MODELS]
    from rich.console import Console
    from rich.table import Table

    table = Table(title="BCA H100 validation: held-out steady-state step time and preemption onset")
    for col in ("model", "form", "slope ms/seq [interval]", "held-out N", "MAPE wall", "MAPE TPOT",
                "max APE", "onset pred", "onset obs", "onset ok"):
        table.add_column(col)
    for r in results:
        lo, hi = r.slope_interval_ms
        table.add_row(r.model, r.form, f"{r.slope_ms:.4f} [{lo:.4f}, {hi:.4f}]", ",".join(map(str, r.test_n)),
                      f"{r.mape_wall:.2%}", f"{r.mape_tpot:.2%}", f"{r.max_ape:.2%}",
                      str(r.onset_pred), str(r.onset_obs) if r.onset_obs else f"none <= {r.grid[-1]}",
                      "yes" if r.onset_ok else "NO")
    Console(width=200).print(table)
    print(f"elapsed {time.perf_counter() - t0:.2f} s")
    ok = all(r.mape_wall <= 0.05 and r.mape_tpot <= 0.05 and r.onset_ok for r in results)
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
