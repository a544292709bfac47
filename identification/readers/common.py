"""Shared pieces of the telemetry readers: metric-name mapping, value checks, row reporting.

Every reader turns a file into a :class:`pandas.DataFrame` with a private ``_line`` column
(the 1-based line of each row in its file; the CSV header is line 1) and checks it with a
:class:`RowChecker`.  The checker works on whole columns (vectorised); only the bad rows are
visited one by one, to build their messages.  Under ``skip_bad_rows`` the bad rows are dropped
and each one is recorded as a :class:`~identification.records.SkippedRow`; otherwise the first
bad row (lowest line) raises :class:`~identification.errors.TelemetryError`.
"""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from identification.errors import TelemetryError
from identification.records import SkippedRow

__all__ = [
    "KNOWN_KEY_COLUMNS",
    "LINE",
    "METRIC_ALIASES",
    "RowChecker",
    "canonical_metric_name",
    "file_stem",
    "normalise_value",
    "open_text",
    "read_csv_lines",
]

#: Private column holding each row's 1-based line number in its source file.
LINE = "_line"

#: vLLM metric base names (after dropping ``vllm:`` and ``_total``) -> canonical sample column.
METRIC_ALIASES: dict[str, str] = {
    "time_s": "time_s",
    "time [s]": "time_s",
    "time": "time_s",
    "timestamp_s": "time_s",
    "num_requests_running": "num_requests_running",
    "num_requests_waiting": "num_requests_waiting",
    "kv_cache_usage_perc": "kv_cache_usage_perc",
    "gpu_cache_usage_perc": "kv_cache_usage_perc",
    "num_preemptions": "num_preemptions_total",
    "request_success": "request_success_total",
    "prompt_tokens": "prompt_tokens_total",
    "generation_tokens": "generation_tokens_total",
    "scheduler_total_time": "scheduler_time_total_s",
    "scheduler_time": "scheduler_time_total_s",
    "scheduler_time_total_s": "scheduler_time_total_s",
    "model_forward_total_time": "model_forward_time_total_s",
    "model_forward_time": "model_forward_time_total_s",
    "model_forward_time_total_s": "model_forward_time_total_s",
    "num_gpu_blocks": "num_gpu_blocks",
}

#: Columns that name a run's configuration rather than a metric (kept for ``where`` selection).
KNOWN_KEY_COLUMNS: tuple[str, ...] = (
    "run",
    "model",
    "model_name",
    "engine",
    "gpu",
    "max_num_seqs",
    "max_num_batched_tokens",
    "output_len",
    "input_len",
    "request_rate",
    "dataset",
    "chunked_prefill",
    "tensor_parallel_size",
    "policy",
)


_COUNT = 1e15  # cumulative counters: a thousand years of a fast engine
_SECONDS = 1e11  # clock readings and cumulative seconds (a Unix time is ~1.7e9)
#: Largest value each column can hold in real telemetry (larger is a bad row, named).
VALUE_BOUNDS: dict[str, float] = {
    "time_s": _SECONDS,
    "t_s": _SECONDS,
    "arrival_s": _SECONDS,
    "first_token_s": _SECONDS,
    "finish_s": _SECONDS,
    "num_requests_running": 65_536.0,  # identification.validation.MAX_BATCH
    "num_running": 65_536.0,
    "num_requests_waiting": 1e9,
    "num_waiting": 1e9,
    "kv_cache_usage_perc": 1.0 + 1e-6,  # a fraction (vLLM: 1 means 100 %)
    "num_gpu_blocks": 1e9,  # identification.validation.MAX_KV_BLOCKS
    "kv_blocks_used": 1e9,
    "kv_blocks_total": 1e9,
    "block_size": 4096.0,
    "num_preemptions_total": _COUNT,
    "request_success_total": _COUNT,
    "prompt_tokens_total": _COUNT,
    "generation_tokens_total": _COUNT,
    "scheduler_time_total_s": _SECONDS,
    "model_forward_time_total_s": _SECONDS,
    "step_s": 3600.0,
    "num_prefill_tokens": 1e9,
    "num_decode_tokens": 1e9,
    "num_context_tokens": 1e12,
    "num_preempted": 1e9,
    "max_active_seqs": 1e9,
    "max_batched_tokens": 1e9,
    "prompt_tokens": 1e8,  # identification.validation.MAX_TOKENS
    "output_tokens": 1e8,
    "num_preemptions": 1e9,
}


