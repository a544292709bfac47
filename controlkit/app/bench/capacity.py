"""Capacity: the largest load at which a policy still attains the SLOs for >= 90% of requests.

Two estimators share one result type, :class:`Capacity`:

- :func:`capacity_from_curve` reads it off the benchmark grid: it walks the loads upward,
  stops at the first load whose attainment falls below the threshold, and interpolates
  linearly between that load and the last passing one.  It never credits a load above a
  failure, even if attainment recovers there (conservative).
- :func:`bisect_capacity` refines it by bisection on any ``load -> attainment`` function
  (one simulation per evaluation), as an optional, more expensive mode.

When even the lightest load fails the capacity is *censored below* (reported as 0 with
``censored="below"``); when the heaviest load passes it is *censored above* (reported as
the heaviest load, ``censored="above"``, meaning "at least").

Examples
--------
>>> capacity_from_curve([0.5, 1.0, 1.5], [1.0, 0.95, 0.5]).load
1.0555...
>>> capacity_from_curve([0.5, 1.0], [1.0, 0.99]).censored
'above'
>>> round(bisect_capacity(lambda x: 1.0 if x < 0.7 else 0.0, 0.1, 2.0, tol=1e-3).load, 2)
0.7
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from identification.errors import ControlkitError

__all__ = ["ATTAINMENT_THRESHOLD", "Capacity", "bisect_capacity", "capacity_from_curve"]

#: DESIGN.md §7: capacity is the largest rate with at least 90% SLO attainment.
ATTAINMENT_THRESHOLD = 0.9


@dataclass(frozen=True, slots=True)
class Capacity:
    """A capacity estimate.

    Parameters
    ----------
    load
        The capacity as a load factor (multiply by the nominal rate for requests/s).
    censored
        ``""`` (bracketed), ``"below"`` (fails at the lightest load tried: capacity is below
        it) or ``"above"`` (passes at the heaviest load tried: capacity is at least this).
    evaluations
        Loads evaluated to reach it.
    lightest
        The lightest load tried (what a ``"below"`` capacity is below).
    """

    load: float
    censored: str = ""
    evaluations: int = 0
    lightest: float = 0.0

    def render(self, scale: float = 1.0, digits: int = 2) -> str:
        """Text for a table: ``"1.05"``, ``"≥1.25"``, ``"<0.50"`` (times ``scale``)."""
        value = f"{self.load * scale:.{digits}f}"
        if self.censored == "above":
            return f"≥{value}"
        if self.censored == "below":
            return f"<{self.lightest * scale:.{digits}f}"
        return value


def capacity_from_curve(
    loads: Sequence[float], attainments: Sequence[float], *, threshold: float = ATTAINMENT_THRESHOLD
) -> Capacity:
    """Capacity read off a grid of (load, attainment) points.

    Parameters
    ----------
    loads
        Load factors (any order, no duplicates).
    attainments
        SLO attainment in [0, 1] at each load; NaN counts as a failure.
    threshold
        Minimum attainment (default 0.9).

    Raises
    ------
    ControlkitError
        Empty or mismatched inputs.
    """
    if len(loads) == 0 or len(loads) != len(attainments):
        raise ControlkitError(f"need equal, non-empty loads and attainments, got {len(loads)} and {len(attainments)}")
    points = sorted(zip(loads, attainments, strict=True))
    last_load, last_att = None, None
    for load, att in points:
        passed = att >= threshold  # NaN compares False: a failure
        if not passed:
            if last_load is None or last_att is None:
                return Capacity(0.0, "below", len(points), lightest=load)
            frac = (last_att - threshold) / (last_att - att) if att == att and last_att > att else 0.0
            return Capacity(last_load + frac * (load - last_load), "", len(points))
        last_load, last_att = load, att
    assert last_load is not None
    return Capacity(last_load, "above", len(points))


def bisect_capacity(
    evaluate: Callable[[float], float],
    lo: float,
    hi: float,
    *,
    threshold: float = ATTAINMENT_THRESHOLD,
    tol: float = 0.02,
    max_evaluations: int = 12,
) -> Capacity:
    """Capacity by bisection on ``evaluate(load) -> attainment``, assumed non-increasing.

    Parameters
    ----------
    evaluate
        Runs one simulation at a load factor and returns its attainment.
    lo, hi
        The bracket to search (``0 < lo < hi``).
    threshold
        Minimum attainment.
    tol
        Stop when the bracket is narrower than ``tol`` (relative to ``hi``).
    max_evaluations
        Hard cap on simulations.
    """
    if not 0 < lo < hi:
        raise ControlkitError(f"bisection bracket must satisfy 0 < lo < hi, got lo={lo}, hi={hi}")
    n = 0
    if not evaluate(lo) >= threshold:
        return Capacity(0.0, "below", 1, lightest=lo)
    n += 1
    if evaluate(hi) >= threshold:
        return Capacity(hi, "above", n + 1)
    n += 1
    while (hi - lo) > tol * hi and n < max_evaluations:
        mid = 0.5 * (lo + hi)
        n += 1
        if evaluate(mid) >= threshold:
            lo = mid
        else:
            hi = mid
    return Capacity(lo, "", n)
