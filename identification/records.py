"""Telemetry records: the data contract between every reader and every model (DESIGN.md §3).

Two record kinds come out of the readers:

* **step records**, one per engine iteration (our simulator and our vLLM hook write these), and
* **sampled metrics**, Prometheus-style gauges and counters scraped every N seconds
  (vLLM's ``/metrics``; the H100 logs in ``shared/data/bca_memory_gap``),

plus **request records** (arrival, first token, finish, lengths) for workload models.

Single records are frozen, slotted dataclasses (:class:`StepRecord`, :class:`RequestRecord`).
Bulk telemetry is columnar: a :class:`Telemetry` holds one :class:`pandas.DataFrame` per
record kind with the canonical column names below, plus a ``run`` column that names the run
each row belongs to (counters are never differenced across runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pandas as pd

__all__ = [
    "REQUEST_COLUMNS",
    "RUN_COLUMN",
    "SAMPLE_COLUMNS",
    "SAMPLE_COUNTER_COLUMNS",
    "STEP_COLUMNS",
    "STEP_OPTIONAL_COLUMNS",
    "RequestRecord",
    "SkippedRow",
    "SourceInfo",
    "StepRecord",
    "Telemetry",
]

#: Column naming the run a row belongs to.  Values are strings such as
#: ``"model=llama-2-7b,max_num_seqs=64"`` or the source file name.
RUN_COLUMN = "run"

#: Required step-record columns, in schema order.
STEP_COLUMNS: tuple[str, ...] = (
    "t_s",
    "step_s",
    "num_running",
    "num_waiting",
    "num_prefill_tokens",
    "num_decode_tokens",
    "kv_blocks_used",
    "kv_blocks_total",
    "num_preempted",
)
#: Optional step-record columns (present where the writer knows them).
STEP_OPTIONAL_COLUMNS: tuple[str, ...] = ("num_context_tokens", "max_active_seqs", "max_batched_tokens")

#: Canonical sampled-metric columns.  ``time_s`` is required; the others are optional, and
#: readers map vLLM's names (with or without ``vllm:``, with or without ``_total``, old and
#: new spellings) onto these.
SAMPLE_COLUMNS: tuple[str, ...] = (
    "time_s",
    "num_requests_running",
    "num_requests_waiting",
    "kv_cache_usage_perc",
    "num_preemptions_total",
    "request_success_total",
    "prompt_tokens_total",
    "generation_tokens_total",
    "scheduler_time_total_s",
    "model_forward_time_total_s",
    "num_gpu_blocks",
)
#: The cumulative counters among :data:`SAMPLE_COLUMNS` (differenced within a run only).
SAMPLE_COUNTER_COLUMNS: tuple[str, ...] = (
    "num_preemptions_total",
    "request_success_total",
    "prompt_tokens_total",
    "generation_tokens_total",
    "scheduler_time_total_s",
    "model_forward_time_total_s",
)

#: Request-record columns.
REQUEST_COLUMNS: tuple[str, ...] = (
    "arrival_s",
    "first_token_s",
    "finish_s",
    "prompt_tokens",
    "output_tokens",
    "num_preemptions",
)


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One engine iteration, as written by the simulator and the vLLM hook.

    Parameters
    ----------
    t_s
        Time at the start of the step, seconds since the log began.
    step_s
        Duration of the step, seconds.
    num_running, num_waiting
        Requests running (in the batch) and waiting after scheduling.
    num_prefill_tokens, num_decode_tokens
        Tokens scheduled this step for prefill and for decode.
    kv_blocks_used, kv_blocks_total
        KV-cache blocks in use and the capacity, in blocks.
    num_preempted
        Requests preempted in this step.
    num_context_tokens
        Context tokens held by the running requests (-1 when unknown).
    max_active_seqs, max_batched_tokens
        The limits in force during the step (-1 when unknown).
    """

    t_s: float
    step_s: float
    num_running: int
    num_waiting: int
    num_prefill_tokens: int
    num_decode_tokens: int
    kv_blocks_used: int
    kv_blocks_total: int
    num_preempted: int
    num_context_tokens: int = -1
    max_active_seqs: int = -1
    max_batched_tokens: int = -1


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request's life: arrival, first token, finish (seconds) and its lengths (tokens)."""

    arrival_s: float
    first_token_s: float
    finish_s: float
    prompt_tokens: int
    output_tokens: int
    num_preemptions: int = 0


@dataclass(frozen=True, slots=True)
class SourceInfo:
    """Provenance of one input file: what it was, how many rows were read and the time span."""

    path: str
    kind: str
    rows: int
    t_start_s: float = 0.0
    t_end_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SkippedRow:
    """A row skipped under ``skip_bad_rows=True``: where it was and why."""

    path: str
    line: int
    field: str
    reason: str


def _empty(columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})


@dataclass(frozen=True)
class Telemetry:
    """Everything read from one or more telemetry sources, columnar.

    Attributes
    ----------
    steps
        Step records: :data:`STEP_COLUMNS` (+ optional columns) + ``run``.
    samples
        Sampled metrics: ``time_s`` and any of :data:`SAMPLE_COLUMNS` + ``run``, plus any
        grouping columns of the source (e.g. ``model``, ``max_num_seqs``) kept for selection.
    requests
        Request records: :data:`REQUEST_COLUMNS` + ``run``.
    sources
        One :class:`SourceInfo` per file read.
    skipped
        Rows skipped under ``skip_bad_rows=True`` (never silently).
    meta
        Engine, GPU and model names where a source says them.
    runs
        Per-run facts from a run index file (one row per run: its key columns, ``run``,
        ``num_gpu_blocks``, measured benchmark results such as ``median_tpot_ms``); empty if none.
    """

    steps: pd.DataFrame = field(default_factory=lambda: _empty((*STEP_COLUMNS, RUN_COLUMN)))
    samples: pd.DataFrame = field(default_factory=lambda: _empty(("time_s", RUN_COLUMN)))
    requests: pd.DataFrame = field(default_factory=lambda: _empty((*REQUEST_COLUMNS, RUN_COLUMN)))
    sources: tuple[SourceInfo, ...] = ()
    skipped: tuple[SkippedRow, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)
    runs: pd.DataFrame = field(default_factory=lambda: _empty((RUN_COLUMN,)))

    @property
    def is_empty(self) -> bool:
        """True when no step, sample or request rows were read."""
        return len(self.steps) == 0 and len(self.samples) == 0 and len(self.requests) == 0

    @classmethod
    def from_step_records(cls, records: list[StepRecord], run: str = "run0") -> Telemetry:
        """Build telemetry from in-memory :class:`StepRecord` objects (tests, simulators)."""
        cols = (*STEP_COLUMNS, *STEP_OPTIONAL_COLUMNS)
        frame = pd.DataFrame({c: [getattr(r, c) for r in records] for c in cols})
        frame[RUN_COLUMN] = run
        return cls(steps=frame, sources=(SourceInfo("<memory>", "steps", len(records)),))
