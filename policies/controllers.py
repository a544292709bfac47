"""Runtime policies for controlkit's designed controllers: kinds ``pid``, ``optimal``, ``mpc``.

Each is built from a ``controlkit.policy/2`` file written by ``controlkit design``.  They are
deterministic, cheap, and never raise from :meth:`decide`: a fault (bad observation, an
internal error) holds the last limits and reports the flag ``"policy_fault"``.
"""

from __future__ import annotations

import math
from typing import Any

from controlkit.admission import AdmissionGuard, AdmissionPlan
from controlkit.backlog import SloSupervisor
from controlkit.certify.loop import ControllerSpec
from controlkit.contract import BatchLimits, Observation
from controlkit.loopsim import make_pid
from controlkit.mpc import MPCController
from controlkit.policyfile import PolicyFile
from controlkit.policyparams import GuardParams, MpcParams, OptimalParams, PidParams, SlopeModel
from identification.errors import PolicyError
from policies.registry import PolicyContext, register

__all__ = ["MPCPolicy", "OptimalPolicy", "PIDPolicy"]


def _int(d: Any, key: str, where: str) -> int:
    try:
        return int(d[key])
    except (KeyError, TypeError, ValueError):
        raise PolicyError(f"{where}: field {key!r} must be an integer, got {d.get(key)!r}") from None


def _bounds(pf: PolicyFile, ctx: PolicyContext) -> tuple[int, int]:
    b_min = _int(pf.limits, "b_min", f"{pf.kind} policy limits")
    b_max = min(_int(pf.limits, "b_max", f"{pf.kind} policy limits"), max(ctx.max_num_seqs, b_min))
    return b_min, b_max


def _ttft_pressure(obs: Observation, plan: AdmissionPlan) -> float:
    """TTFT pressure the cap can act on: the oldest *live* waiting request when ages are known."""
    if obs.waiting_age_s:
        return plan.ttft_pressure_s
    return max([obs.oldest_wait_s, *obs.ttft_s]) if (obs.ttft_s or obs.oldest_wait_s) else 0.0


def _guard(pf: PolicyFile, g: GuardParams | None, b_min: int) -> AdmissionGuard:
    """Build the online memory guard + deadline order from the policy file's workload numbers."""
    g = g or GuardParams()
    ttft = pf.slos.get("ttft_s")
    return AdmissionGuard(
        ttft_slo_s=None if ttft is None else float(ttft),
        output_tokens_mean=g.output_tokens_mean,
        kv_headroom=g.kv_headroom,
        prefill_s_per_token=g.prefill_s_per_token,
        b_min=b_min,
        peak_z=g.peak_z,
        late_action=g.late_action,
    )


class _SlopeLimit:
    """Model-based upper limit on the cap from the *measured* mean step slope.

    ``k_hat`` is an EMA of ``(y - intercept) / n`` over steps with ``n`` decodes: it includes the
    workload's real prefill load and attention over its real contexts, which the identified
    model (fitted on another workload) may underestimate.  The limit is the largest batch whose
    mean step ``intercept + max(k_eff, k_hat) b`` stays at the target: the design's TPOT target
    (``target_fraction`` x the TPOT SLO), or the TTFT supervisor's setpoint when the policy
    passes one (the TPOT headroom traded for admission while the TTFT binds, ``docs/theory.md`` §8).
    """

    def __init__(self, m: SlopeModel, target_s: float) -> None:
        self.intercept_s = m.intercept_s
        self.k_eff = m.k_eff_s_per_seq
        self.target_s = target_s
        self.k_hat = 0.0

    def update(self, obs: Observation, target_s: float | None = None) -> int:
        n = obs.num_decode_tokens
        if n > 0 and math.isfinite(obs.last_step_s) and obs.last_step_s > 0:
            self.k_hat += 0.02 * ((obs.last_step_s - self.intercept_s) / n - self.k_hat)
        k = max(self.k_eff, self.k_hat)
        target = self.target_s if target_s is None else target_s
        return max(1, math.floor((target - self.intercept_s) / k)) if k > 0 else 1_000_000


