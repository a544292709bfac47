"""Statistics of a protocol run: per-cell means with 95% intervals, and the paired headline.

- A **cell** is (plant, workload, load, policy); its samples are the hold-out seeds.
  :func:`cell_stats` gives the mean of each metric and a Student-t 95% interval of the mean
  goodput.
- The **headline ratio** of a policy against a reference is, per operating point
  (plant, workload, load) in the goal loads, the ratio of their mean goodputs over the same
  (paired) seeds; the headline is the median of those ratios, and its 95% interval a
  percentile bootstrap that resamples the seeds of every point (paired: both policies keep
  the same seeds) and recomputes the median (:func:`median_ratio`).

Examples
--------
>>> lo, hi = t_interval([1.0, 2.0, 3.0])
>>> round(lo, 3), round(hi, 3)
(-0.484, 4.484)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

from controlkit.app.bench.results import CellResult

__all__ = ["MEDIAN_METRICS", "CellStats", "Ratio", "cell_stats", "median_ratio", "t_interval"]

#: Metrics averaged over seeds in every cell.
MEAN_METRICS = ("goodput_req_s", "slo_attainment", "rejection_rate", "timeout_rate", "ttft_all_p99_s")
MEDIAN_METRICS = MEAN_METRICS
Point = tuple[str, str, float]


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean (NaN with fewer than two values)."""
    x = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    half = float(sps.t.ppf(0.5 + level / 2.0, len(x) - 1)) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return float(x.mean()) - half, float(x.mean()) + half


@dataclass(frozen=True, slots=True)
class CellStats:
    """One cell over its seeds: the mean of every metric, the goodput interval, the seed count."""

    mean: Mapping[str, float]
    goodput_ci: tuple[float, float]
    seeds: int
    failed: int
    max_ttft_all_p99_s: float


def cell_stats(cells: Iterable[CellResult]) -> dict[tuple[str, str, float, str], CellStats]:
    """Group cells by (plant, workload, load, policy) and summarise each over its seeds."""
    groups: dict[tuple[str, str, float, str], list[CellResult]] = {}
    for c in cells:
        groups.setdefault((*c.task.key, c.task.policy), []).append(c)
    out: dict[tuple[str, str, float, str], CellStats] = {}
    for key, group in groups.items():
        ok = [c for c in group if c.ok]
        mean = {m: float(np.mean([c.metric(m) for c in ok])) if ok else math.nan for m in MEAN_METRICS}
        p99 = [c.metric("ttft_all_p99_s") for c in ok]
        out[key] = CellStats(
            mean, t_interval([c.goodput_req_s for c in ok]), len(ok), len(group) - len(ok),
            max(p99) if p99 else math.nan,
        )
    return out


@dataclass(frozen=True, slots=True)
class Ratio:
    """A median ratio with its 95% bootstrap interval, and the per-point ratios behind it."""

    median: float
    lo: float
    hi: float
    points: Mapping[Point, float]

    def render(self) -> str:
        """``"1.12× [1.05, 1.20]"`` (or ``"n/a"``)."""
        if not math.isfinite(self.median):
            return "n/a"
        return f"{self.median:.2f}× [{self.lo:.2f}, {self.hi:.2f}]"


def _by_seed(cells: Iterable[CellResult], policy: str, loads: tuple[float, float]) -> dict[Point, dict[int, float]]:
    out: dict[Point, dict[int, float]] = {}
    for c in cells:
        if c.task.policy == policy and loads[0] <= c.task.load <= loads[1] and c.ok:
            out.setdefault(c.task.key, {})[c.task.seed] = c.goodput_req_s
    return out


def median_ratio(
    cells: Sequence[CellResult],
    policy: str,
    reference: str,
    *,
    loads: tuple[float, float],
    boot: int = 2000,
    seed: int = 0,
) -> Ratio:
    """Median over operating points of ``mean goodput(policy) / mean goodput(reference)``, with a bootstrap CI."""
    a, b = _by_seed(cells, policy, loads), _by_seed(cells, reference, loads)
    points: list[tuple[Point, np.ndarray, np.ndarray]] = []
    for key in sorted(set(a) & set(b)):
        seeds = sorted(set(a[key]) & set(b[key]))
        if seeds:
            points.append((key, np.asarray([a[key][s] for s in seeds]), np.asarray([b[key][s] for s in seeds])))
    if not points:
        return Ratio(math.nan, math.nan, math.nan, {})

    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        den = float(y.mean())
        return float(x.mean()) / den if den > 0 else (math.inf if x.mean() > 0 else 1.0)

    per_point = {key: ratio(x, y) for key, x, y in points}
    rng = np.random.default_rng(seed)
    meds = np.empty(boot)
    for i in range(boot):
        rs = []
        for _, x, y in points:
            idx = rng.integers(0, len(x), size=len(x))
            rs.append(ratio(x[idx], y[idx]))
        meds[i] = float(np.median(rs))
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return Ratio(float(np.median(list(per_point.values()))), float(lo), float(hi), per_point)
