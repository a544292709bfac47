"""The best static configuration in hindsight, and the static default taken from the sweep.

vLLM's ``auto_tune`` grid-searches the engine's static limits against a fixed workload and
keeps the configuration with the best result under a latency constraint.  We do the same,
per operating point (plant, workload, load): among the static-sweep cells ``static-<cap>``
we keep the one with the highest goodput (requests/s meeting both SLOs), breaking ties by
attainment, then by the *smaller* cap (less memory held).  That choice uses the outcome it
is judged on, so it is an oracle no deployable static config can beat at that point; on a
non-stationary workload it is still one cap for the whole trace.

Examples
--------
>>> parse_static_cap("static-128")
128
>>> parse_static_cap("static-64-t512")
64
>>> parse_static_cap("pang-a1") is None
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

from controlkit.app.bench.grid import BEST_STATIC, STATIC_DEFAULT, PlantSetup, static_label
from controlkit.app.bench.results import CellResult

__all__ = ["best_static_in_hindsight", "parse_static_cap", "static_default_from_sweep"]


def parse_static_cap(label: str) -> int | None:
    """Return the cap of a static-sweep label (``"static-64"``, ``"static-64-t512"`` -> 64), else ``None``."""
    prefix, _, tail = label.partition("-")
    cap, _, budget = tail.partition("-t")
    if prefix == "static" and cap.isdigit() and (not budget or budget.isdigit()):
        return int(cap)
    return None


def _rank(cell: CellResult) -> tuple[float, float, float]:
    def finite(x: float) -> float:
        return x if math.isfinite(x) else -math.inf

    cap = parse_static_cap(cell.task.policy)
    return (finite(cell.goodput_req_s), finite(cell.slo_attainment), -(cap if cap is not None else 0))


def best_static_in_hindsight(cells: Sequence[CellResult]) -> list[CellResult]:
    """One derived ``best-static`` cell per operating point that has static-sweep cells.

    The derived cell copies the metrics of the winning sweep cell and names it in
    ``chosen``.  When every sweep cell of a point failed, the derived cell fails too, with
    the first error.
    """
    groups: dict[tuple[str, str, float], list[CellResult]] = {}
    for cell in cells:
        if parse_static_cap(cell.task.policy) is not None:
            groups.setdefault(cell.task.key, []).append(cell)
    derived: list[CellResult] = []
    for sweep in groups.values():
        ok = [c for c in sweep if c.ok]
        template = sweep[0]
        if not ok:
            derived.append(
                replace(
                    template,
                    task=replace(template.task, policy=BEST_STATIC, spec=""),
                    metrics={},
                    error=f"every static-sweep cell failed; first: {template.error}",
                )
            )
            continue
        best = max(ok, key=_rank)
        derived.append(
            replace(
                best,
                task=replace(best.task, policy=BEST_STATIC),
                chosen=best.task.policy,
                wall_s=sum(c.wall_s for c in sweep),
            )
        )
    return derived


def static_default_from_sweep(cells: Sequence[CellResult], setups: Mapping[str, PlantSetup]) -> list[CellResult]:
    """``static-default`` cells aliased from the sweep cell with each plant's default cap.

    The simulator is deterministic for a seed, so re-running the same cap would give the
    same numbers; aliasing saves the time.
    """
    out: list[CellResult] = []
    for cell in cells:
        setup = setups.get(cell.task.plant)
        if setup is not None and cell.task.policy == static_label(setup.default_cap):
            out.append(replace(cell, task=replace(cell.task, policy=STATIC_DEFAULT), chosen=cell.task.policy))
    return out
