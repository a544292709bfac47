"""Per-step quantities from telemetry: the observations every model is fitted on.

Two sources give step observations:

* **Step records** (simulator, vLLM hook) already hold one row per engine iteration: the batch
  is ``num_running``, the step time is ``step_s``.
* **Sampled counters** (Prometheus scrapes, the BCA H100 logs) hold cumulative counters sampled
  every few seconds.  Over one sampling interval ``[t0, t1]`` of one run in which the running
  gauge is steady (both end points within ``max_running_change`` of each other) and decode
  dominates, every running request emits one token per engine step, so

  ``steps ≈ Δgeneration_tokens / running``   and   ``step_s ≈ Δt · running / Δgeneration_tokens``.

  This is the *effective* decode step time: prefill work done inside the interval is amortised
  into it, exactly as it is in the time-per-output-token a client sees.  The forward-time and
  scheduler-time counters, where present, give ``forward_step_s = Δforward / steps`` and
  ``scheduler_step_s = Δscheduler / steps`` as a cross-check (:func:`cross_check`).

Counters are differenced only between consecutive rows of the *same run*; an interval in which
time does not advance or any counter decreases (a counter reset) is dropped, never differenced.

Examples
--------
>>> import pandas as pd
>>> samples = pd.DataFrame({
...     "run": ["a"] * 3, "time_s": [0.0, 1.0, 2.0],
...     "num_requests_running": [4.0, 4.0, 4.0],
...     "generation_tokens_total": [0.0, 400.0, 800.0]})
>>> obs = observations_from_samples(samples)
>>> obs.step_s.round(4).tolist()
[0.01, 0.01]
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from identification.errors import TelemetryError
from identification.records import RUN_COLUMN, SAMPLE_COUNTER_COLUMNS, Telemetry

__all__ = [
    "StepObservations",
    "cross_check",
    "derive_observations",
    "observations_from_samples",
    "observations_from_steps",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class StepObservations:
    """Per-step observations, columnar (one entry per step or per sampling interval).

    Attributes
    ----------
    batch
        Sequences in the batch (``num_running``; for counters the mean of the two gauges).
    step_s
        Step time, seconds.
    prefill_tokens
        Prefill tokens per step (for counters: amortised over the interval).
    context_tokens
        Context tokens per running sequence (NaN where unknown).
    group
        Integer code of the run each row belongs to; ``group_names[code]`` names it.
    kv_blocks_used, kv_blocks_total
        KV-cache blocks in use and capacity (NaN where unknown).
    num_preempted
        Preemptions during the step or interval.
    forward_step_s, scheduler_step_s
        Forward-pass and scheduler time per step from their counters (NaN where unknown).
    source
        ``"steps"`` or ``"samples"``.
    """

    batch: FloatArray
    step_s: FloatArray
    prefill_tokens: FloatArray
    context_tokens: FloatArray
    group: IntArray
    group_names: tuple[str, ...]
    kv_blocks_used: FloatArray
    kv_blocks_total: FloatArray
    num_preempted: FloatArray
    forward_step_s: FloatArray
    scheduler_step_s: FloatArray
    source: str

    def __len__(self) -> int:
        return int(self.batch.shape[0])

    def take(self, index: npt.NDArray[np.bool_] | IntArray) -> StepObservations:
        """Return the rows selected by a boolean mask or an index array (group names kept)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            values[f.name] = value[index] if isinstance(value, np.ndarray) else value
        return StepObservations(**values)

    def scale_time(self, factor: float) -> StepObservations:
        """Return a copy with every time column multiplied by ``factor`` (a change of units)."""
        return StepObservations(
            **{
                f.name: getattr(self, f.name) * factor
                if f.name in ("step_s", "forward_step_s", "scheduler_step_s")
                else getattr(self, f.name)
                for f in fields(self)
            }
        )


def _column(frame: pd.DataFrame, name: str, default: float = np.nan) -> FloatArray:
    if name not in frame.columns:
        return np.full(len(frame), default, dtype=np.float64)
    values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    return values


