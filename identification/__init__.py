"""identification: engine telemetry in, plant models out.

Reads sampled engine metrics (CSV with vLLM's Prometheus names, Prometheus text scrapes),
per-step records (JSONL, CSV, Parquet) and request records/traces, and fits a
:class:`PlantModel`: a latency-vs-batch model, a memory-vs-batch model and a workload model,
with fit metrics, validation and parameter uncertainty.

It depends on nothing else in the project.
"""

from __future__ import annotations

from identification.errors import (
    ControlkitError,
    ControlkitWarning,
    ExportError,
    ExtrapolationWarning,
    FitQualityWarning,
    InfeasibleSpecError,
    NotFittedError,
    PolicyError,
    TelemetryError,
    UncertifiedError,
)
from identification.records import RequestRecord, SkippedRow, SourceInfo, StepRecord, Telemetry
from identification.telemetry import read_requests, read_telemetry, read_trace

__all__ = [
    "ControlkitError",
    "ControlkitWarning",
    "ExportError",
    "ExtrapolationWarning",
    "FitQualityWarning",
    "InfeasibleSpecError",
    "NotFittedError",
    "PolicyError",
    "RequestRecord",
    "SkippedRow",
    "SourceInfo",
    "StepRecord",
    "Telemetry",
    "TelemetryError",
    "UncertifiedError",
    "read_requests",
    "read_telemetry",
    "read_trace",
]
# INTEGRATION NOTE: readers (read_telemetry) and models (identify, PlantModel, load_model,
# LatencyModel, MemoryModel, WorkloadModel) are added to this module as they land.