def _supervisor(pf: PolicyFile, target_s: float | None, priority: str) -> SloSupervisor | None:
    """Build the TTFT supervisor of ``optimal`` and ``mpc`` (``None`` without a TTFT SLO).

    Its ``normal`` setpoint is the design's TPOT target (``target_s``, default ``0.9 * TPOT``).
    """
    tpot, ttft = float(pf.slos.get("tpot_s", 0.0)), pf.slos.get("ttft_s")
    if ttft is None or not tpot > 0:
        return None
    fraction = target_s / tpot if target_s else 0.9
    return SloSupervisor(tpot, float(ttft), priority=priority, target_fraction=fraction)


def _limits(plan: AdmissionPlan, tokens: Any, flags: frozenset[str] = frozenset()) -> BatchLimits:
    return BatchLimits(plan.cap, tokens, plan.order, plan.flags | flags, plan.reject)


class PIDPolicy:
    """PID on the filtered step time (or ITL), setpoint moved by the TTFT supervisor."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        p: PidParams = pf.typed_params()
        try:
            self.ctrl = ControllerSpec.from_dict(p.controller_doc())
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"{pf.kind} policy: params.controller is malformed ({exc})") from None
        self.params = p
        self.b_min, self.b_max = _bounds(pf, ctx)
        tpot = float(pf.slos.get("tpot_s", 0.0))
        if not tpot > 0:
            raise PolicyError(f"{pf.kind} policy: slos.tpot_s must be > 0 seconds")
        ttft = pf.slos.get("ttft_s")
        self.supervisor = SloSupervisor(
            tpot, None if ttft is None else float(ttft), priority=p.priority, target_fraction=p.target_fraction
        )
        self.measurement = p.measurement
        self.tokens = pf.limits.get("max_batched_tokens")
        ref = self.b_min if p.reference_batch is None else p.reference_batch
        self.start = min(max(ref, self.b_min), self.b_max)
        self.guard = _guard(pf, p.guard, self.b_min)
        self.limit = None if p.model is None else _SlopeLimit(p.model, p.tpot_target_s)
        self.reset()

    def reset(self) -> None:
        """Back to the reference batch, normal mode."""
        if self.limit is not None:
            self.limit.k_hat = 0.0
        self.supervisor.reset()
        self.guard.reset()
        self._pressure = 0.0
        self._late = False
        self.pid = make_pid(self.ctrl, self.supervisor.setpoint_for("normal"), self.b_min, self.b_max, self.start)
        self._last = BatchLimits(self.start, self.tokens)

    def decide(self, observation: Observation) -> BatchLimits:
        """One decision: supervisor -> setpoint, PID on the measurement -> cap."""
        try:
            y = observation.itl_mean_s if self.measurement == "itl" else observation.last_step_s
            if not (math.isfinite(y) and y > 0):
                plan = self.guard.plan(observation, self.pid.output)
                return _limits(plan, self.tokens, frozenset({"no_measurement"}))
            # the order's live pressure at the last cap moves the setpoint (one decision late)
            state = self.supervisor.update(self._pressure, late=self._late)
            self.pid.setpoint = state.setpoint_s
            extra = {f"mode_{state.mode}"}
            if self.limit is not None:
                # gain-scheduled upper saturation: conditional integration clips the state to it
                bound = min(max(self.limit.update(observation, state.setpoint_s), self.b_min), self.b_max)
                self.pid.output_limits = (self.b_min, bound)
                if bound < self.b_max:
                    extra.add("model_limit")
            cap = self.pid.step(y, self.ctrl.sample_period_s)
            plan = self.guard.plan(observation, cap)
            self._pressure = _ttft_pressure(observation, plan)
            self._late = plan.num_demoted > 0
            self._last = _limits(plan, self.tokens, state.flags | extra)
            return self._last
        except Exception:  # never raise into the engine
            return BatchLimits(self.pid.output, self.tokens, flags=frozenset({"policy_fault"}))


def _queue_ttft_s(obs: Observation, room_tokens: int, step_s: float, prompt_tokens_mean: float) -> float:
    """Predicted TTFT of the waiting requests if each step prefills at most ``room_tokens``.

    In queue order, request ``i`` gets its first token after the prompts ahead of it and its own
    are prefilled: ``age_i + step_s * sum_{j <= i} P_j / room``; unlisted waiting requests count
    with the mean prompt.  The largest such TTFT is returned (0 with nothing waiting).
    """
    if obs.num_waiting <= 0:
        return 0.0
    room = max(room_tokens, 1)
    ages, prompts = obs.waiting_age_s, obs.waiting_prompt_tokens
    if not ages or len(ages) != len(prompts):
        return obs.oldest_wait_s + step_s * obs.num_waiting * prompt_tokens_mean / room
    worst, ahead = 0.0, 0.0
    for age, p in zip(ages, prompts, strict=True):
        ahead += p
        worst = max(worst, age + step_s * ahead / room)
    unlisted = obs.num_waiting - len(prompts)
    if unlisted > 0:
        worst = max(worst, step_s * (ahead + unlisted * prompt_tokens_mean) / room)
    return worst


class OptimalPolicy:
    """The static constrained optimum, derated online, behind the memory guard and deadline order.

    The cap is the designed optimum ``b*``, lowered (never raised) when the measured mean step
    slope exceeds the design model's: ``k_hat`` is an EMA of ``(y - intercept) / n`` over steps
    with ``n`` decodes (it includes the workload's real prefill load and attention over its real
    context), and the cap is ``min(b*, (target - intercept) / max(k_eff, k_hat))``.  Since the
    cap never exceeds ``b*``, the static certificate's claims still hold.

    With a TTFT SLO, the TTFT supervisor (:class:`SloSupervisor`, hysteresis and dwell), fed
    the live TTFT pressure as the PID's, picks the mode: ``target`` is ``tpot_target``
    (``0.9 * TPOT``) in ``normal`` and the TPOT SLO when the TTFT binds (``docs/theory.md`` §8).
    With a step-capped budget in the design (``params.step_cap``, §6) a second supervisor of the
    same kind picks the token budget, fed the TTFT the waiting requests *would* see under the
    step-capped budget: ``normal`` keeps every step within the TPOT SLO (claim
    ``step_within_tpot_slo``: no request misses TPOT, however few tokens it outputs); ``ttft`` /
    ``overload`` use the throughput budget ``max_batched_tokens``, holding only the mean step
    (flag ``budget_throughput``).
    """

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        p: OptimalParams = pf.typed_params()
        self.cap = min(p.max_num_seqs, max(ctx.max_num_seqs, 1))
        self.tokens = pf.limits.get("max_batched_tokens")
        self.guard = _guard(pf, p.guard, 1)
        self.model = None if p.model is None else _SlopeLimit(p.model, p.tpot_target_s)
        self.step_cap: tuple[int, float, float] | None = None
        self.supervisor = _supervisor(pf, None if self.model is None else self.model.target_s, p.priority)
        self.budget_supervisor = _supervisor(pf, None, p.priority)
        sc = p.step_cap
        if sc is not None:
            self.step_cap = (sc.max_batched_tokens, sc.step_cap_s, sc.prompt_tokens_mean)
        self.reset()

    def reset(self) -> None:
        """Forget the guard's estimates, the measured slope and the budget mode."""
        self.guard.reset()
        if self.model is not None:
            self.model.k_hat = 0.0
        for sup in (self.supervisor, self.budget_supervisor):
            if sup is not None:
                sup.reset()
        self._pressure = 0.0
        self._late = False
        self._budget_pressure = 0.0

    def _derated(self, obs: Observation, target_s: float | None) -> int:
        return self.cap if self.model is None else min(self.cap, self.model.update(obs, target_s))

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the (derated) optimum, lowered by the memory guard, with the deadline order."""
        try:
            if self.supervisor is None or self.budget_supervisor is None:
                return _limits(self.guard.plan(observation, self._derated(observation, None)), self.tokens)
            # the TTFT pressure of the last decision picks the mode (one decision late)
            state = self.supervisor.update(self._pressure, late=self._late)
            plan = self.guard.plan(observation, self._derated(observation, state.setpoint_s))
            self._pressure = _ttft_pressure(observation, plan)
            self._late = plan.num_demoted > 0
            flags = state.flags | {f"mode_{state.mode}"}
            if self.step_cap is None:
                return _limits(plan, self.tokens, flags)
            tokens, step_s, prompt = self.step_cap
            budget_state = self.budget_supervisor.update(self._budget_pressure)
            room = tokens - min(observation.num_running, plan.cap)
            self._budget_pressure = _queue_ttft_s(observation, room, step_s, prompt)
            if budget_state.mode == "normal":
                return _limits(plan, tokens, flags)
            return _limits(plan, self.tokens, flags | {"budget_throughput"})
        except Exception:  # never raise into the engine
            return BatchLimits(self.cap, self.tokens, flags=frozenset({"policy_fault"}))


class MPCPolicy:
    """Receding-horizon policy over cap and token budget, solved every ``every_k`` decisions."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        p: MpcParams = pf.typed_params()
        self.b_min, b_max = _bounds(pf, ctx)
        if "tpot_s" not in pf.slos:
            raise PolicyError("mpc policy: slos.tpot_s is missing")
        try:
            self.mpc = MPCController(
                intercept_s=p.intercept_s,
                k_max=p.k_max,
                tpot_slo_s=float(pf.slos["tpot_s"]),
                ttft_slo_s=pf.slos.get("ttft_s"),
                b_min=self.b_min,
                cap_upper=min(p.cap_upper, b_max),
                rate_limit=_int(pf.limits, "rate_limit", "mpc policy limits"),
                prompt_tokens_mean=p.prompt_tokens_mean,
                output_tokens_mean=p.output_tokens_mean,
                budgets=p.budgets,
                prefill_s_per_token=p.prefill_s_per_token,
                horizon=p.horizon,
                tpot_target_s=p.tpot_target_s,
            )
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"mpc policy: params are malformed ({exc})") from None
        self.every_k = p.every_k
        ref = self.b_min if p.reference_batch is None else p.reference_batch
        self.start = min(max(ref, self.b_min), self.mpc.cap_upper)
        self.start_tokens = p.budgets[0]
        self.guard = _guard(pf, p.guard, self.b_min)
        m = self.mpc
        self._k_eff = m.k_max + m.prefill_s_per_token * m.prompt / m.l_out
        # the TTFT supervisor moves the soft TPOT target (normal: the design's) as the queue builds
        self.supervisor = _supervisor(pf, m.tpot_target_s, p.priority)
        self.reset()

    def reset(self) -> None:
        """Back to the reference batch."""
        self._last = BatchLimits(self.start, self.start_tokens)
        self._n = 0
        self._rate = 0.0
        self._prev_t: float | None = None
        self._prev_total = 0
        self._plan_cap = self.start
        self._tokens = self.start_tokens
        self._demoted = 0
        self._k = 0.0
        self._pressure = 0.0
        self._flags: frozenset[str] = frozenset()
        if self.supervisor is not None:
            self.supervisor.reset()
        self.guard.reset()

    def decide(self, observation: Observation) -> BatchLimits:
        """Re-solve every ``every_k`` decisions; hold the last solution in between."""
        try:
            total = observation.num_running + observation.num_waiting
            if self._prev_t is not None and observation.t_s > self._prev_t:
                arrived = max(total - self._prev_total + observation.num_finished, 0)
                self._rate += 0.05 * (arrived / (observation.t_s - self._prev_t) - self._rate)
            self._prev_t, self._prev_total = observation.t_s, total
            self._n += 1
            y = observation.last_step_s
            n_dec = observation.num_decode_tokens
            if math.isfinite(y) and y > 0 and n_dec > 0:
                # measured mean step slope (prefill load and real contexts included)
                self._k += 0.02 * ((y - self.mpc.intercept_s) / n_dec - self._k)
            if (self._n - 1) % self.every_k == 0:
                if self.supervisor is not None:
                    state = self.supervisor.update(self._pressure, late=self._demoted > 0)
                    self.mpc.tpot_target_s = state.setpoint_s
                    self._flags = state.flags | {f"mode_{state.mode}"}
                # only the live queue counts against the TTFT soft constraint: demoted requests
                # have missed their deadline whatever the cap
                live = observation.num_waiting - self._demoted
                cap, tokens = self.mpc.decide(
                    num_running=observation.num_running,
                    num_waiting=max(live, 0),
                    cap=self._plan_cap,
                    arrivals_per_s=self._rate,
                    slope_excess_s_per_seq=self._k - self._k_eff,
                )
                self._plan_cap, self._tokens = cap, tokens
            plan = self.guard.plan(observation, self._plan_cap)
            self._demoted = plan.num_demoted
            self._pressure = _ttft_pressure(observation, plan)
            self._last = _limits(plan, self._tokens, self._flags)
            return self._last
        except Exception:  # never raise into the engine
            return BatchLimits(
                self._last.max_active_seqs, self._last.max_batched_tokens, flags=frozenset({"policy_fault"})
            )


register("pid", PIDPolicy)
register("optimal", OptimalPolicy)
register("mpc", MPCPolicy)