def _require(frame: pd.DataFrame, names: tuple[str, ...], kind: str) -> None:
    for name in names:
        if name not in frame.columns:
            raise TelemetryError(
                f"{kind} lack the required column {name!r}; expected columns {list(names)}",
                path="<telemetry>",
                field=name,
            )
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise TelemetryError(
                f"{kind}: {int(bad.sum())} non-finite value(s) in {name!r} (first at row {row}); "
                "expected finite numbers (read with skip_bad_rows=True to drop such rows)",
                path="<telemetry>",
                line=row + 2,
                field=name,
            )


def _groups(frame: pd.DataFrame) -> tuple[IntArray, tuple[str, ...]]:
    if RUN_COLUMN in frame.columns:
        codes, names = pd.factorize(frame[RUN_COLUMN].astype(str), sort=False)
        return codes.astype(np.int64), tuple(str(n) for n in names)
    return np.zeros(len(frame), dtype=np.int64), ("run0",)


def observations_from_steps(steps: pd.DataFrame, *, block_size: int = 16) -> StepObservations:
    """Observations from step records (one row per engine iteration).

    Rows with no running sequence or a non-positive step time carry no latency evidence and are
    left out.  Context per sequence is ``num_context_tokens / num_running`` where the writer
    knows it, else estimated from the KV blocks in use as ``kv_blocks_used·block_size/running −
    block_size/2`` (half a block of rounding waste per sequence).

    Raises
    ------
    TelemetryError
        A required column is missing or holds a non-finite value.
    """
    _require(steps, ("step_s", "num_running"), "step records")
    batch = _column(steps, "num_running")
    step_s = _column(steps, "step_s")
    keep = (batch > 0) & (step_s > 0)
    frame = steps.loc[keep] if not keep.all() else steps
    batch, step_s = batch[keep], step_s[keep]
    group, names = _groups(frame)
    used = _column(frame, "kv_blocks_used")
    ctx_total = _column(frame, "num_context_tokens")
    ctx = np.where(ctx_total >= 0, ctx_total / batch, np.nan)
    from_kv = np.maximum(used * block_size / batch - block_size / 2.0, 0.0)
    ctx = np.where(np.isfinite(ctx), ctx, np.where(used > 0, from_kv, np.nan))
    nan = np.full(len(batch), np.nan)
    return StepObservations(
        batch=batch,
        step_s=step_s,
        prefill_tokens=np.nan_to_num(_column(frame, "num_prefill_tokens", 0.0)),
        context_tokens=ctx,
        group=group,
        group_names=names,
        kv_blocks_used=used,
        kv_blocks_total=_column(frame, "kv_blocks_total"),
        num_preempted=np.nan_to_num(_column(frame, "num_preempted", 0.0)),
        forward_step_s=nan,
        scheduler_step_s=nan.copy(),
        source="steps",
    )


