"""controlkit: plant models in, certified batch-size controllers and closed-loop simulation out.

It owns the runtime contract (:class:`Observation` -> :class:`BatchLimits`) that every
policy serves, so the simulator needs nothing from :mod:`policies`.
"""

from __future__ import annotations

from controlkit.contract import (
    WAITING_LIST_LIMIT,
    BatchLimits,
    BatchPolicy,
    Observation,
    SanitizedLimits,
    sanitize_limits,
)
from controlkit.policyfile import POLICY_SCHEMA, PolicyFile, load_policy_file
from identification.errors import (
    ControlkitError,
    ExportError,
    InfeasibleSpecError,
    NotFittedError,
    PolicyError,
    TelemetryError,
    UncertifiedError,
)

__all__ = [
    "POLICY_SCHEMA",
    "WAITING_LIST_LIMIT",
    "BatchLimits",
    "BatchPolicy",
    "ControlkitError",
    "ExportError",
    "InfeasibleSpecError",
    "NotFittedError",
    "Observation",
    "PolicyError",
    "PolicyFile",
    "SanitizedLimits",
    "TelemetryError",
    "UncertifiedError",
    "load_policy_file",
    "sanitize_limits",
]
