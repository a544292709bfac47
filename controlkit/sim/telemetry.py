"""Telemetry out: per-step and per-request records in the hook's schema.

Step logs are JSON Lines.  The first line is a header object::

    {"schema": "controlkit.steps/1", "source": "controlkit.sim", "plant": ..., "kv_blocks_total": ...}

and every following line is one step with the :class:`~identification.records.StepRecord`
fields (``t_s``, ``step_s``, ``num_running``, ``num_waiting``, ``num_prefill_tokens``,
``num_decode_tokens``, ``kv_blocks_used``, ``kv_blocks_total``, ``num_preempted``) plus
``num_context_tokens``, ``max_active_seqs`` and ``max_batched_tokens``.  This is the schema
the vLLM hook writes, so ``controlkit identify`` reads simulated and real logs alike.
Request logs (``controlkit.requests/1``) carry the request-record fields.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from controlkit.sim.metrics import STEP_RECORD_COLUMNS, RequestOutcomes
from identification.errors import TelemetryError
from identification.records import REQUEST_COLUMNS, STEP_COLUMNS

if TYPE_CHECKING:
    from controlkit.sim.plants import Plant

__all__ = [
    "BCA_H100_NOISE",
    "REQUESTS_SCHEMA",
    "STEPS_SCHEMA",
    "MeasurementNoise",
    "add_measurement_noise",
    "read_steps",
    "sample_metrics",
    "steps_frame",
    "write_requests",
    "write_steps",
]

STEPS_SCHEMA = "controlkit.steps/1"
REQUESTS_SCHEMA = "controlkit.requests/1"
_INT_COLUMNS = frozenset(STEP_RECORD_COLUMNS) - {"t_s", "step_s"}


def steps_frame(rows: Sequence[tuple[Any, ...]]) -> pd.DataFrame:
    """Turn the engine's step tuples into a frame with the step-record columns."""
    frame = pd.DataFrame.from_records(list(rows), columns=list(STEP_RECORD_COLUMNS))
    for col in _INT_COLUMNS:
        frame[col] = frame[col].astype("int64")
    for col in ("t_s", "step_s"):
        frame[col] = frame[col].astype("float64")
    return frame


def _open_out(path: str | Path) -> Any:
    p = Path(path)
    if p.parent and not p.parent.exists():
        raise TelemetryError("the folder does not exist", path=str(p))
    return p.open("w", encoding="utf-8")


def write_steps(path: str | Path, frame: pd.DataFrame, *, plant: Plant, workload: str) -> None:
    """Write step records as JSON Lines with a ``controlkit.steps/1`` header."""
    header = {
        "schema": STEPS_SCHEMA,
        "source": "controlkit.sim",
        "plant": plant.name,
        "workload": workload,
        "kv_blocks_total": plant.kv_blocks_total,
        "block_size": plant.block_size,
        "max_model_len": plant.max_model_len,
    }
    cols = list(STEP_RECORD_COLUMNS)
    with _open_out(path) as fh:
        fh.write(json.dumps(header) + "\n")
        for row in frame.itertuples(index=False, name=None):
            fh.write(
                json.dumps(dict(zip(cols, (v.item() if hasattr(v, "item") else v for v in row), strict=True)))
                + "\n"
            )


def write_requests(path: str | Path, req: RequestOutcomes) -> None:
    """Write request records as JSON Lines (NaN times of unfinished requests become null)."""
    frame = req.frame()
    with _open_out(path) as fh:
        fh.write(json.dumps({"schema": REQUESTS_SCHEMA, "source": "controlkit.sim"}) + "\n")
        for row in frame.itertuples(index=False, name=None):
            rec = {}
            for key, value in zip(REQUEST_COLUMNS, row, strict=True):
                v = value.item() if hasattr(value, "item") else value
                rec[key] = None if isinstance(v, float) and not math.isfinite(v) else v
            fh.write(json.dumps(rec) + "\n")


def read_steps(path: str | Path) -> tuple[dict[str, Any], pd.DataFrame]:
    """Read a step log written by :func:`write_steps` (or the hook): ``(header, frame)``.

    Raises
    ------
    TelemetryError
        A line that is not JSON or lacks a step field, naming the line and field.
    """
    p = Path(path)
    header: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TelemetryError(f"not JSON ({exc.msg})", path=str(p), line=lineno) from None
            if not isinstance(obj, dict):
                raise TelemetryError("expected a JSON object", path=str(p), line=lineno)
            if "schema" in obj:
                header = obj
                continue
            for col in STEP_COLUMNS:
                if col not in obj:
                    raise TelemetryError("missing step field", path=str(p), line=lineno, field=col)
            rows.append(obj)
    return header, pd.DataFrame(rows)


# --------------------------------------------------------------------------- measured-style noise