def observations_from_samples(
    samples: pd.DataFrame, *, block_size: int = 16, max_running_change: float = 0.05
) -> StepObservations:
    """Observations derived from sampled counters, one per usable sampling interval.

    An interval between consecutive rows of one run is used when time advances, no counter
    decreases (no reset), tokens were generated, and the running gauge is steady: both end
    points are at least 1 and differ by at most ``max(1, max_running_change·running)``.

    Parameters
    ----------
    samples
        Sampled metrics with canonical names: ``time_s``, ``num_requests_running``,
        ``generation_tokens_total`` (required), and optionally ``prompt_tokens_total``,
        ``kv_cache_usage_perc``, ``num_gpu_blocks``, ``num_preemptions_total``,
        ``model_forward_time_total_s``, ``scheduler_time_total_s`` and ``run``.
    block_size
        Tokens per KV block, for the context estimate.
    max_running_change
        Relative change of the running gauge above which an interval is not steady.

    Raises
    ------
    TelemetryError
        A required column is missing or holds a non-finite value.
    """
    required = ("time_s", "num_requests_running", "generation_tokens_total")
    _require(samples, required, "sampled metrics")
    group_all, names = _groups(samples)
    order = np.argsort(group_all, kind="stable")
    frame = samples.iloc[order]
    group_all = group_all[order]
    t = _column(frame, "time_s")
    running = _column(frame, "num_requests_running")
    same_run = group_all[1:] == group_all[:-1]
    if "segment" in frame.columns:  # the readers' counter-reset segments
        segment = _column(frame, "segment")
        same_run &= segment[1:] == segment[:-1]
    dt = np.diff(t)
    ok = same_run & (dt > 0)
    deltas: dict[str, FloatArray] = {}
    for name in SAMPLE_COUNTER_COLUMNS:
        if name in frame.columns:
            d = np.diff(_column(frame, name))
            ok &= ~(d < 0)  # a counter reset: never difference across it (NaN deltas stay NaN)
            deltas[name] = d
    r0, r1 = running[:-1], running[1:]
    batch = 0.5 * (r0 + r1)
    d_gen = deltas["generation_tokens_total"]
    steady = np.abs(r1 - r0) <= np.maximum(1.0, max_running_change * np.maximum(r0, r1))
    ok &= steady & (np.minimum(r0, r1) >= 1) & (d_gen > 0)
    idx = np.flatnonzero(ok)
    b = batch[idx]
    steps = d_gen[idx] / b

    def per_step(name: str, fill: float = np.nan) -> FloatArray:
        if name not in deltas:
            return np.full(len(idx), fill)
        return np.asarray(deltas[name][idx] / steps, dtype=np.float64)

    blocks_total = _column(frame, "num_gpu_blocks")
    kv_frac = _column(frame, "kv_cache_usage_perc")
    used = 0.5 * (kv_frac[:-1] + kv_frac[1:]) * blocks_total[1:]
    used = used[idx]
    ctx = np.where(used > 0, np.maximum(used * block_size / b - block_size / 2.0, 0.0), np.nan)
    preempted = deltas.get("num_preemptions_total")
    return StepObservations(
        batch=b,
        step_s=dt[idx] / steps,
        prefill_tokens=np.nan_to_num(per_step("prompt_tokens_total", 0.0)),
        context_tokens=ctx,
        group=group_all[1:][idx],
        group_names=names,
        kv_blocks_used=used,
        kv_blocks_total=blocks_total[1:][idx],
        num_preempted=np.zeros(len(idx)) if preempted is None else np.nan_to_num(preempted[idx]),
        forward_step_s=per_step("model_forward_time_total_s"),
        scheduler_step_s=per_step("scheduler_time_total_s"),
        source="samples",
    )


def derive_observations(
    telemetry: Telemetry, *, block_size: int = 16, max_running_change: float = 0.05
) -> StepObservations:
    """Step observations from telemetry: step records where present, else sampled counters.

    Raises
    ------
    TelemetryError
        Neither step records nor sampled metrics are present, or they are malformed.
    """
    if len(telemetry.steps) > 0:
        return observations_from_steps(telemetry.steps, block_size=block_size)
    if len(telemetry.samples) > 0:
        return observations_from_samples(
            telemetry.samples, block_size=block_size, max_running_change=max_running_change
        )
    raise TelemetryError(
        "no step records and no sampled metrics to derive step times from; "
        "give per-step records or sampled engine metrics (request records alone fit only a workload)",
        path=", ".join(s.path for s in telemetry.sources) or "<telemetry>",
    )


def cross_check(obs: StepObservations) -> dict[str, float]:
    """Median ratios of the counter-based per-step times to the derived wall step time.

    ``forward_over_wall`` close to (and below) 1 says the wall-clock derivation is consistent
    with the engine's own forward-time counter; ``scheduler_over_wall`` is the scheduler's
    share.  NaN where the counters are absent.

    Examples
    --------
    >>> import pandas as pd
    >>> samples = pd.DataFrame({"time_s": [0.0, 1.0], "num_requests_running": [2.0, 2.0],
    ...     "generation_tokens_total": [0.0, 200.0], "model_forward_time_total_s": [0.0, 0.9]})
    >>> round(cross_check(observations_from_samples(samples))["forward_over_wall"], 3)
    0.9
    """

    def ratio(x: FloatArray) -> float:
        r = x / obs.step_s
        r = r[np.isfinite(r)]
        return float(np.median(r)) if r.size else float("nan")

    return {
        "forward_over_wall": ratio(obs.forward_step_s),
        "scheduler_over_wall": ratio(obs.scheduler_step_s),
    }