def canonical_metric_name(name: str) -> str | None:
    """Map a vLLM metric or column name onto its canonical sample column, or ``None``.

    The ``vllm:`` prefix and the ``_total`` suffix are optional, and both the old
    (``gpu_cache_usage_perc``) and the new (``kv_cache_usage_perc``) spellings are known.

    Examples
    --------
    >>> canonical_metric_name("vllm:generation_tokens_total")
    'generation_tokens_total'
    >>> canonical_metric_name("gpu_cache_usage_perc")
    'kv_cache_usage_perc'
    >>> canonical_metric_name("scheduler_total_time")
    'scheduler_time_total_s'
    >>> canonical_metric_name("vllm:iteration_tokens_total_bucket") is None
    True
    """
    base = name.strip()
    if base.startswith("vllm:"):
        base = base[len("vllm:") :]
    if base in METRIC_ALIASES:
        return METRIC_ALIASES[base]
    if base.endswith("_total"):
        return METRIC_ALIASES.get(base[: -len("_total")])
    return None


def normalise_value(value: object) -> str:
    """Render a key value as a string so that ``64``, ``64.0`` and ``"64"`` compare equal.

    Examples
    --------
    >>> normalise_value(64.0), normalise_value("64"), normalise_value(" llama ")
    ('64', '64', 'llama')
    >>> normalise_value(0.5), normalise_value(float("nan"))
    ('0.5', '')
    """
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        fvalue = float(value)
        if math.isfinite(fvalue) and fvalue == int(fvalue):
            return str(int(fvalue))
        return repr(fvalue)
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number == int(number) and text.lstrip("+-").replace(".", "", 1).isdigit():
        return str(int(number))
    return text


def normalise_series(values: pd.Series) -> pd.Series:
    """Vectorised :func:`normalise_value` over the distinct values of a column."""
    uniques = pd.unique(values)
    mapping = {u: normalise_value(u) for u in uniques}
    return values.map(mapping).astype(object)


def file_stem(path: str | Path) -> str:
    """File name without ``.gz`` and without its format extension.

    Examples
    --------
    >>> file_stem("/x/background_engine_metrics.csv.gz"), file_stem("logs/steps.jsonl.1")
    ('background_engine_metrics', 'steps')
    """
    name = re.sub(r"\.\d+$", "", Path(path).name)  # a rotated log: steps.jsonl.1
    if name.endswith(".gz"):
        name = name[: -len(".gz")]
    return name.rsplit(".", 1)[0] if "." in name else name


