"""Attention cost per context token of the vllm-h100 plants, fitted on measured drain phases.

The decode table of a ``vllm-h100`` plant is the median inter-token latency of each BCA run at
its steady-state batch, so it already holds attention over that run's steady-state context.
A decode step whose running requests hold more (or less) context reads more (or less) KV
cache.  This module fits the missing slope ``kappa`` (seconds per context token) of

    wall_step(b, C) = ITL_table(b) + kappa * (C - C_ref(b))

where ``C`` is the context (tokens) held by the ``b`` running requests and ``C_ref(b)`` the
steady-state context at the table point, from the per-second engine metrics
(``bca_memory_gap/background_engine_metrics.csv.gz``):

* only **drain intervals** are used: one-second intervals with no request waiting, no prompt
  tokens scheduled and no preemption, so every step is a decode step and the wall time per
  step is ``dt * running / generated_tokens`` (``running`` averaged over the two samples);
* ``C = gpu_cache_usage_perc * num_gpu_blocks * 16 - 8 * running`` (blocks are filled to half a
  block on average);
* ``C_ref`` at each table point: ``kv_usage_median * num_gpu_blocks * 16 - 8 * mean_running`` of
  ``derived_steady_state_step_times.csv`` (the steady state the ITL was measured in);
* ``kappa``: least squares through the origin of ``wall - ITL_table(b)`` on ``C - C_ref(b)``,
  every run weighted alike.  :func:`fit_context_cost` also reports a split-half check: kappa
  fitted on every other run (by ``max_num_seqs``) predicts the drain step times of the other
  half (median absolute percentage error, against the table alone).

These drain phases belong to the same runs that the fidelity replay compares against, so the
replay is not an independent validation of kappa; the split-half check is.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from identification.errors import TelemetryError

__all__ = ["ContextFit", "fit_context_cost", "steady_context_tokens"]


@dataclass(frozen=True, slots=True)
class ContextFit:
    """The fitted attention cost of one model.

    Attributes
    ----------
    context_s_per_token
        ``kappa``, seconds per context token per decode step.
    num_intervals
        Drain intervals used.
    heldout_mape
        Median absolute percentage error of the drain step times of one half of the runs
        predicted with the kappa of the other half (both directions pooled).
    heldout_mape_table_only
        The same error without the context term (the table alone).
    """

    context_s_per_token: float
    num_intervals: int
    heldout_mape: float
    heldout_mape_table_only: float


@functools.lru_cache(maxsize=4)
def _engine_metrics(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TelemetryError("file not found; set CONTROLKIT_SHARED_DATA or check ../shared/data", path=str(path))
    return pd.read_csv(path)


def steady_context_tokens(ss_rows: pd.DataFrame) -> np.ndarray:
    """Steady-state context tokens held by the running batch, per derived steady-state row."""
    running = ss_rows["mean_running"].fillna(ss_rows["max_num_seqs"]).to_numpy(float)
    kv = ss_rows["kv_usage_median"].to_numpy(float) * ss_rows["num_gpu_blocks"].to_numpy(float) * 16.0
    return np.asarray(np.maximum(kv - 8.0 * running, running), dtype=float)


def _drain_intervals(bca: Path, model: str, blocks_by_n: dict[int, int]) -> pd.DataFrame:
    d = _engine_metrics(bca / "background_engine_metrics.csv.gz")
    frames = []
    dm = d[d["model"] == model]
    for n in sorted(set(dm["max_num_seqs"].astype(int).tolist())):
        r = dm[dm["max_num_seqs"] == n].sort_values("time_s")
        a, b = r.iloc[:-1].reset_index(drop=True), r.iloc[1:].reset_index(drop=True)
        running = (a["num_requests_running"] + b["num_requests_running"]) / 2.0
        usage = (a["gpu_cache_usage_perc"] + b["gpu_cache_usage_perc"]) / 2.0
        frames.append(
            pd.DataFrame(
                {
                    "n": n,
                    "dt": b["time_s"] - a["time_s"],
                    "gen": b["generation_tokens_total"] - a["generation_tokens_total"],
                    "prompt": b["prompt_tokens_total"] - a["prompt_tokens_total"],
                    "pre": b["num_preemptions_total"] - a["num_preemptions_total"],
                    "waiting": a["num_requests_waiting"] + b["num_requests_waiting"],
                    "running": running,
                    "context": usage * blocks_by_n[n] * 16.0 - 8.0 * running,
                }
            )
        )
    x = pd.concat(frames, ignore_index=True)
    keep = (
        (x["waiting"] == 0)
        & (x["prompt"] == 0)
        & (x["pre"] == 0)
        & (x["gen"] > 0)
        & (x["running"] >= 1)
        & (x["dt"] > 0.5)
        & (x["dt"] < 1.5)  # longer gaps: the metrics endpoint stalled
    )
    x = x[keep].copy()
    x["step_s"] = x["dt"] * x["running"] / x["gen"]
    return x


def _kappa(dx: np.ndarray, dy: np.ndarray, run: np.ndarray) -> float:
    _, inv, counts = np.unique(run, return_inverse=True, return_counts=True)
    w = 1.0 / counts[inv]
    den = float(np.sum(w * dx * dx))
    return max(0.0, float(np.sum(w * dx * dy)) / den) if den > 0 else 0.0


def fit_context_cost(
    bca: Path,
    model: str,
    decode_batch: tuple[float, ...],
    decode_step_s: tuple[float, ...],
    context_ref_tokens: tuple[float, ...],
) -> ContextFit:
    """Fit ``kappa`` for one model on its drain intervals (see the module docstring).

    Parameters
    ----------
    bca
        The ``bca_memory_gap`` folder.
    model
        Model name as in the BCA files.
    decode_batch, decode_step_s, context_ref_tokens
        The plant's decode table and the steady-state context at its points.
    """
    idx = pd.read_csv(bca / "background_runs_index.csv")
    rows = idx[idx["model"] == model]
    blocks_by_n = dict(
        zip(rows["max_num_seqs"].astype(int).tolist(), rows["num_gpu_blocks"].astype(int).tolist(), strict=True)
    )
    x = _drain_intervals(bca, model, blocks_by_n)
    xs = np.asarray(decode_batch, float)
    table = np.interp(x["running"].to_numpy(float), xs, np.asarray(decode_step_s, float))
    ref = np.interp(x["running"].to_numpy(float), xs, np.asarray(context_ref_tokens, float))
    dx = x["context"].to_numpy(float) - ref
    y = x["step_s"].to_numpy(float)
    dy = y - table
    run = x["n"].to_numpy(int)
    if len(x) < 10:
        return ContextFit(0.0, len(x), float("nan"), float("nan"))
    kappa = _kappa(dx, dy, run)
    grid = np.unique(run)
    halves = (np.isin(run, grid[0::2]), np.isin(run, grid[1::2]))
    errs: list[np.ndarray] = []
    for fit_half, test_half in (halves, halves[::-1]):
        k = _kappa(dx[fit_half], dy[fit_half], run[fit_half])
        errs.append(np.abs((table[test_half] + k * dx[test_half]) / y[test_half] - 1.0))
    err = np.concatenate(errs)
    base = np.abs(table / y - 1.0)
    return ContextFit(kappa, len(x), float(np.median(err)), float(np.median(base)))
