"""Aggregate benchmark results into the numbers the report quotes.

Definitions (also printed in ``docs/benchmarks.md``):

- **Goodput ratio of a policy against a reference, per (plant, workload)**: the sum over
  load factors of the policy's goodput divided by the same sum for the reference, using
  only loads where both cells succeeded.  Summing over loads (rather than averaging
  per-load ratios) keeps overload cells, where a reference's goodput can be 0, finite.
- **Median ratio**: the median of those per-(plant, workload) ratios.  *Non-stationary*
  medians use only the step and ramp workloads.
- **Feasible cell**: the best static in hindsight (or, without it, the static default)
  attains the SLOs for ≥ 99% of requests there.  The attainment goal is checked on
  feasible cells only.
- **Capacity**: :func:`~controlkit.app.bench.capacity.capacity_from_curve` over the loads.

Examples
--------
>>> ratio_of_sums([2.0, 4.0], [1.0, 2.0])
2.0
>>> import math; math.isnan(ratio_of_sums([0.0], [0.0]))
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from controlkit.app.bench.capacity import Capacity, capacity_from_curve
from controlkit.app.bench.grid import BEST_STATIC, CONTROLLERS, STATIC_DEFAULT, is_non_stationary
from controlkit.app.bench.results import BenchResults, CellResult

__all__ = [
    "FEASIBLE_ATTAINMENT",
    "GoalCheck",
    "PolicySummary",
    "capacities",
    "check_goals",
    "feasible",
    "pair_ratios",
    "policies_in",
    "ratio_of_sums",
    "summarize",
]

#: Attainment that makes a load "feasible" and that the controllers must reach there.
FEASIBLE_ATTAINMENT = 0.99
#: The strongest research baseline the controllers are compared with.
PANG = "pang-a1a2"


def ratio_of_sums(values: Sequence[float], reference: Sequence[float]) -> float:
    """``sum(values) / sum(reference)``; inf when only the reference is 0, NaN when both are."""
    num, den = float(np.sum(values)), float(np.sum(reference))
    if den > 0:
        return num / den
    return math.inf if num > 0 else math.nan


def policies_in(results: BenchResults) -> list[str]:
    """Policy labels present, in grid order, static-sweep labels last."""
    order = [p for p in results.grid.policies]
    seen = {c.task.policy for c in results.cells}
    main = [p for p in order if p in seen]
    extra = sorted((p for p in seen if p not in main), key=lambda s: (len(s), s))
    return main + extra


def pair_ratios(
    results: BenchResults, policy: str, reference: str, *, non_stationary_only: bool = False
) -> dict[tuple[str, str], float]:
    """Per (plant, workload) goodput ratio of ``policy`` against ``reference`` (ratio of sums)."""
    table = results.lookup()
    out: dict[tuple[str, str], float] = {}
    for plant in results.grid.plants:
        for workload in results.grid.workloads:
            if non_stationary_only and not is_non_stationary(workload):
                continue
            num, den = [], []
            for load in results.grid.loads:
                a = table.get((plant, workload, load, policy))
                b = table.get((plant, workload, load, reference))
                if a is not None and b is not None and a.ok and b.ok:
                    num.append(a.goodput_req_s)
                    den.append(b.goodput_req_s)
            if num:
                out[(plant, workload)] = ratio_of_sums(num, den)
    return out


def _median(values: Sequence[float]) -> float:
    finite_or_inf = [v for v in values if not math.isnan(v)]
    return float(np.median(finite_or_inf)) if finite_or_inf else math.nan


def feasible(results: BenchResults) -> set[tuple[str, str, float]]:
    """Operating points where the oracle static config attains ≥ 99%."""
    table = results.lookup()
    ref = BEST_STATIC if any(c.task.policy == BEST_STATIC for c in results.cells) else STATIC_DEFAULT
    out = set()
    for plant in results.grid.plants:
        for workload in results.grid.workloads:
            for load in results.grid.loads:
                cell = table.get((plant, workload, load, ref))
                if cell is not None and cell.ok and cell.slo_attainment >= FEASIBLE_ATTAINMENT:
                    out.add((plant, workload, load))
    return out


def capacities(results: BenchResults, policy: str) -> dict[tuple[str, str], Capacity]:
    """Capacity (as a load factor) of ``policy`` per (plant, workload)."""
    table = results.lookup()
    out: dict[tuple[str, str], Capacity] = {}
    for plant in results.grid.plants:
        for workload in results.grid.workloads:
            cells = [table.get((plant, workload, load, policy)) for load in results.grid.loads]
            pts = [(c.task.load, c.slo_attainment) for c in cells if c is not None and c.ok]
            if pts:
                out[(plant, workload)] = capacity_from_curve([p[0] for p in pts], [p[1] for p in pts])
    return out


@dataclass(frozen=True, slots=True)
class PolicySummary:
    """One row of the headline table (medians over plants x workloads)."""

    policy: str
    goodput_vs_static: float
    goodput_vs_best: float
    goodput_vs_best_nonstationary: float
    goodput_vs_pang: float
    attainment_median: float
    feasible_met: int
    feasible_total: int
    capacity_vs_static: float
    preemptions_total: float
    kv_usage_mean: float
    cells_failed: int
    cells_total: int


def _capacity_ratio(results: BenchResults, policy: str) -> float:
    mine, ref = capacities(results, policy), capacities(results, STATIC_DEFAULT)
    ratios = []
    for key, cap in mine.items():
        base = ref.get(key)
        if base is None:
            continue
        ratios.append(cap.load / base.load if base.load > 0 else (math.inf if cap.load > 0 else math.nan))
    return _median(ratios)


def summarize(results: BenchResults) -> list[PolicySummary]:
    """Compute the headline row of every policy present (static-sweep cells excluded)."""
    feas = feasible(results)
    has_best = any(c.task.policy == BEST_STATIC for c in results.cells)
    has_pang = any(c.task.policy == PANG for c in results.cells)
    rows = []
    for policy in policies_in(results):
        if policy.startswith("static-") and policy != STATIC_DEFAULT:
            continue
        cells: list[CellResult] = results.by_policy(policy)
        ok = [c for c in cells if c.ok]
        in_feas = [c for c in ok if c.task.key in feas]
        rows.append(
            PolicySummary(
                policy=policy,
                goodput_vs_static=_median(list(pair_ratios(results, policy, STATIC_DEFAULT).values())),
                goodput_vs_best=_median(list(pair_ratios(results, policy, BEST_STATIC).values()))
                if has_best
                else math.nan,
                goodput_vs_best_nonstationary=_median(
                    list(pair_ratios(results, policy, BEST_STATIC, non_stationary_only=True).values())
                )
                if has_best
                else math.nan,
                goodput_vs_pang=_median(list(pair_ratios(results, policy, PANG).values())) if has_pang else math.nan,
                attainment_median=_median([c.slo_attainment for c in ok]),
                feasible_met=sum(1 for c in in_feas if c.slo_attainment >= FEASIBLE_ATTAINMENT),
                feasible_total=len([k for k in feas if any(c.task.key == k for c in cells)]),
                capacity_vs_static=_capacity_ratio(results, policy),
                preemptions_total=float(np.nansum([c.metric("num_preemptions") for c in ok])) if ok else math.nan,
                kv_usage_mean=_median([c.metric("kv_usage_mean") for c in ok]),
                cells_failed=len(cells) - len(ok),
                cells_total=len(cells),
            )
        )
    return rows


@dataclass(frozen=True, slots=True)
class GoalCheck:
    """One goal of issue 4, measured for one controller."""

    policy: str
    goal: str
    target: str
    measured: str
    met: bool


def check_goals(summaries: Sequence[PolicySummary]) -> list[GoalCheck]:
    """Issue 4's goals for each controller present: measured, not adjusted."""
    out: list[GoalCheck] = []
    for s in summaries:
        if s.policy not in CONTROLLERS:
            continue
        out.append(
            GoalCheck(
                s.policy,
                "goodput vs static default (median)",
                "≥ 1.28×",
                f"{s.goodput_vs_static:.2f}×",
                s.goodput_vs_static >= 1.28,
            )
        )
        out.append(
            GoalCheck(
                s.policy,
                "goodput vs best static in hindsight, non-stationary (median)",
                "≥ 1.10×",
                f"{s.goodput_vs_best_nonstationary:.2f}×",
                s.goodput_vs_best_nonstationary >= 1.10,
            )
        )
        out.append(
            GoalCheck(
                s.policy,
                "goodput vs Pang A1+A2 (median)",
                "≥ 1.00× (match: ≥ 0.98×)",
                f"{s.goodput_vs_pang:.2f}×",
                s.goodput_vs_pang >= 0.98,
            )
        )
        out.append(
            GoalCheck(
                s.policy,
                "attainment ≥ 99% where feasible",
                "all feasible cells",
                f"{s.feasible_met}/{s.feasible_total}",
                s.feasible_met == s.feasible_total,
            )
        )
    return out
