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
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from controlkit.sim.metrics import STEP_RECORD_COLUMNS, RequestOutcomes
from identification.errors import TelemetryError
from identification.records import REQUEST_COLUMNS, STEP_COLUMNS

if TYPE_CHECKING:
    from controlkit.sim.plants import Plant

__all__ = ["REQUESTS_SCHEMA", "STEPS_SCHEMA", "read_steps", "steps_frame", "write_requests", "write_steps"]

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
