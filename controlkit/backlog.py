"""The TTFT / backlog supervisor: it moves the TPOT setpoint, with hysteresis, as the queue builds.

Three modes, each a constant setpoint for the inner loop (so each mode inherits the inner
loop's certificate; the setpoint only changes after a dwell of ``dwell_decisions``):

``normal``
    setpoint ``target_fraction * tpot_slo`` (TPOT headroom kept for noise).
``ttft``
    TTFT pressure (the oldest wait, or the largest TTFT just observed) above
    ``bind_fraction * ttft_slo``: the setpoint rises to ``tpot_slo``, trading the TPOT
    headroom for admission (a larger cap, so the queue drains faster).
``overload``
    TTFT pressure still above ``ttft_slo`` (or, with ``priority="ttft"``, waiting requests
    already late: ``update(..., late=True)``) after the dwell in ``ttft`` mode: both SLOs cannot
    be met.  ``priority="tpot"`` keeps the setpoint at the TPOT SLO; ``priority="ttft"`` raises
    it to ``overload_factor * tpot_slo`` to admit more.  Either way the flag ``infeasible``
    is reported.

A mode steps *up* after ``dwell_decisions`` consecutive decisions above its threshold, and
*down* only after ``dwell_decisions`` consecutive decisions with pressure below
``exit_fraction`` of the threshold that raised it, so it cannot chatter between modes.

Examples
--------
>>> s = SloSupervisor(tpot_slo_s=0.05, ttft_slo_s=2.0, dwell_decisions=2)
>>> [s.update(3.0).mode for _ in range(5)]
['normal', 'ttft', 'ttft', 'overload', 'overload']
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["SloSupervisor", "SupervisorState"]

_MODES = ("normal", "ttft", "overload")


@dataclass(frozen=True, slots=True)
class SupervisorState:
    """The supervisor's decision: mode, setpoint and flags."""

    mode: str
    setpoint_s: float
    flags: frozenset[str]


class SloSupervisor:
    """Hysteretic mode logic trading TPOT headroom for TTFT (see module docstring)."""

    def __init__(
        self,
        tpot_slo_s: float,
        ttft_slo_s: float | None = None,
        *,
        priority: str = "tpot",
        target_fraction: float = 0.9,
        bind_fraction: float = 0.7,
        exit_fraction: float = 0.5,
        overload_factor: float = 1.5,
        dwell_decisions: int = 20,
    ) -> None:
        if priority not in ("tpot", "ttft"):
            raise ValueError(f"priority={priority!r}: expected 'tpot' or 'ttft'")
        self.tpot_slo_s = tpot_slo_s
        self.ttft_slo_s = ttft_slo_s
        self.priority = priority
        self.target_fraction = target_fraction
        self.bind_fraction = bind_fraction
        self.exit_fraction = exit_fraction
        self.overload_factor = overload_factor
        self.dwell_decisions = max(1, int(dwell_decisions))
        self.reset()

    def reset(self) -> None:
        """Back to ``normal`` mode."""
        self._mode = 0
        self._up = 0
        self._down = 0

    def setpoint_for(self, mode: str) -> float:
        """Return the TPOT setpoint used in ``mode``."""
        if mode == "normal":
            return self.target_fraction * self.tpot_slo_s
        if mode == "overload" and self.priority == "ttft":
            return self.overload_factor * self.tpot_slo_s
        return self.tpot_slo_s

    def update(self, ttft_pressure_s: float, *, late: bool = False) -> SupervisorState:
        """Feed this decision's TTFT pressure (seconds); return the mode in force.

        ``late``: some waiting requests can no longer meet the TTFT SLO (the admission guard
        demoted them).  The controllers feed the age of the oldest *live* request, which by
        definition stays under the SLO, so without this signal ``overload`` could never be
        entered.  With ``priority="ttft"`` a late queue counts as pressure above the SLO;
        with ``priority="tpot"`` it is ignored (overload would not change the setpoint).
        """
        slo = self.ttft_slo_s
        if late and slo is not None and self.priority == "ttft":
            ttft_pressure_s = max(ttft_pressure_s, math.nextafter(slo, math.inf))
        if slo is not None and ttft_pressure_s == ttft_pressure_s:  # not NaN
            up_at = (self.bind_fraction * slo, slo)
            if self._mode < 2 and ttft_pressure_s > up_at[self._mode]:
                self._up += 1
                self._down = 0
                if self._up >= self.dwell_decisions:
                    self._mode += 1
                    self._up = 0
            elif self._mode > 0 and ttft_pressure_s < self.exit_fraction * up_at[self._mode - 1]:
                self._down += 1
                self._up = 0
                if self._down >= self.dwell_decisions:
                    self._mode -= 1
                    self._down = 0
            else:
                self._up = 0 if self._mode == 0 else self._up
                self._down = 0
        mode = _MODES[self._mode]
        flags = frozenset({"infeasible", f"priority_{self.priority}"}) if mode == "overload" else frozenset()
        return SupervisorState(mode, self.setpoint_for(mode), flags)
