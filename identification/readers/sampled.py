"""Sampled engine metrics (CSV with vLLM's Prometheus names) and per-run index files.

Runs and segments
-----------------
* The **key columns** of a file are the columns that name a configuration rather than a metric:
  those in :data:`~identification.readers.common.KNOWN_KEY_COLUMNS` (``model``, ``max_num_seqs``,
  ``output_len``, ...) and any other non-numeric column.
* A **run** is a block of consecutive rows with the same key values.  Its name is
  ``"k1=v1,k2=v2"`` in file column order (``"model=llama-2-7b,max_num_seqs=64"``), the value of a
  ``run`` column if the file has one, or the file stem if there are no key columns.  A key
  combination that comes back after another block gets the suffix ``#2``, ``#3``, ...
* Inside a run ``time_s`` must strictly increase; a row that does not is an error.
* A **segment** (column ``segment``, 0, 1, ...) is a stretch of a run in which no counter
  decreases.  A counter that decreases (an engine restart, a counter reset or wrap) starts a new
  segment.  Counters must only be differenced between consecutive rows of the same
  ``(run, segment)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from identification.errors import TelemetryError
from identification.readers.common import (
    KNOWN_KEY_COLUMNS,
    LINE,
    RowChecker,
    canonical_metric_name,
    file_stem,
    normalise_series,
)
from identification.records import RUN_COLUMN, SAMPLE_COLUMNS, SAMPLE_COUNTER_COLUMNS, SkippedRow

__all__ = [
    "SEGMENT_COLUMN",
    "SampledFrame",
    "join_run_index",
    "read_run_index",
    "read_sampled_frame",
    "run_names_for_index",
]

#: Column numbering the counter segments inside a run (see the module docstring).
SEGMENT_COLUMN = "segment"

_GAUGES = ("num_requests_running", "num_requests_waiting", "kv_cache_usage_perc", "num_gpu_blocks")


@dataclass(frozen=True, slots=True)
class SampledFrame:
    """Samples read from one file, with the key columns that told its runs apart."""

    samples: pd.DataFrame
    key_columns: tuple[str, ...]
    skipped: tuple[SkippedRow, ...]


def _classify(frame: pd.DataFrame, path: str) -> tuple[dict[str, str], list[str]]:
    """Return (rename map for metric columns, key columns)."""
    rename: dict[str, str] = {}
    keys: list[str] = []
    seen: dict[str, str] = {}
    for col in frame.columns:
        if col == LINE:
            continue
        canon = canonical_metric_name(col)
        if canon is not None:
            if canon in seen:
                raise TelemetryError(
                    f"columns {seen[canon]!r} and {col!r} both mean {canon!r}; keep only one",
                    path=path,
                    line=1,
                    field=col,
                )
            seen[canon] = col
            rename[col] = canon
        elif col in KNOWN_KEY_COLUMNS or not pd.api.types.is_numeric_dtype(frame[col]):
            keys.append(col)
        elif col.startswith("vllm:"):
            rename[col] = col[len("vllm:") :]
    return rename, keys


def _run_names(frame: pd.DataFrame, keys: list[str], stem: str) -> tuple[np.ndarray, pd.Series]:
    """Return (block id per row, run name per row) for consecutive blocks of equal keys."""
    n = len(frame)
    if not keys:
        return np.zeros(n, dtype=np.int64), pd.Series([stem] * n, index=frame.index, dtype=object)
    text = {k: normalise_series(frame[k]) for k in keys}
    change = np.zeros(n, dtype=bool)
    if n:
        change[0] = True
    for k in keys:
        values = text[k].to_numpy()
        change[1:] |= values[1:] != values[:-1]
    block = np.cumsum(change) - 1
    if RUN_COLUMN in keys:
        names = text[RUN_COLUMN]
    else:
        names = text[keys[0]].radd(f"{keys[0]}=")
        for k in keys[1:]:
            names = names + f",{k}=" + text[k]
    starts = np.flatnonzero(change)
    block_names = names.to_numpy()[starts]
    seen: dict[str, int] = {}
    unique = []
    for name in block_names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return block, pd.Series(np.asarray(unique, dtype=object)[block], index=frame.index, dtype=object)


def read_sampled_frame(frame: pd.DataFrame, path: str, *, skip_bad_rows: bool = False) -> SampledFrame:
    """Check and normalise one sampled-metrics frame (as read by ``read_csv_lines``).

    Returns the canonical samples frame: ``time_s``, the canonical metric columns present, any
    other numeric columns (``vllm:`` dropped), the key columns, ``run`` and ``segment``.
    """
    rename, keys = _classify(frame, path)
    frame = frame.rename(columns=rename)
    checker = RowChecker(path, frame, skip_bad_rows)
    checker.require_columns(["time_s"], "a time column (time_s, 'time [s]', time) in seconds")
    metrics = [c for c in SAMPLE_COLUMNS if c in frame.columns and c != "time_s"]
    empty = [c for c in metrics if frame[c].isna().all()]
    if empty:
        frame = frame.drop(columns=empty)
        checker.frame = frame
        metrics = [c for c in metrics if c not in empty]
    checker.numeric("time_s", what="a finite time in seconds")
    for col in metrics:
        what = (
            "a finite count >= 0"
            if col in SAMPLE_COUNTER_COLUMNS or col in _GAUGES
            else "a finite number >= 0"
        )
        checker.numeric(col, min_value=0.0, what=what)
    frame, skipped = checker.finish()

    block, runs = _run_names(frame, keys, file_stem(path))
    backwards = checker.time_order("time_s", block, runs, strict=True)
    if backwards.any():
        frame, more = checker.finish()
        skipped += more
        block, runs = block[~backwards], runs.loc[~backwards].reset_index(drop=True)

    counters = [c for c in SAMPLE_COUNTER_COLUMNS if c in frame.columns]
    reset = np.zeros(len(frame), dtype=bool)
    for c in counters:
        values = frame[c]
        reset |= (values < values.groupby(block).shift()).to_numpy()
    segment = pd.Series(reset.astype(np.int64)).groupby(block).cumsum().to_numpy()

    extras = [c for c in frame.columns if c not in metrics and c not in keys and c not in ("time_s", LINE)]
    out = frame[["time_s", *metrics, *extras, *keys]].copy()
    out[RUN_COLUMN] = runs.to_numpy()
    out[SEGMENT_COLUMN] = segment
    return SampledFrame(out, tuple(k for k in keys if k != RUN_COLUMN), tuple(skipped))


def read_run_index(
    frame: pd.DataFrame, path: str, *, skip_bad_rows: bool = False
) -> tuple[pd.DataFrame, tuple[str, ...], tuple[SkippedRow, ...]]:
    """Check a per-run index (one row per run, ``num_gpu_blocks`` and key columns, no time).

    Returns (index frame without the ``_line`` column, its key columns, skipped rows).  Rows may
    leave ``num_gpu_blocks`` empty (runs without results); such rows carry NaN.
    """
    keys = tuple(c for c in frame.columns if c in KNOWN_KEY_COLUMNS)
    if not keys:
        raise TelemetryError(
            f"a run index needs key columns to match runs, any of {list(KNOWN_KEY_COLUMNS)}",
            path=path,
            line=1,
            field="model",
        )
    checker = RowChecker(path, frame, skip_bad_rows)
    for col in ("num_gpu_blocks", "block_size"):
        if col in frame.columns:
            checker.numeric(col, min_value=0.0, allow_missing=True, what="a block count >= 0 (or empty)")
    frame, skipped = checker.finish()
    dup = pd.DataFrame({k: normalise_series(frame[k]) for k in keys}).duplicated().to_numpy()
    if dup.any():
        checker.flag(dup, keys[0], lambda: "duplicate run " + frame[keys[0]].astype(str), "one row per run")
        frame, more = checker.finish()
        skipped += more
    return frame.drop(columns=[LINE]).reset_index(drop=True), keys, tuple(skipped)


def join_run_index(
    samples: pd.DataFrame,
    sample_keys: tuple[str, ...],
    index: pd.DataFrame,
    index_keys: tuple[str, ...],
    *,
    samples_path: str,
    index_path: str,
) -> pd.DataFrame:
    """Add ``num_gpu_blocks`` (and ``block_size``) from a run index to samples, by shared keys.

    A value already in the samples (e.g. from ``vllm:cache_config_info``) is kept; the index fills
    the gaps.  Runs absent from the index keep NaN.
    """
    shared = [k for k in sample_keys if k in index_keys]
    if not shared:
        raise TelemetryError(
            f"the run index shares no key column with {samples_path} (its keys: {list(sample_keys)}); "
            f"expected some of {list(index_keys)}",
            path=index_path,
            line=1,
            field=index_keys[0],
        )
    add = [c for c in ("num_gpu_blocks", "block_size") if c in index.columns]
    left = pd.DataFrame({k: normalise_series(samples[k]) for k in shared})
    right = pd.DataFrame({k: normalise_series(index[k]) for k in shared})
    for c in add:
        right[c] = index[c].to_numpy()
    right = right.drop_duplicates()
    ambiguous = right.duplicated(subset=shared, keep=False).to_numpy()
    if ambiguous.any():  # the index is keyed by more columns than the samples carry
        first = right.loc[ambiguous, shared].iloc[0]
        clause = ", ".join(f"{k}={first[k]}" for k in shared)
        raise TelemetryError(
            f"the run index has {int(ambiguous.sum())} rows with different {add} for {clause}; the samples "
            f"{samples_path} carry only the key columns {list(shared)} of the index keys {list(index_keys)}; "
            "add the other key columns to the samples, or give an index with one row per run of the samples",
            path=index_path, field=shared[0])
    merged = left.merge(right, on=shared, how="left")
    out = samples.copy()
    for c in add:
        values = merged[c].to_numpy(dtype="float64")
        out[c] = out[c].fillna(pd.Series(values, index=out.index)) if c in out.columns else values
    return out


def run_names_for_index(index: pd.DataFrame, keys: tuple[str, ...]) -> pd.Series:
    """Return the ``run`` names a sampled file with these key columns gives to each index row."""
    _, names = _run_names(index.reset_index(drop=True), list(keys), "")
    return names.str.replace(r"#\d+$", "", regex=True)