@dataclass(frozen=True, slots=True)
class MeasurementNoise:
    """Noise that real engine telemetry carries and the simulator's step log does not.

    Parameters
    ----------
    window_s, window_cv
        Every step in the same ``window_s`` of wall time is multiplied by one factor
        ``1 + N(0, window_cv)``: the spread of the wall time per decode iteration between 1-s
        intervals of a steady run (correlated within an interval, so the steps of one run are
        not independent samples).
    step_cv
        Independent multiplicative noise per step.
    pause_rate_per_s, pause_s
        Engine pauses (garbage-collector stalls in vLLM 0.5): Poisson in wall time, each adding a
        uniform ``pause_s`` duration to the step it falls in.

    Notes
    -----
    :data:`BCA_H100_NOISE` is measured on ``bca_memory_gap`` (real vLLM 0.5.2, H100): over the 49
    background runs with >= 20 steady 1-s intervals (running >= 0.95 N), the robust spread of
    the wall time per decode iteration around its 11-interval running median is 1-12 %, median
    4.0 %; the stalls are 0.15-0.2 s long, every 4-8 s at N >= 256 (``docs/simulator.md``).
    """

    window_s: float = 1.0
    window_cv: float = 0.04
    step_cv: float = 0.01
    pause_rate_per_s: float = 0.15
    pause_s: tuple[float, float] = (0.15, 0.2)


#: The BCA logs' noise (H100, vLLM 0.5.2; see :class:`MeasurementNoise`).
BCA_H100_NOISE = MeasurementNoise()


def add_measurement_noise(frame: pd.DataFrame, noise: MeasurementNoise, *, seed: int = 0) -> pd.DataFrame:
    """Return the step frame with measured-style noise on ``step_s``, and ``t_s`` re-accumulated.

    The simulated steps are kept (batch, tokens, KV): only their durations change, so this is
    the telemetry a noisy engine running the same schedule would log.
    """
    if len(frame) == 0:
        return frame.copy()
    rng = np.random.default_rng(seed)
    step = frame["step_s"].to_numpy(dtype=np.float64)
    t0 = float(frame["t_s"].iloc[0]) - step[0]
    window = np.floor((t0 + np.cumsum(step)) / noise.window_s).astype(np.int64)
    uniq, inv = np.unique(window, return_inverse=True)
    factor = 1.0 + noise.window_cv * np.clip(rng.standard_normal(uniq.size), -3, 3)[inv]
    factor *= 1.0 + noise.step_cv * np.clip(rng.standard_normal(step.size), -3, 3)
    noisy = step * np.maximum(factor, 0.2)
    # pauses: Poisson in wall time, each added to the step it falls in
    p_pause = 1.0 - np.exp(-noise.pause_rate_per_s * noisy)
    hit = rng.random(step.size) < p_pause
    noisy[hit] += rng.uniform(noise.pause_s[0], noise.pause_s[1], int(hit.sum()))
    out = frame.copy()
    out["step_s"] = noisy
    out["t_s"] = t0 + np.cumsum(noisy)
    return out


def sample_metrics(frame: pd.DataFrame, *, interval_s: float = 1.0, kv_blocks_total: int | None = None) -> pd.DataFrame:
    """Scrape a step frame as Prometheus-style engine metrics every ``interval_s`` (vLLM's names).

    Gauges (running, waiting, KV usage) are the value at the scrape; counters (tokens,
    preemptions, model-forward seconds) are cumulative.  ``kv_blocks_total`` adds the
    ``num_gpu_blocks`` column (omit it for metrics without the cache size).  This is the form
    ``identify`` reads from ``/metrics`` scrapes, with their sampling: per-step detail is lost.
    """
    if len(frame) == 0:
        raise TelemetryError("no steps to sample", path="<steps>")
    t = frame["t_s"].to_numpy(dtype=np.float64)
    grid = np.arange(math.ceil(t[0] / interval_s) * interval_s, t[-1], interval_s)
    idx = np.searchsorted(t, grid, side="right") - 1
    keep = idx >= 0
    grid, idx = grid[keep], idx[keep]

    def cum(col: str) -> Any:
        return np.cumsum(frame[col].to_numpy(dtype=np.float64))[idx]

    total = frame["kv_blocks_total"].to_numpy(dtype=np.float64)[idx]
    used = frame["kv_blocks_used"].to_numpy(dtype=np.float64)[idx]
    out = pd.DataFrame(
        {
            "time_s": grid,
            "num_requests_running": frame["num_running"].to_numpy(dtype=np.float64)[idx],
            "num_requests_waiting": frame["num_waiting"].to_numpy(dtype=np.float64)[idx],
            "kv_cache_usage_perc": np.where(total > 0, used / np.maximum(total, 1.0), 0.0),
            "num_preemptions_total": cum("num_preempted"),
            "prompt_tokens_total": cum("num_prefill_tokens"),
            "generation_tokens_total": cum("num_decode_tokens"),
            "model_forward_time_total_s": cum("step_s"),
        }
    )
    if kv_blocks_total is not None:
        out["num_gpu_blocks"] = float(kv_blocks_total)
    return out
