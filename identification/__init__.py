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
from identification.latency import LatencyModel
from identification.memory import MemoryModel
from identification.plant import PlantModel, identify, load_model
from identification.records import RequestRecord, SkippedRow, SourceInfo, StepRecord, Telemetry
from identification.telemetry import read_requests, read_telemetry, read_trace
from identification.workload import WorkloadModel

__all__ = [
    "ControlkitError",
    "ControlkitWarning",
    "ExportError",
    "ExtrapolationWarning",
    "FitQualityWarning",
    "InfeasibleSpecError",
    "LatencyModel",
    "MemoryModel",
    "NotFittedError",
    "PlantModel",
    "PolicyError",
    "RequestRecord",
    "SkippedRow",
    "SourceInfo",
    "StepRecord",
    "Telemetry",
    "TelemetryError",
    "UncertifiedError",
    "WorkloadModel",
    "identify",
    "load_model",
    "read_requests",
    "read_telemetry",
    "read_trace",
]
# INTEGRATION NOTE: readers (read_telemetry) and models (identify, PlantModel, load_model,
# LatencyModel, MemoryModel, WorkloadModel) are added to this module as they land.
