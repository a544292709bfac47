"""Request records and request traces (Azure 2023, Mooncake, ShareGPT lengths, Vidur).

Request records carry :data:`~identification.records.REQUEST_COLUMNS` (``num_preemptions``
optional, default 0).  A request that never got its first token or never finished (the end of a
simulation) has an empty (NaN) ``first_token_s`` / ``finish_s``.

Traces give arrivals and lengths only: their ``first_token_s`` and ``finish_s`` are NaN, and
length-only traces (ShareGPT, Vidur stats) also have NaN ``arrival_s``.  NaN is allowed only in
those timing columns.  Arrival times are in seconds from the earliest request of the file.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from identification.readers.common import LINE, VALUE_BOUNDS, RowChecker
from identification.readers.steps import check_whole, run_column
from identification.records import REQUEST_COLUMNS, RUN_COLUMN, SkippedRow

__all__ = ["TRACE_KINDS", "read_requests_frame", "read_trace_frame"]

#: Trace kinds and their (arrival column, prompt column, output column); arrival None = no arrivals.
TRACE_KINDS: dict[str, tuple[str | None, str, str]] = {
    "trace_azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
    "trace_vidur": ("arrived_at", "num_prefill_tokens", "num_decode_tokens"),
    "trace_mooncake": ("timestamp", "input_length", "output_length"),
    "trace_lengths": (None, "num_prefill_tokens", "num_decode_tokens"),
}


def _finish(frame: pd.DataFrame, path: str) -> pd.DataFrame:
    out = frame.drop(columns=[LINE]).copy()
    for c in ("prompt_tokens", "output_tokens", "num_preemptions"):
        out[c] = out[c].astype(np.int64)
    out[RUN_COLUMN] = run_column(frame, path).to_numpy()
    extra = [c for c in out.columns if c not in (*REQUEST_COLUMNS, RUN_COLUMN)]
    return out[[*REQUEST_COLUMNS, *extra, RUN_COLUMN]]


def read_requests_frame(
    frame: pd.DataFrame, path: str, *, skip_bad_rows: bool = False
) -> tuple[pd.DataFrame, list[SkippedRow]]:
    """Check request records (with ``_line``); return (requests frame, skipped rows)."""
    checker = RowChecker(path, frame, skip_bad_rows)
    required = [c for c in REQUEST_COLUMNS if c != "num_preemptions"]
    checker.require_columns(required, f"request records with columns {list(REQUEST_COLUMNS)}")
    if "num_preemptions" not in frame.columns:
        checker.frame["num_preemptions"] = 0
    checker.numeric("arrival_s", what="a finite time in seconds")
    for c in ("first_token_s", "finish_s"):  # empty/null: the request never got there (unfinished)
        checker.numeric(c, what="a finite time in seconds, or empty if it never happened", allow_missing=True)
    for c in ("prompt_tokens", "output_tokens", "num_preemptions"):
        checker.numeric(c, min_value=0.0, what="a token/event count >= 0")
        check_whole(checker, c)
    f = checker.frame
    early = (f["first_token_s"] < f["arrival_s"]).to_numpy()
    checker.flag(
        early,
        "first_token_s",
        lambda: (
            "first_token_s "
            + f["first_token_s"].astype(str)
            + " is before arrival_s "
            + f["arrival_s"].astype(str)
        ),
        "arrival_s <= first_token_s <= finish_s",
    )
    late = (f["finish_s"] < f["first_token_s"]).to_numpy()
    checker.flag(
        late,
        "finish_s",
        lambda: (
            "finish_s "
            + f["finish_s"].astype(str)
            + " is before first_token_s "
            + f["first_token_s"].astype(str)
        ),
        "arrival_s <= first_token_s <= finish_s",
    )
    orphan = (f["first_token_s"].isna() & f["finish_s"].notna()).to_numpy()
    checker.flag(
        orphan,
        "first_token_s",
        "empty first_token_s but finish_s is set",
        "a first-token time for every finished request",
    )
    frame, skipped = checker.finish()
    return _finish(frame, path), skipped


def read_trace_frame(
    kind: str, frame: pd.DataFrame, path: str, *, skip_bad_rows: bool = False
) -> tuple[pd.DataFrame, list[SkippedRow]]:
    """Check a request trace of kind ``trace_*`` (with ``_line``); return (requests frame, skipped)."""
    arrival, prompt, output = TRACE_KINDS[kind]
    checker = RowChecker(path, frame, skip_bad_rows)
    checker.require_columns([c for c in (arrival, prompt, output) if c is not None], f"a {kind[6:]} trace")
    if arrival == "TIMESTAMP":
        stamps = pd.to_datetime(frame[arrival], format="ISO8601", errors="coerce")
        checker.flag(
            stamps.isna().to_numpy(),
            arrival,
            lambda: "unparsable timestamp " + frame[arrival].astype(str).map(repr),
            "a date-time like 2023-11-16 18:15:46.6805900",
        )
        seconds = (stamps - stamps.min()).dt.total_seconds()
    elif arrival is not None:
        seconds = checker.numeric(arrival, min_value=0.0, what="a finite arrival time >= 0", max_value=1e14)
        if arrival == "timestamp":
            seconds = seconds / 1000.0  # Mooncake timestamps are milliseconds
        seconds = seconds - seconds.min()
    else:
        seconds = pd.Series(np.nan, index=frame.index)
    checker.numeric(prompt, min_value=0.0, what="a token count >= 0", max_value=VALUE_BOUNDS["prompt_tokens"])
    check_whole(checker, prompt)
    checker.numeric(output, min_value=0.0, what="a token count >= 0", max_value=VALUE_BOUNDS["output_tokens"])
    check_whole(checker, output)
    checker.frame["_arrival"] = seconds.to_numpy(dtype="float64")
    frame, skipped = checker.finish()
    out = pd.DataFrame(
        {
            "arrival_s": frame["_arrival"].to_numpy(dtype="float64"),
            "first_token_s": np.nan,
            "finish_s": np.nan,
            "prompt_tokens": frame[prompt].to_numpy(),
            "output_tokens": frame[output].to_numpy(),
            "num_preemptions": 0,
            LINE: frame[LINE].to_numpy(),
        }
    )
    return _finish(out, path), skipped
