"""Runtime policy ``pid-adaptive``: the PID, re-tuned online from a re-identified slope.

Built from a file written by :func:`controlkit.schedule.design_adaptive_pid`.  Every decision:

1. the step just observed updates :class:`~controlkit.online.SlopeEstimator` (decodes ``n``,
   step time net of the identified prefill cost) and :class:`~controlkit.online.DriftDetector`
   (an alarm resets the estimator's covariance, so it re-converges fast);
2. at most once per ``dwell_decisions``, when the estimate has moved by more than ``hysteresis``
   from the scheduled slope and is known well enough (``2 sd`` inside the certified ratio), the
   PID's gains are re-scaled to it (velocity form: bumpless), and the floor of the PID policy's
   measured-slope limit moves to it (the limit still takes the larger of it and its own, faster
   estimate of the mean slope, prefill included);
3. if the estimate stays outside the certified envelope for ``EXIT_DECISIONS`` decisions, the
   PID is put in manual mode at a safe static cap, the largest batch whose step at the estimate's
   upper bound (``+2 sd``) meets the setpoint; once the estimate has been well inside (10 %) for
   a dwell, it resumes from that cap (bumpless);
4. the PID policy's usual logic (supervisor, measured-slope limit, admission guard) runs.

Every re-tune is logged (logger ``controlkit.policies.adaptive``, level INFO) with its reason,
appended to :attr:`AdaptivePIDPolicy.events` (the last 256) and counted in
:attr:`AdaptivePIDPolicy.counters`; the flags ``adaptive_retune``, ``adaptive_fallback`` and
``adaptive_drift`` report them in telemetry.  Never raises from :meth:`decide`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass
from typing import Any

from controlkit.contract import BatchLimits, Observation
from controlkit.online import DriftDetector, SlopeEstimator
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.controllers import PIDPolicy
from policies.registry import PolicyContext, register

__all__ = ["AdaptivePIDPolicy", "RetuneEvent"]

logger = logging.getLogger("controlkit.policies.adaptive")

#: Consecutive decisions with the estimate outside the envelope before the policy falls back.
EXIT_DECISIONS = 10


@dataclass(frozen=True, slots=True)
class RetuneEvent:
    """One change of the scheduled slope (or of the fallback state), with its reason."""

    decision: int
    t_s: float
    reason: str
    slope_from_s_per_seq: float
    slope_to_s_per_seq: float
    estimate_s_per_seq: float
    estimate_sd_s_per_seq: float


class AdaptivePIDPolicy(PIDPolicy):
    """Gain-scheduled PID (see the module docstring)."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        s = pf.params.get("schedule")
        if not isinstance(s, dict):
            raise PolicyError("pid-adaptive policy: params.schedule must be a mapping (design_adaptive_pid)")
        try:
            self.k_ref = float(s["k_ref_s_per_seq"])
            self.env_lo, self.env_hi = (float(x) for x in s["envelope_s_per_seq"])
            self.r_lo, self.r_hi = (float(x) for x in s["relative"])
            self.dwell = max(1, int(s.get("dwell_decisions", 50)))
            self.hysteresis = float(s.get("hysteresis", 0.15))
            self.intercept_s = float(s["intercept_s"])
            self.prefill_s_per_token = float(s.get("prefill_s_per_token", 0.0))
            self.prefill_load = float(s.get("prefill_load_s_per_seq", 0.0))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"pid-adaptive policy: params.schedule is malformed ({exc})") from None
        if not (0 < self.env_lo <= self.k_ref <= self.env_hi and 0 < self.r_lo < 1 < self.r_hi):
            raise PolicyError(
                f"pid-adaptive policy: need 0 < envelope low <= k_ref={self.k_ref:g} <= high and "
                f"relative r_lo < 1 < r_hi, got {s['envelope_s_per_seq']}, {s['relative']}"
            )
        super().__init__(pf, ctx)
        self.base_ctrl = self.ctrl
        self.target_s = self.params.tpot_target_s

    def reset(self) -> None:
        """Back to the design: reference gains, prior estimate, no fallback."""
        super().reset()
        self.estimator = SlopeEstimator(self.intercept_s, self.k_ref)
        self.detector = DriftDetector()
        self.k_sched = self.k_ref
        self.fallback = False
        self.decisions = 0
        self._last_retune = -(10**9)
        self._alarm_pending = False
        self._outside = 0
        self._well_inside = 0
        self.events: deque[RetuneEvent] = deque(maxlen=256)
        self.counters = {"retunes": 0, "fallbacks": 0, "drift_alarms": 0, "recoveries": 0}

    # ------------------------------------------------------------------ scheduling
    def _log(self, obs: Observation, reason: str, k_to: float) -> None:
        ev = RetuneEvent(
            self.decisions,
            obs.t_s,
            reason,
            self.k_sched,
            k_to,
            self.estimator.slope_s_per_seq,
            self.estimator.slope_sd_s_per_seq,
        )
        self.events.append(ev)
        logger.info(
            "pid-adaptive %s at decision %d (t=%.3f s): scheduled slope %.4g -> %.4g s/seq (estimate %.4g +- %.2g)",
            reason,
            ev.decision,
            ev.t_s,
            ev.slope_from_s_per_seq,
            k_to,
            ev.estimate_s_per_seq,
            ev.estimate_sd_s_per_seq,
        )

    def _apply_gains(self, k_to: float) -> None:
        f = self.k_ref / k_to
        base = self.base_ctrl
        self.pid.kp, self.pid.ki, self.pid.kd = base.kp * f, base.ki * f, base.kd * f
        self.k_sched = k_to
        if self.limit is not None:
            # the measured-slope limit's floor follows the re-identified decode slope: a floor fixed at
            # design time (another plant, another workload's prefill share) caps a faster plant or a
            # lighter workload at the design condition's batch (bench/cross_matrix.py)
            self.limit.k_eff = k_to

    def _safe_cap(self) -> int:
        k_up = self.estimator.slope_s_per_seq + 2.0 * self.estimator.slope_sd_s_per_seq
        room = self.target_s - max(self.estimator.intercept_s, self.intercept_s)
        cap = math.floor(room / (k_up + self.prefill_load)) if room > 0 else self.b_min
        return min(max(cap, self.b_min), self.b_max)

    def _schedule(self, obs: Observation) -> set[str]:
        """Update the estimate and re-tune or fall back; returns the flags of this decision."""
        flags: set[str] = set()
        n = obs.num_decode_tokens
        if n > 0 and math.isfinite(obs.last_step_s) and obs.last_step_s > 0:
            net = obs.last_step_s - self.prefill_s_per_token * obs.num_prefill_tokens
            est = self.estimator.update(float(n), net)
            if self.detector.update(est.innovation_z):
                self.estimator.inflate()
                self.counters["drift_alarms"] += 1
                self._alarm_pending = True
                flags.add("adaptive_drift")
        k_hat, sd = self.estimator.slope_s_per_seq, self.estimator.slope_sd_s_per_seq
        inside = self.env_lo <= k_hat <= self.env_hi
        well_inside = 1.1 * self.env_lo <= k_hat <= self.env_hi / 1.1
        known = 2.0 * sd <= min(1.0 - self.r_lo, self.r_hi - 1.0) * k_hat
        # persistence: leave after EXIT_DECISIONS outside, return after a dwell well inside
        self._outside = 0 if inside else self._outside + 1
        self._well_inside = self._well_inside + 1 if (well_inside and known) else 0
        if self.fallback:
            if self._well_inside >= self.dwell:
                self.fallback = False
                self.counters["recoveries"] += 1
                self._log(obs, "envelope_return", k_hat)
                self._apply_gains(k_hat)
                self._last_retune = self.decisions
                self.pid.set_auto_mode(True, self.pid.output)
            else:
                self.pid.set_manual_output(self._safe_cap())
                flags.add("adaptive_fallback")
            return flags
        if self._outside >= EXIT_DECISIONS and known and self.estimator.updates >= self.dwell:
            self.fallback = True
            self.counters["fallbacks"] += 1
            self._log(obs, "envelope_exit", self.k_sched)
            self.pid.set_auto_mode(False)
            self.pid.set_manual_output(self._safe_cap())
            flags.add("adaptive_fallback")
            return flags
        moved = abs(k_hat - self.k_sched) > self.hysteresis * self.k_sched
        settled = self.estimator.updates >= self.dwell
        if inside and known and moved and settled and self.decisions - self._last_retune >= self.dwell:
            self.counters["retunes"] += 1
            self._log(obs, "drift" if self._alarm_pending else "estimate_moved", k_hat)
            self._alarm_pending = False
            self._apply_gains(k_hat)
            self._last_retune = self.decisions
            flags.add("adaptive_retune")
        return flags

    def decide(self, observation: Observation) -> BatchLimits:
        """Re-identify, re-tune or fall back, then the PID policy's decision."""
        try:
            self.decisions += 1
            flags = self._schedule(observation)
        except Exception:  # never raise into the engine
            return BatchLimits(self.pid.output, self.tokens, flags=frozenset({"policy_fault"}))
        lim = super().decide(observation)
        return BatchLimits(lim.max_active_seqs, lim.max_batched_tokens, lim.admission_order, lim.flags | flags)

    def summary(self) -> dict[str, Any]:
        """Counters and the current schedule, for reports."""
        return dict(self.counters) | {
            "scheduled_slope_s_per_seq": self.k_sched,
            "estimate_s_per_seq": self.estimator.slope_s_per_seq,
            "fallback": self.fallback,
        }


register("pid-adaptive", AdaptivePIDPolicy)
