"""Run a whole benchmark: prepare every plant, run every cell, derive the hindsight baselines.

:func:`run_bench` is what ``controlkit bench`` calls.  The backend is injected (anything
with ``prepare_plant`` and ``run_cell``), so the harness can be tested with a fake
simulator; the default is :class:`~controlkit.app.bench.backend.SimBackend`.

A plant whose preparation fails, or a cell that raises, is recorded as failed and the run
goes on: the report lists every failure.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import Protocol

from controlkit.app.bench.cells import expand_cells
from controlkit.app.bench.grid import BEST_STATIC, BenchGrid, CellTask, PlantSetup
from controlkit.app.bench.hindsight import best_static_in_hindsight, static_default_from_sweep
from controlkit.app.bench.results import BenchResults, CellResult
from controlkit.app.bench.runner import ProgressCallback, TaskOutcome, ray_session, run_tasks

__all__ = ["Backend", "run_bench"]


class Backend(Protocol):
    """What the suite needs from a simulator (both methods run in workers; keep them picklable)."""

    def prepare_plant(self, request: tuple[str, BenchGrid]) -> PlantSetup:
        """Prepare one plant: SLOs, nominal rates, concrete policy specs."""
        ...

    def run_cell(self, task: CellTask) -> Mapping[str, float]:
        """Simulate one cell and return its metrics."""
        ...


def _failed_setup(plant: str, grid: BenchGrid, error: str) -> PlantSetup:
    labels = {label: f"plant preparation failed: {error}" for label in grid.policies}
    return PlantSetup(
        plant=plant,
        tpot_slo_s=math.nan,
        ttft_slo_s=math.nan,
        batch1_step_s=math.nan,
        default_cap=max(grid.static_caps),
        max_num_seqs=max(grid.static_caps),
        nominal_rate_req_s={},
        native_rate_req_s={},
        specs={},
        errors=labels,
        notes={"prepare_error": error},
    )


def _executor_name(jobs: int, ray_address: str | None) -> str:
    if ray_address is not None:
        return f"ray {ray_address}"
    return "serial" if jobs == 1 else f"process pool x{jobs}"


def run_bench(
    grid: BenchGrid,
    *,
    backend: Backend | None = None,
    jobs: int = 1,
    ray_address: str | None = None,
    progress: bool | ProgressCallback = False,
    command: str = "",
) -> BenchResults:
    """Run ``grid`` and return every cell's result, including the derived baselines.

    Parameters
    ----------
    grid
        What to run.
    backend
        The simulator backend (default: :class:`~controlkit.app.bench.backend.SimBackend`).
    jobs
        Parallel workers (processes, or Ray CPUs for ``ray_address="local"``).
    ray_address
        Run on Ray at this address; ``"local"`` starts a local instance.
    progress
        ``True`` for rich progress bars, or a ``(done, total)`` callback.
    command
        The command line, recorded in the report.
    """
    if backend is None:
        from controlkit.app.bench.backend import SimBackend

        backend = SimBackend()
    start = time.perf_counter()
    with ray_session(ray_address, jobs):
        prepared = run_tasks(
            backend.prepare_plant,
            [(p, grid) for p in grid.plants],
            jobs=jobs,
            ray_address=ray_address,
            progress=progress,
            description="prepare plants",
        )
        setups: dict[str, PlantSetup] = {}
        for plant, outcome in zip(grid.plants, prepared, strict=True):
            if outcome.ok and outcome.value is not None:
                setups[plant] = outcome.value
            else:
                setups[plant] = _failed_setup(plant, grid, outcome.error or "no setup returned")
        tasks = expand_cells(grid, setups)
        ran = run_tasks(
            backend.run_cell,
            [t for t in tasks if not t.error],
            jobs=jobs,
            ray_address=ray_address,
            progress=progress,
            description="simulate cells",
        )
    done = iter(ran)
    outcomes: list[TaskOutcome[Mapping[str, float]]] = [
        TaskOutcome(None, t.error) if t.error else next(done) for t in tasks
    ]
    cells = [
        CellResult(task, dict(o.value) if o.ok and o.value is not None else {}, o.error, o.traceback_tail, o.wall_s)
        for task, o in zip(tasks, outcomes, strict=True)
    ]
    derived = static_default_from_sweep(cells, setups)
    if BEST_STATIC in grid.policies:
        derived += best_static_in_hindsight(cells)
    return BenchResults(
        grid=grid,
        setups=setups,
        cells=[*cells, *derived],
        wall_s=time.perf_counter() - start,
        executor=_executor_name(jobs, ray_address),
        command=command,
    )
