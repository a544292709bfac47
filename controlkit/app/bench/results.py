"""Benchmark results: one :class:`CellResult` per simulated (or derived) cell, and the run.

A result keeps its :class:`~controlkit.app.bench.grid.CellTask`, the simulator's metrics as a
flat ``name -> number`` mapping (``SimResult.metrics.to_dict()``), and, when the cell
failed, the error.  :class:`BenchResults` holds a whole run and round-trips through JSON
(``--json results.json``), so a report can be regenerated without re-simulating.

Examples
--------
>>> from controlkit.app.bench.grid import CellTask
>>> task = CellTask("p", "w", 1.0, "w", 1.0, "static-default", "static", 0.05, 2.0, 256, 10, 60.0, 0)
>>> CellResult(task, {"goodput_req_s": 2.5}).goodput_req_s
2.5
>>> CellResult(task, {}, error="boom").ok
False
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from controlkit.app.bench.grid import BenchGrid, CellTask, PlantSetup, SLOSpec
from identification.errors import ControlkitError

__all__ = ["RESULTS_SCHEMA", "BenchResults", "CellResult"]

RESULTS_SCHEMA = "controlkit.bench/1"


@dataclass(frozen=True, slots=True)
class CellResult:
    """The outcome of one cell.

    Parameters
    ----------
    task
        What was run.
    metrics
        The simulator's metrics (empty when the cell failed).
    error
        ``"Type: message"`` when the cell failed, else empty.
    traceback_tail
        The end of the traceback of a failure.
    wall_s
        Wall-clock seconds the cell took.
    chosen
        For derived cells (best static in hindsight), the label of the cell chosen.
    """

    task: CellTask
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    traceback_tail: str = ""
    wall_s: float = 0.0
    chosen: str = ""

    @property
    def ok(self) -> bool:
        """True when the cell simulated without error."""
        return not self.error

    def metric(self, name: str) -> float:
        """Return a metric by name; NaN when the cell failed or the metric is absent."""
        value = self.metrics.get(name)
        return float(value) if isinstance(value, int | float) else math.nan

    @property
    def goodput_req_s(self) -> float:
        """Requests per second that met both SLOs."""
        return self.metric("goodput_req_s")

    @property
    def slo_attainment(self) -> float:
        """Fraction of requests that met both SLOs."""
        return self.metric("slo_attainment")

    @property
    def throughput_tok_s(self) -> float:
        """Output tokens per second."""
        return self.metric("throughput_tok_s")


def _task_from_dict(d: Mapping[str, Any]) -> CellTask:
    return CellTask(**dict(d))


@dataclass(frozen=True)
class BenchResults:
    """A whole benchmark run.

    Parameters
    ----------
    grid
        The grid that was run.
    setups
        Plant name -> its prepared setup (SLOs, nominal rates, specs, design notes).
    cells
        Every cell result, simulated and derived, in grid order.
    wall_s
        Wall-clock seconds of the whole run.
    executor
        How it ran (``"serial"``, ``"process x2"``, ``"ray local"``).
    command
        The command line that produced it (for the report).
    """

    grid: BenchGrid
    setups: Mapping[str, PlantSetup]
    cells: Sequence[CellResult]
    wall_s: float = 0.0
    executor: str = "serial"
    command: str = ""

    def by_policy(self, policy: str) -> list[CellResult]:
        """Return the cells of one policy label."""
        return [c for c in self.cells if c.task.policy == policy]

    def lookup(self) -> dict[tuple[str, str, float, str], CellResult]:
        """``(plant, workload, load, policy) -> result``."""
        return {(*c.task.key, c.task.policy): c for c in self.cells}

    @property
    def failures(self) -> list[CellResult]:
        """The cells that failed."""
        return [c for c in self.cells if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable document (schema ``controlkit.bench/1``)."""
        grid = asdict(self.grid)
        return {
            "schema": RESULTS_SCHEMA,
            "grid": grid,
            "setups": {k: asdict(v) for k, v in self.setups.items()},
            "cells": [
                {
                    "task": asdict(c.task),
                    "metrics": dict(c.metrics),
                    "error": c.error,
                    "traceback_tail": c.traceback_tail,
                    "wall_s": c.wall_s,
                    "chosen": c.chosen,
                }
                for c in self.cells
            ],
            "wall_s": self.wall_s,
            "executor": self.executor,
            "command": self.command,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> BenchResults:
        """Rebuild from :meth:`to_dict` output."""
        if doc.get("schema") != RESULTS_SCHEMA:
            raise ControlkitError(f"not a {RESULTS_SCHEMA} document (schema={doc.get('schema')!r})")
        g = dict(doc["grid"])
        g["slo"] = SLOSpec(**g["slo"])
        for key in ("plants", "workloads", "loads", "policies", "static_caps", "static_token_budgets"):
            g[key] = tuple(g[key])
        cells = [
            CellResult(
                _task_from_dict(c["task"]),
                c["metrics"],
                c["error"],
                c["traceback_tail"],
                c["wall_s"],
                c["chosen"],
            )
            for c in doc["cells"]
        ]
        return cls(
            grid=BenchGrid(**g),
            setups={k: PlantSetup(**_none_to_nan(v)) for k, v in doc["setups"].items()},
            cells=cells,
            wall_s=float(doc["wall_s"]),
            executor=str(doc["executor"]),
            command=str(doc["command"]),
        )

    def save_json(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON (NaN written as null)."""
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(_nan_to_none(self.to_dict()), indent=1, sort_keys=False) + "\n")

    @classmethod
    def load_json(cls, path: str | Path) -> BenchResults:
        """Read a file written by :meth:`save_json`."""
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ControlkitError(f"{path}: cannot read benchmark results: {exc}") from exc
        return cls.from_dict(doc)


def _none_to_nan(setup: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(setup)
    for key in ("tpot_slo_s", "ttft_slo_s", "batch1_step_s"):
        if out.get(key) is None:
            out[key] = math.nan
    return out


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    return obj