def open_text(path: Path) -> str:
    """Read a whole text file, transparently un-gzipping ``.gz`` (by magic bytes)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(2)
        if head == b"\x1f\x8b":
            with gzip.open(path, "rt", encoding="utf-8") as gz:
                return gz.read()
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TelemetryError(
            f"cannot read the file ({exc}); expected readable UTF-8 text", path=str(path)
        ) from exc


#: Most columns and longest header line a CSV may have (a line of 10 MB of commas is not a table).
MAX_COLUMNS = 1000
MAX_HEADER_CHARS = 65_536


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            head = fh.readline(MAX_HEADER_CHARS + 1)
    except (OSError, EOFError) as exc:
        raise TelemetryError(f"cannot read the file ({exc})", path=str(path)) from exc
    if len(head) > MAX_HEADER_CHARS and not head.endswith(b"\n"):
        raise TelemetryError(
            f"the header line is longer than {MAX_HEADER_CHARS} characters; expected a CSV header of column names",
            path=str(path), line=1)
    if head.count(b",") >= MAX_COLUMNS:
        raise TelemetryError(
            f"the header has {head.count(b',') + 1} columns; at most {MAX_COLUMNS} are read", path=str(path), line=1)


def read_csv_lines(path: Path) -> pd.DataFrame:
    """Read a CSV (``.gz`` too) with a ``_line`` column; blank lines are ignored but counted."""
    _check_header(path)
    try:
        frame = pd.read_csv(path, skip_blank_lines=False, compression="infer", low_memory=False)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TelemetryError(f"cannot read the file ({exc})", path=str(path)) from exc
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise TelemetryError(
            f"not a readable CSV file ({str(exc)[:300]}); expected a header line and rows", path=str(path)
        ) from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    frame[LINE] = np.arange(2, len(frame) + 2, dtype=np.int64)
    blank = frame.drop(columns=[LINE]).isna().all(axis=1)
    if blank.any():
        frame = frame.loc[~blank.to_numpy()]
    return frame.reset_index(drop=True)


@dataclass
class RowChecker:
    """Collects bad rows of one frame, then raises for the first or drops and records them all.

    Parameters
    ----------
    path
        The source file, for messages.
    frame
        The frame being checked; it must hold the ``_line`` column.
    skip_bad_rows
        Drop and record bad rows instead of raising.
    """

    path: str
    frame: pd.DataFrame
    skip_bad_rows: bool
    _bad: np.ndarray = field(init=False)
    _found: list[tuple[np.ndarray, str, pd.Series]] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._bad = np.zeros(len(self.frame), dtype=bool)

    def require_columns(self, columns: Iterable[str], expected: str) -> None:
        """Raise (always: a file without a column has no good rows) if a column is missing."""
        missing = [c for c in columns if c not in self.frame.columns]
        if missing:
            present = ", ".join(c for c in self.frame.columns if c != LINE)
            raise TelemetryError(
                f"missing required column(s) {missing}; expected {expected}; the header has: {present}",
                path=self.path,
                line=1,
                field=missing[0],
            )

    def numeric(
        self,
        column: str,
        *,
        min_value: float | None = None,
        what: str = "a finite number",
        allow_missing: bool = False,
        max_value: float | None = None,
    ) -> pd.Series:
        """Convert ``column`` to float64 in place; flag missing, unparsable, non-finite, small, huge values.

        ``max_value`` defaults to the column's bound in :data:`VALUE_BOUNDS` (what an engine can
        report at all), so a running count of 1e15 is a bad row, not an outlier in a fit.
        """
        raw = self.frame[column]
        num = (
            raw.astype("float64")
            if pd.api.types.is_numeric_dtype(raw)
            else pd.to_numeric(raw, errors="coerce").astype("float64")
        )
        values = num.to_numpy()
        missing = raw.isna().to_numpy()
        if not allow_missing:
            self.flag(missing, column, "missing value", what)
        unparsable = np.isnan(values) & ~missing
        self.flag(unparsable, column, lambda: "unparsable number " + raw.astype(str).map(repr), what)
        self.flag(np.isinf(values), column, lambda: "non-finite value " + raw.astype(str), what)
        if min_value is not None:
            low = values < min_value
            self.flag(low, column, lambda: "value " + num.astype(str) + f" below {min_value:g}", what)
        top = VALUE_BOUNDS.get(column) if max_value is None else max_value
        if top is not None:
            high = values > top
            self.flag(high, column, lambda: "value " + num.astype(str) + f" above {top:g}", f"{what}, at most {top:g}")
        self.frame[column] = num
        return num

    def time_order(self, column: str, groups: np.ndarray, runs: pd.Series, *, strict: bool) -> np.ndarray:
        """Flag rows whose ``column`` goes back in time inside their group; return that mask.

        ``groups`` labels each row's run (rows of one group are compared in file order), ``runs``
        names the run in the messages.  With ``strict`` a repeated time is bad too (samples);
        without it equal times are allowed (steps).
        """
        times = self.frame[column].to_numpy()
        prev = pd.Series(times).groupby(groups).cummax().groupby(groups).shift().to_numpy()
        backwards = times <= prev if strict else times < prev
        if backwards.any():
            verb = "does not increase" if strict else "goes backwards"
            reasons = (
                f"{column} "
                + self.frame[column].astype(str)
                + f" {verb} (an earlier row of run "
                + runs.astype(str)
                + " has "
                + pd.Series(prev, index=self.frame.index).astype(str)
                + ")"
            )
            order = "strictly increasing" if strict else "non-decreasing"
            self.flag(backwards, column, lambda: reasons, f"{order} {column} inside a run")
        return np.asarray(backwards, dtype=bool)

    def flag(
        self, mask: np.ndarray, column: str, reasons: Callable[[], pd.Series] | str, expected: str
    ) -> None:
        """Mark the rows where ``mask`` holds as bad, with the expected form.

        ``reasons`` is one message for all rows, or a function building one message per row
        (called only when some row is bad, so the happy path builds no strings).
        """
        mask = np.asarray(mask, dtype=bool) & ~self._bad
        if not mask.any():
            return
        self._bad |= mask
        texts = pd.Series(reasons, index=self.frame.index) if isinstance(reasons, str) else reasons()
        self._found.append((mask, column, texts.astype(str) + f"; expected {expected}"))

    def finish(self) -> tuple[pd.DataFrame, list[SkippedRow]]:
        """Raise for the first bad row, or return (the frame without bad rows, their records)."""
        if not self._found:
            return self.frame, []
        lines = self.frame[LINE].to_numpy()
        rows: list[tuple[int, str, str]] = []
        for mask, column, reasons in self._found:
            idx = np.flatnonzero(mask)
            if not self.skip_bad_rows:
                idx = idx[:1]
            texts = reasons.to_numpy()
            rows.extend((int(lines[i]), column, str(texts[i])) for i in idx)
        rows.sort()
        if not self.skip_bad_rows:
            line, column, reason = rows[0]
            raise TelemetryError(
                reason + " (pass skip_bad_rows / --skip-bad-rows to skip such rows)",
                path=self.path,
                line=line,
                field=column,
            )
        skipped = [SkippedRow(self.path, line, column, reason) for line, column, reason in rows]
        kept = self.frame.loc[~self._bad].reset_index(drop=True)
        self._bad = np.zeros(len(kept), dtype=bool)
        self._found = []
        self.frame = kept
        return kept, skipped
