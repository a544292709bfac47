"""Engine-side step costs of the vllm-h100 plants, fitted on measured drain phases.

A ``vllm-h100`` plant charges, in vLLM 0.5.2's no-chunked-prefill schedule,

* a decode step with ``b`` running requests holding ``C`` context tokens:
  ``D(b) + kappa * (C - C_ref(b))``;
* a prefill-only step of ``p`` prompt tokens while ``m`` requests are stalled:
  ``a + c * p + k * m``.

``c`` (seconds per prompt token) comes from the offline runs (:mod:`controlkit.sim.plants`).
This module derives the decode table ``D`` and fits ``(a, k, kappa)`` on the per-second engine
metrics (``bca_memory_gap/background_engine_metrics.csv.gz``), engine-side only:

* **Table.**  In the steady state of the run with ``max_num_seqs = N`` (``mean_running = x``),
  the engine's wall time per decode iteration ``W(x)`` (``est_wall_ms_per_step`` of
  ``derived_steady_state_step_times.csv``, from the engine counters) is one decode step plus
  the prefill steps that refill finished slots.  With the mean output length ``L``, a fraction
  ``f = 1 - exp(-x/L)`` of the decode steps is followed by a prefill step, so
  ``D(x) = W(x) - f * (a + k * x) - c * (x / L) * prompt_mean``.  Runs with preemption keep the
  client-side median ITL instead: their ``W`` also holds recompute prefills and preempted
  stalls, which this decomposition does not cover.
* **Fit.**  On the **drain intervals**: one-second intervals with nothing waiting, no prompt
  tokens and no preemption, so every step is a decode step of wall time
  ``dt * running / generated_tokens``, with
  ``C = gpu_cache_usage_perc * num_gpu_blocks * 16 - 8 * running``.  ``k`` is measured there
  directly, as the scheduler's CPU time per running request per step (``scheduler_total_time``
  counter, a slope through the origin).  The predicted step ``D(b) + kappa * (C - C_ref(b))`` is
  then linear in ``(a, kappa)`` (``D`` interpolated between the table points), fitted by
  non-negative least squares with relative residuals, every run weighted alike.
  ``C_ref = kv_usage_median * num_gpu_blocks * 16 - 8 * mean_running`` of the steady state.

The drain phase is the part of each run that holds no prefill, so it pins the split of ``W``
into decode and prefill, which the steady state alone cannot.  :func:`fit_step_costs` reports a
split-half check: the costs fitted on the drains of every other run (by ``max_num_seqs``)
predict the drain step times of the other half; for comparison, the same check of the previous
plant (client-side median ITL table, only ``kappa`` fitted).
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from identification.errors import TelemetryError

__all__ = [
    "SteadyTable",
    "StepCostFit",
    "fit_step_costs",
    "pause_fraction",
    "steady_context_tokens",
    "steady_table",
]


@dataclass(frozen=True, slots=True)
class SteadyTable:
    """Steady-state facts of one model's runs with >= 20 steady samples (and ``N = 1``).

    Attributes
    ----------
    batch
        Steady-state running batch ``x`` per run (``mean_running``; 1 for ``N = 1``), increasing.
    wall_s
        Engine wall seconds per decode iteration ``W(x)`` (``est_wall_ms_per_step``).
    itl_s
        Client-side median inter-token latency of the run (``median_itl_ms``).
    context_ref_tokens
        Steady-state context tokens ``C_ref(x)``.
    preempted
        Whether the run preempted.
    prefill_frac
        ``f = 1 - exp(-x / L)``: decode steps followed by a prefill step.
    prompt_s
        ``c * (x / L) * prompt_mean``: prompt-token cost per decode iteration (seconds).
    max_num_seqs
        The run's ``max_num_seqs`` ``N``.
    """

    batch: np.ndarray
    wall_s: np.ndarray
    itl_s: np.ndarray
    context_ref_tokens: np.ndarray
    preempted: np.ndarray
    prefill_frac: np.ndarray
    prompt_s: np.ndarray
    max_num_seqs: np.ndarray

    def decode_s(self, prefill_base_s: float, idle_s_per_seq: float) -> np.ndarray:
        """Return the decode table ``D(x)`` for the given prefill-step costs (seconds)."""
        engine = self.wall_s - self.prefill_frac * (prefill_base_s + idle_s_per_seq * self.batch) - self.prompt_s
        return np.where(self.preempted, self.itl_s, np.maximum(engine, 0.5 * self.itl_s))


@dataclass(frozen=True, slots=True)
class StepCostFit:
    """The fitted step costs of one model.

    Attributes
    ----------
    table
        The steady-state facts the decode table is built from.
    decode_step_s
        The decode table ``D`` at ``table.batch`` (seconds).
    prefill_base_s, idle_s_per_seq, context_s_per_token
        ``a``, ``k`` and ``kappa``.
    num_intervals
        Drain intervals used.
    heldout_mape
        Median absolute percentage error of the drain step times of one half of the runs,
        predicted with the costs fitted on the other half (both directions pooled).
    heldout_mape_itl_table
        The same check for the previous plant: median-ITL table, only ``kappa`` fitted.
    """

    table: SteadyTable
    decode_step_s: np.ndarray
    prefill_base_s: float
    idle_s_per_seq: float
    context_s_per_token: float
    num_intervals: int
    heldout_mape: float
    heldout_mape_itl_table: float


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


def steady_table(model: str, idx: pd.DataFrame, ss: pd.DataFrame, prefill_s_per_token: float) -> SteadyTable:
    """Collect the steady-state facts of ``model`` (see :class:`SteadyTable`)."""
    runs = idx[idx["model"] == model].merge(
        ss[["model", "max_num_seqs", "samples", "mean_running", "kv_usage_median", "est_wall_ms_per_step",
            "preemptions_total"]],
        on=["model", "max_num_seqs"],
        how="left",
    )  # fmt: skip
    out_mean = float(runs["total_output_tokens"].iloc[0]) / float(runs["completed"].iloc[0])
    prompt_mean = float(runs["total_input_tokens"].iloc[0]) / float(runs["completed"].iloc[0])
    runs = runs[(runs["samples"] >= 20) | (runs["max_num_seqs"] == 1)].sort_values("max_num_seqs")
    x = runs["mean_running"].fillna(runs["max_num_seqs"]).to_numpy(float).copy()
    x[0] = 1.0
    keep = np.concatenate([[True], np.diff(x) > 0.5])
    ref = steady_context_tokens(runs.assign(mean_running=x))
    xk = x[keep]
    return SteadyTable(
        batch=xk,
        wall_s=runs["est_wall_ms_per_step"].to_numpy(float)[keep] / 1000.0,
        itl_s=runs["median_itl_ms"].to_numpy(float)[keep] / 1000.0,
        context_ref_tokens=ref[keep],
        preempted=(runs["preemptions_total"].fillna(0).to_numpy(float) > 0)[keep],
        prefill_frac=1.0 - np.exp(-xk / out_mean),
        prompt_s=prefill_s_per_token * (xk / out_mean) * prompt_mean,
        max_num_seqs=runs["max_num_seqs"].to_numpy(int)[keep],
    )


#: An interval is a pause interval when its wall time per decode iteration exceeds the local
#: median of its neighbours by this factor (two of ~16 steps lost at the largest batches).
PAUSE_THRESHOLD = 1.12
#: Width (intervals) of the centred running median that gives each interval's reference.
PAUSE_WINDOW = 11


def pause_fraction(
    bca: Path,
    model: str,
    max_num_seqs: int,
    *,
    threshold: float = PAUSE_THRESHOLD,
    window: int = PAUSE_WINDOW,
) -> float:
    """Fraction of the steady-state wall time that the engine lost to pauses, in one run.

    The engine of the BCA runs stalls now and then for 0.15-0.2 s (every few hundred seconds
    at ``N = 1``, every 4-8 s at ``N >= 256``; the duration is the same at every batch, the
    signature of Python's full garbage collection in vLLM 0.5's engine loop).  The median wall
    time per decode iteration, which the decode table is built from, excludes these pauses;
    the run's throughput and TPOT include them.

    Over the 1-s intervals with ``running >= 0.95 N`` after the engine had seen every request
    (the first peak of waiting + running + finished: the API server's ingestion of the 2,000
    requests, which also idles the engine for about a second, is over), each interval's wall
    time per decode iteration ``w = dt * running / generated_tokens`` is compared with the
    centred running median ``r`` of ``window`` intervals; an interval with ``w > threshold * r``
    lost ``dt * (1 - r / w)`` seconds.  Returns the lost seconds over the window's wall seconds
    (0 when the window has fewer than ``window`` intervals).  ``bench/fidelity_pauses.py`` shows
    how the replay moves with ``threshold`` and ``window``.
    """
    d = _engine_metrics(bca / "background_engine_metrics.csv.gz")
    r = d[(d["model"] == model) & (d["max_num_seqs"] == max_num_seqs)].sort_values("time_s")
    if len(r) < 3:
        return 0.0
    t = r["time_s"].to_numpy(float)
    arrived = (r["num_requests_waiting"] + r["num_requests_running"] + r["request_success_total"]).to_numpy(float)
    running = r["num_requests_running"].to_numpy(float)[1:]
    dt = np.diff(t)
    gen = np.diff(r["generation_tokens_total"].to_numpy(float))
    after_ingest = t[1:] > t[int(np.argmax(arrived))]
    ok = (running >= 0.95 * max_num_seqs) & (gen > 0) & after_ingest
    if ok.sum() < window:
        return 0.0
    w = dt[ok] * running[ok] / gen[ok]
    ref = pd.Series(w).rolling(window, center=True, min_periods=window // 2).median().to_numpy()
    lost = np.where(w > threshold * ref, dt[ok] * (1.0 - ref / w), 0.0)
    return float(np.sum(lost) / np.sum(dt[ok]))


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
                    "sched": b["scheduler_total_time"] - a["scheduler_total_time"],
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
    x["sched_s"] = x["sched"] * x["running"] / x["gen"]
    return x


def _weights(run: np.ndarray) -> np.ndarray:
    _, inv, counts = np.unique(run, return_inverse=True, return_counts=True)
    return np.asarray(np.sqrt(1.0 / counts[inv]), dtype=float)


def _sched_per_seq(sched_s: np.ndarray, running: np.ndarray, run: np.ndarray) -> float:
    """Scheduler seconds per running request per step: slope through the origin, runs alike."""
    w = _weights(run) ** 2
    return float(np.sum(w * sched_s * running) / np.sum(w * running * running))


def _solve(design: np.ndarray, target: np.ndarray, y: np.ndarray, run: np.ndarray) -> np.ndarray:
    """NNLS of ``design @ theta ~ target`` with relative residuals, every run weighted alike."""
    w = _weights(run) / y
    theta, _ = nnls(design * w[:, None], target * w)
    return np.asarray(theta, dtype=float)


def fit_step_costs(
    bca: Path,
    model: str,
    table: SteadyTable,
    *,
    drain_runs: Collection[int] | None = None,
) -> StepCostFit:
    """Measure ``k``, fit ``(a, kappa)`` and derive the decode table of one model (module docstring).

    Parameters
    ----------
    bca
        The ``bca_memory_gap`` folder.
    model
        Model name as in the BCA files.
    table
        The model's :func:`steady_table`.
    drain_runs
        Use only the drain intervals of these runs (``max_num_seqs`` values); default all.
    """
    idx = pd.read_csv(bca / "background_runs_index.csv")
    rows = idx[idx["model"] == model]
    blocks_by_n = dict(
        zip(rows["max_num_seqs"].astype(int).tolist(), rows["num_gpu_blocks"].astype(int).tolist(), strict=True)
    )
    x = _drain_intervals(bca, model, blocks_by_n)
    if drain_runs is not None:
        x = x[x["n"].isin(list(drain_runs))]
    b = x["running"].to_numpy(float)
    clean = ~table.preempted
    # D(b) = base(b) - fa(b) * a - fk(b) * k, each interpolated between the table points
    base = np.interp(b, table.batch, np.where(clean, table.wall_s - table.prompt_s, table.itl_s))
    fa = np.interp(b, table.batch, np.where(clean, table.prefill_frac, 0.0))
    fk = np.interp(b, table.batch, np.where(clean, table.prefill_frac * table.batch, 0.0))
    dc = x["context"].to_numpy(float) - np.interp(b, table.batch, table.context_ref_tokens)
    y = x["step_s"].to_numpy(float)
    run = x["n"].to_numpy(int)
    design = np.column_stack([-fa, dc])
    if len(x) < 10:
        return StepCostFit(table, table.itl_s, 0.0, 0.0, 0.0, len(x), float("nan"), float("nan"))
    k = _sched_per_seq(x["sched_s"].to_numpy(float), b, run)
    target = y - base + fk * k
    a, kappa = _solve(design, target, y, run)
    grid = np.unique(run)
    halves = (np.isin(run, grid[0::2]), np.isin(run, grid[1::2]))
    itl = np.interp(b, table.batch, table.itl_s)
    sched = x["sched_s"].to_numpy(float)
    errs: list[np.ndarray] = []
    errs_itl: list[np.ndarray] = []
    for fit_half, test_half in (halves, halves[::-1]):
        kh = _sched_per_seq(sched[fit_half], b[fit_half], run[fit_half])
        th = _solve(design[fit_half], (y - base + fk * kh)[fit_half], y[fit_half], run[fit_half])
        errs.append(np.abs((base - fk * kh + design @ th)[test_half] / y[test_half] - 1.0))
        k_itl = _solve(dc[fit_half, None], (y - itl)[fit_half], y[fit_half], run[fit_half])[0]
        errs_itl.append(np.abs((itl + k_itl * dc)[test_half] / y[test_half] - 1.0))
    return StepCostFit(
        table=table,
        decode_step_s=table.decode_s(float(a), float(k)),
        prefill_base_s=float(a),
        idle_s_per_seq=float(k),
        context_s_per_token=float(kappa),
        num_intervals=len(x),
        heldout_mape=float(np.median(np.concatenate(errs))),
        heldout_mape_itl_table=float(np.median(np.concatenate(errs_itl))),
    )
