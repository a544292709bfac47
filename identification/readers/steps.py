"""Per-step records (one row per engine iteration), from JSONL, CSV or Parquet.

Required columns are :data:`~identification.records.STEP_COLUMNS`; the optional ones
(:data:`~identification.records.STEP_OPTIONAL_COLUMNS`) use ``-1`` for "unknown".  A ``run``
column is optional (default: the file stem).  Other columns are kept (e.g. ``policy``) so that
``where`` can select on them.  Inside a run ``t_s`` must not decrease.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from identification.readers.common import LINE, RowChecker, file_stem, normalise_series
from identification.records import RUN_COLUMN, STEP_COLUMNS, STEP_OPTIONAL_COLUMNS, SkippedRow

__all__ = ["check_whole", "read_steps_frame"]

_TIMES = ("t_s", "step_s")


def check_whole(checker: RowChecker, column: str) -> None:
    """Flag values of an already numeric column that are not whole numbers."""
    values = checker.frame[column].to_numpy(dtype="float64")
    frac = np.isfinite(values) & (values != np.round(values))
    checker.flag(
        frac,
        column,
        lambda: "value " + checker.frame[column].astype(str) + " is not a whole number",
        "a whole number",
    )


def run_column(frame: pd.DataFrame, path: str) -> pd.Series:
    """Return the run of each row: the ``run`` column (normalised) or the file stem."""
    if RUN_COLUMN in frame.columns:
        return normalise_series(frame[RUN_COLUMN].fillna(file_stem(path)))
    return pd.Series([file_stem(path)] * len(frame), index=frame.index, dtype=object)


def read_steps_frame(
    frame: pd.DataFrame, path: str, *, skip_bad_rows: bool = False
) -> tuple[pd.DataFrame, list[SkippedRow]]:
    """Check one step-record frame (with ``_line``) and return (steps frame, skipped rows)."""
    checker = RowChecker(path, frame, skip_bad_rows)
    checker.require_columns(STEP_COLUMNS, f"step records with columns {list(STEP_COLUMNS)}")
    checker.numeric("t_s", what="a finite time in seconds")
    checker.numeric("step_s", min_value=0.0, what="a finite duration >= 0 s")
    counts = [c for c in STEP_COLUMNS if c not in _TIMES]
    optional = [c for c in STEP_OPTIONAL_COLUMNS if c in frame.columns]
    for c in counts:
        checker.numeric(c, min_value=0.0, what="a count >= 0")
        check_whole(checker, c)
    for c in optional:
        checker.numeric(c, min_value=-1.0, what="a count >= 0, or -1 for unknown")
        check_whole(checker, c)
    frame, skipped = checker.finish()
    runs = run_column(frame, path)
    backwards = checker.time_order("t_s", runs.to_numpy(), runs, strict=False)
    if backwards.any():
        frame, more = checker.finish()
        skipped += more
        runs = runs.loc[~backwards].reset_index(drop=True)
    out = frame.drop(columns=[LINE]).copy()
    for c in (*counts, *optional):
        out[c] = out[c].astype(np.int64)
    out[RUN_COLUMN] = runs.to_numpy()
    first = [*STEP_COLUMNS, *optional]
    return out[[*first, *[c for c in out.columns if c not in first]]], skipped
