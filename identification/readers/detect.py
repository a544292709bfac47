"""Format detection: which reader a file needs, from its extension and its header or first record."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from identification.errors import TelemetryError
from identification.readers.common import LINE, canonical_metric_name, open_text

__all__ = ["detect_kind", "kind_of_columns", "read_jsonl_lines", "read_tabular"]

_PROM_LINE = re.compile(r"^[A-Za-z_:][A-Za-z0-9_:]*(\{[^}]*\})?\s+[-+0-9.eEnNaIif]+(\s+-?\d+)?\s*$")

#: Column sets that identify each table kind (checked in this order).
_SIGNATURES: tuple[tuple[str, frozenset[str]], ...] = (
    ("steps", frozenset({"t_s", "step_s"})),
    ("requests", frozenset({"arrival_s", "prompt_tokens", "output_tokens"})),
    ("trace_azure", frozenset({"TIMESTAMP", "ContextTokens", "GeneratedTokens"})),
    ("trace_vidur", frozenset({"arrived_at", "num_prefill_tokens", "num_decode_tokens"})),
    ("trace_mooncake", frozenset({"timestamp", "input_length", "output_length"})),
    ("trace_lengths", frozenset({"num_prefill_tokens", "num_decode_tokens"})),
)


def _strip_gz(name: str) -> str:
    return name[:-3] if name.endswith(".gz") else name


def detect_kind(path: Path) -> str:
    """Return the container format of a file: ``csv``, ``jsonl``, ``parquet`` or ``prometheus``."""
    name = _strip_gz(path.name.lower())
    ext = name.rsplit(".", 1)[-1] if "." in name else ""
    if ext in ("csv",):
        return "csv"
    if ext in ("jsonl", "ndjson", "json"):
        return "jsonl"
    if ext in ("parquet", "pq"):
        return "parquet"
    if ext in ("prom", "metrics"):
        return "prometheus"
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise TelemetryError(f"cannot read the file ({exc})", path=str(path)) from exc
    if magic == b"PAR1":
        return "parquet"
    head = [ln.strip() for ln in open_text(path)[:65536].splitlines() if ln.strip()][:20]
    if head and head[0].startswith("{"):
        return "jsonl"
    if head and all(ln.startswith("#") or _PROM_LINE.match(ln) for ln in head):
        return "prometheus"
    if head and "," in head[0]:
        return "csv"
    raise TelemetryError(
        "unknown telemetry format; expected .csv, .jsonl, .parquet or Prometheus text (.prom/.txt), "
        "optionally .gz",
        path=str(path),
    )


def kind_of_columns(columns: list[str], path: str) -> str:
    """Return the table kind (``samples``, ``run_index``, ``steps``, ``requests``, ``trace_*``)."""
    cols = set(columns)
    for kind, needed in _SIGNATURES:
        if needed <= cols:
            return kind
    canon = {canonical_metric_name(c) for c in cols}
    if "time_s" in canon:
        return "samples"
    if "num_gpu_blocks" in cols:
        return "run_index"
    raise TelemetryError(
        f"unknown table: header {sorted(cols)} matches no supported source; expected sampled metrics "
        "(time_s + vLLM metric names), a run index (num_gpu_blocks + key columns), step records "
        "(t_s, step_s, ...), request records (arrival_s, prompt_tokens, output_tokens, ...) or a trace "
        "(Azure TIMESTAMP/ContextTokens/GeneratedTokens, Mooncake timestamp/input_length/output_length, "
        "num_prefill_tokens/num_decode_tokens)",
        path=path,
        line=1,
    )


def read_jsonl_lines(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read JSON Lines into a frame with ``_line``; ``{"schema": ...}`` header lines go to meta."""
    text = open_text(path)
    rows: list[dict[str, object]] = []
    lines: list[int] = []
    meta: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TelemetryError(
                f"not valid JSON ({exc.msg} at column {exc.colno}); expected one JSON object per line",
                path=str(path),
                line=number,
            ) from exc
        if not isinstance(obj, dict):
            raise TelemetryError(
                f"a JSON {type(obj).__name__}, expected one JSON object per line", path=str(path), line=number
            )
        if "schema" in obj:
            meta.update({str(k): str(v) for k, v in obj.items() if isinstance(v, str | int | float)})
            continue
        rows.append(obj)
        lines.append(number)
    frame = pd.DataFrame.from_records(rows) if rows else pd.DataFrame()
    frame[LINE] = np.asarray(lines, dtype=np.int64)
    return frame, meta


def read_tabular(path: Path, kind: str) -> tuple[pd.DataFrame, dict[str, str]]:
    """Read a JSONL or Parquet file into a frame with ``_line`` (Parquet: 1-based row number)."""
    if kind == "jsonl":
        return read_jsonl_lines(path)
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several unrelated types for corrupt files
        raise TelemetryError(f"cannot read as Parquet ({exc})", path=str(path)) from exc
    frame.columns = [str(c) for c in frame.columns]
    frame[LINE] = np.arange(1, len(frame) + 1, dtype=np.int64)
    return frame.reset_index(drop=True), {}
