"""identification: engine telemetry in, plant models out.

Reads sampled engine metrics (CSV with vLLM's Prometheus names, Prometheus text scrapes),
per-step records (JSONL, CSV, Parquet) and request records/traces, and fits a
:class:`PlantModel`: a latency-vs-batch model, a memory-vs-batch model and a workload model,
with fit metrics, validation and parameter uncertainty.

It depends on nothing else in the project.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:  # the real imports, for type checkers; at run time they load lazily (PEP 562)
    from identification.latency import LatencyModel
    from identification.memory import MemoryModel
    from identification.plant import PlantModel, identify, load_model
    from identification.records import RequestRecord, SkippedRow, SourceInfo, StepRecord, Telemetry
    from identification.telemetry import read_requests, read_telemetry, read_trace
    from identification.workload import WorkloadModel

#: public name -> defining module.  Loading lazily keeps ``import identification`` (and so the
#: vLLM hook and ``controlkit --help``) free of the ~2 s scipy/pandas import until a name is used.
_LAZY: dict[str, str] = {
    "LatencyModel": "identification.latency",
    "MemoryModel": "identification.memory",
    "PlantModel": "identification.plant",
    "identify": "identification.plant",
    "load_model": "identification.plant",
    "RequestRecord": "identification.records",
    "SkippedRow": "identification.records",
    "SourceInfo": "identification.records",
    "StepRecord": "identification.records",
    "Telemetry": "identification.records",
    "read_requests": "identification.telemetry",
    "read_telemetry": "identification.telemetry",
    "read_trace": "identification.telemetry",
    "WorkloadModel": "identification.workload",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'identification' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
