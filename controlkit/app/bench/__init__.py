"""The benchmark harness behind ``controlkit bench`` (DESIGN.md §7).

Every policy on plants x workloads x load factors, in one run, in parallel (a process pool,
or Ray), with the best static configuration in hindsight, capacities, and a Markdown
report with plots (``docs/benchmarks.md``).

>>> from controlkit.app.bench import QUICK_GRID
>>> QUICK_GRID.loads
(0.6, 1.2)
"""

from __future__ import annotations

from controlkit.app.bench.capacity import Capacity, bisect_capacity, capacity_from_curve
from controlkit.app.bench.cells import expand_cells, materialize_workload
from controlkit.app.bench.grid import (
    BEST_STATIC,
    DEFAULT_GRID,
    DEFAULT_POLICIES,
    QUICK_GRID,
    STATIC_DEFAULT,
    BenchGrid,
    CellTask,
    PlantSetup,
    SLOSpec,
)
from controlkit.app.bench.hindsight import best_static_in_hindsight
from controlkit.app.bench.report import render_markdown, write_report
from controlkit.app.bench.results import BenchResults, CellResult
from controlkit.app.bench.runner import TaskOutcome, run_tasks
from controlkit.app.bench.suite import Backend, run_bench
from controlkit.app.bench.summary import PolicySummary, check_goals, summarize

__all__ = [
    "BEST_STATIC",
    "DEFAULT_GRID",
    "DEFAULT_POLICIES",
    "QUICK_GRID",
    "STATIC_DEFAULT",
    "Backend",
    "BenchGrid",
    "BenchResults",
    "Capacity",
    "CellResult",
    "CellTask",
    "PlantSetup",
    "PolicySummary",
    "SLOSpec",
    "TaskOutcome",
    "best_static_in_hindsight",
    "bisect_capacity",
    "capacity_from_curve",
    "check_goals",
    "expand_cells",
    "materialize_workload",
    "render_markdown",
    "run_bench",
    "run_tasks",
    "summarize",
    "write_report",
]
