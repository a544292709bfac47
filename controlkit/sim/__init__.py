"""Closed-loop simulator of a vLLM-style continuous-batching engine (DESIGN.md §6).

>>> from controlkit.sim import SLO
>>> SLO(ttft_s=1.0, tpot_s=0.05).tpot_s
0.05
"""

from __future__ import annotations

from controlkit.sim.catalog import load_plant
from controlkit.sim.engine import WAITING_LIST_LIMIT, simulate
from controlkit.sim.metrics import SLO, RequestOutcomes, SimMetrics, SimResult, default_slo
from controlkit.sim.plants import Plant
from controlkit.sim.telemetry import read_steps, write_requests, write_steps
from controlkit.sim.workloads import Workload, load_workload

__all__ = [
    "SLO",
    "WAITING_LIST_LIMIT",
    "Plant",
    "RequestOutcomes",
    "SimMetrics",
    "SimResult",
    "Workload",
    "default_slo",
    "load_plant",
    "load_workload",
    "read_steps",
    "simulate",
    "write_requests",
    "write_steps",
]
