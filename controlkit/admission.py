"""Runtime admission guard shared by the designed controllers: KV-memory cap and deadline order.

The controllers (``pid``, ``optimal``, ``mpc``) decide *how many* requests may run; this
layer decides, from the same :class:`~controlkit.contract.Observation`, two things they
cannot see from the step time alone (``docs/theory.md`` §5):

**Online memory guard.**  A running request still grows by its remaining output; a waiting
request, once admitted, takes its prompt's blocks at once and then grows too.  With ``U``
blocks in use, ``n`` running requests, expected remaining output ``r`` tokens per request
(the identified output mean, a memoryless bound) and block size ``s``, the KV the batch will
grow into after admitting the first ``a`` listed waiting requests (prompts ``P_i``) is

``K(a) = U + n * ceil(r / s) + sum_{i < a} (ceil(P_i / s) + ceil(r / s))``

and the guard admits the largest ``a`` with ``K(a) <= capacity * (1 - headroom)``: the cap
becomes ``min(cap, n + a)`` (never below ``b_min``; a lower cap never evicts).  When the
running requests alone are predicted to overflow, nothing is admitted.  With ``peak_z`` set
(the controllers use 2) ``K(a)`` is instead the expected *peak* KV plus ``peak_z`` standard
deviations under the same memoryless model, in which finished requests free their blocks
(:class:`PeakKV`, ``docs/theory.md`` §5).

**Deadline-aware admission order.**  With one TTFT SLO ``T`` for every request, earliest
deadline first is first-come first-served -- until the queue is hopeless, when FCFS makes
*every* request miss.  Each listed waiting request of age ``a_i`` is *live* if it can still
get its first token in time: ``a_i + j / mu + P_i * c_p <= T``, where ``j`` is the number of
live requests ahead of it beyond the free slots, ``mu`` the observed completion rate (an EMA;
the rate at which slots free up) and ``c_p`` the prefill time per token.  Live requests are
admitted first (FCFS among them), the others after them (FCFS).  What happens to a late
request is the layer's *mode* (``late_action``): ``"demote"`` (the default) moves it behind
the live ones -- it still waits, bounded by its client's timeout, which the engine enforces;
``"reject"`` sheds it at once (:attr:`AdmissionPlan.reject`, passed on as
:attr:`~controlkit.contract.BatchLimits.reject`: an HTTP 429/503-style answer that frees it
and tells its client to retry elsewhere).  While requests are late the load is infeasible for
the TTFT SLO and the ``infeasible`` flag is raised; it is held for ``dwell_decisions``
decisions after the last late request so that it does not chatter.

**SLO classes.**  When the engine lists each waiting request's class and each class's TTFT
target (:attr:`~controlkit.contract.Observation.waiting_slo_class`,
:attr:`~controlkit.contract.Observation.class_ttft_slo_s`), ``T`` is the request's own
class's target and live requests are admitted earliest deadline (``T_i - a_i``) first.

Examples
--------
>>> from controlkit.contract import Observation
>>> g = AdmissionGuard(ttft_slo_s=2.0, output_tokens_mean=100, kv_headroom=0.0)
>>> obs = Observation(0.0, 2, 3, 20, 50, waiting_prompt_tokens=(64, 64, 64),
...                   waiting_age_s=(5.0, 0.5, 0.1), block_size=16)
>>> plan = g.plan(obs, cap=8)
>>> plan.order, plan.cap, sorted(plan.flags)
((1, 2, 0), 3, ['infeasible', 'memory_guard'])

With room for every waiting request the memory does not bind and the cap stands:

>>> g.plan(Observation(0.0, 2, 3, 20, 500, waiting_prompt_tokens=(64, 64, 64), block_size=16), cap=8).cap
8
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from controlkit.contract import Observation
from controlkit.kvbounds import PeakKV, SumKV

__all__ = ["LATE_ACTIONS", "AdmissionGuard", "AdmissionPlan"]

#: What the layer does with a request that can no longer meet its TTFT (its mode).
LATE_ACTIONS: tuple[str, ...] = ("demote", "reject")

@dataclass(frozen=True, slots=True)
class AdmissionPlan:
    """What the guard makes of a controller's cap at one decision.

    Attributes
    ----------
    cap
        The cap to apply: the controller's, lowered by the memory guard.
    order
        Admission order (indices into the listed waiting requests); empty for FCFS.
    flags
        ``{"infeasible"}`` while the TTFT SLO cannot be met for some requests,
        ``{"memory_guard"}`` when the memory guard lowered the cap.
    predicted_kv_blocks
        ``K(a)`` for the admissions the cap allows (the guard keeps it within
        ``capacity * (1 - headroom)`` whenever the running requests alone fit); with nothing
        waiting, the blocks in use.
    num_demoted
        Listed waiting requests moved behind the live ones.
    ttft_pressure_s
        Age of the oldest *live* waiting request (0 when none): the TTFT pressure the cap can
        still act on (with SLO classes: the largest age as a fraction of its class's target,
        times the first class's target).
    reject
        Late requests to shed now (``late_action="reject"``); empty in ``"demote"`` mode.
    """

    cap: int
    order: tuple[int, ...]
    flags: frozenset[str]
    predicted_kv_blocks: float
    num_demoted: int
    ttft_pressure_s: float
    reject: tuple[int, ...] = ()


class AdmissionGuard:
    """Online memory guard plus deadline-aware admission order (see module docstring).

    Parameters
    ----------
    ttft_slo_s
        TTFT SLO (seconds); ``None`` disables the deadline order.
    output_tokens_mean
        Expected remaining output per request (tokens), the memory guard's growth reserve.
    kv_headroom
        Fraction of KV capacity kept free (0 <= headroom < 1).
    prefill_s_per_token
        Prefill time per prompt token (seconds), for the live test.
    b_min
        Smallest cap ever returned.
    dwell_decisions
        Decisions the ``infeasible`` flag is held after the last demotion.
    late_action
        ``"demote"`` (late requests wait behind the live ones, bounded by their clients'
        timeouts) or ``"reject"`` (late requests are shed at once).
    """

    def __init__(
        self,
        *,
        ttft_slo_s: float | None,
        output_tokens_mean: float,
        kv_headroom: float = 0.05,
        prefill_s_per_token: float = 0.0,
        b_min: int = 1,
        dwell_decisions: int = 50,
        backfill: bool = True,
        peak_z: float | None = None,
        late_action: str = "demote",
    ) -> None:
        if not (0.0 <= kv_headroom < 1.0):
            raise ValueError(f"kv_headroom={kv_headroom!r}: expected 0 <= headroom < 1")
        if late_action not in LATE_ACTIONS:
            raise ValueError(f"late_action={late_action!r}: expected one of {', '.join(LATE_ACTIONS)}")
        self.late_action = late_action
        self.ttft_slo_s = float(ttft_slo_s) if ttft_slo_s else None
        self.output_tokens_mean = max(float(output_tokens_mean), 1.0)
        self.kv_headroom = float(kv_headroom)
        self.prefill_s_per_token = max(float(prefill_s_per_token), 0.0)
        self.b_min = max(int(b_min), 1)
        self.dwell_decisions = max(int(dwell_decisions), 1)
        self.backfill = bool(backfill)
        self.peak_z = None if peak_z is None else max(float(peak_z), 0.0)
        self.reset()

    def reset(self) -> None:
        """Forget the completion-rate estimate and the flag latch."""
        self._fin = 0.0
        self._dt = 0.0
        self._hold = 0

    @property
    def completion_rate_per_s(self) -> float:
        """EMA estimate of the completion rate (requests per second; 0 before any data)."""
        return self._fin / self._dt if self._dt > 0 else 0.0

    def plan(self, obs: Observation, cap: int) -> AdmissionPlan:
        """Apply the memory guard and the deadline order to the controller's ``cap``."""
        if obs.last_step_s > 0 and math.isfinite(obs.last_step_s):
            self._fin += 0.01 * (obs.num_finished - self._fin)
            self._dt += 0.01 * (obs.last_step_s - self._dt)
        prompts = obs.waiting_prompt_tokens
        order, demoted, pressure = self._order(obs, cap)
        flags: set[str] = set()
        if demoted:
            self._hold = self.dwell_decisions
        if self._hold > 0:
            self._hold -= 1
            flags.add("infeasible")
        reject: tuple[int, ...] = ()
        if demoted and self.late_action == "reject":
            # shed the late tail; only the live requests are left to admit
            reject, order = order[len(order) - demoted :], order[: len(order) - demoted]
            flags.add("shed")
        queue = [prompts[i] for i in order] if order else list(prompts)
        num_live = len(queue) - (0 if reject else demoted)
        new_cap, kv, taken = self._memory_cap(obs, cap, queue, num_live)
        if new_cap < cap:
            flags.add("memory_guard")
        if taken is not None:
            # backfill past late requests: the ones that fit go first, the skipped keep their place
            base = order or tuple(range(len(prompts)))
            chosen = set(taken)
            order = (*(base[j] for j in taken), *(base[j] for j in range(len(base)) if j not in chosen))
            flags.add("memory_backfill")
        return AdmissionPlan(new_cap, order, frozenset(flags), kv, demoted, pressure, reject)

    # -- deadline order ------------------------------------------------------------------
    def _order(self, obs: Observation, cap: int) -> tuple[tuple[int, ...], int, float]:
        ages = obs.waiting_age_s
        prompts = obs.waiting_prompt_tokens
        slo = self.ttft_slo_s
        if slo is None or not ages or len(ages) != len(prompts):
            return (), 0, obs.oldest_wait_s
        mu = self.completion_rate_per_s
        free_slots = max(cap - obs.num_running, 0)
        live: list[int] = []
        late: list[int] = []
        pressure = 0.0
        targets = self._class_targets(obs)
        if targets is not None:
            return self._order_classes(obs, targets, mu, free_slots)
        for i, (age, p) in enumerate(zip(ages, prompts, strict=True)):
            ahead = max(len(live) - free_slots, 0)
            wait = ahead / mu if mu > 0 else 0.0
            if age + wait + p * self.prefill_s_per_token <= slo:
                live.append(i)
                pressure = max(pressure, age)
            else:
                late.append(i)
        if not late:
            return (), 0, pressure
        return (*live, *late), len(late), pressure

    @staticmethod
    def _class_targets(obs: Observation) -> list[float] | None:
        """Each listed request's own TTFT target, when the engine reports SLO classes."""
        cls, per_class = obs.waiting_slo_class, obs.class_ttft_slo_s
        if not cls or not per_class or len(cls) != len(obs.waiting_age_s):
            return None
        if any(not (0 <= c < len(per_class)) for c in cls):
            return None
        return [per_class[c] for c in cls]

    def _order_classes(
        self, obs: Observation, targets: list[float], mu: float, free_slots: int
    ) -> tuple[tuple[int, ...], int, float]:
        """Earliest deadline first over the classes' own targets; late requests after the live."""
        ages, prompts = obs.waiting_age_s, obs.waiting_prompt_tokens
        by_deadline = sorted(range(len(ages)), key=lambda i: targets[i] - ages[i])
        live: list[int] = []
        late: list[int] = []
        pressure = 0.0
        ref = obs.class_ttft_slo_s[0]
        for i in by_deadline:
            ahead = max(len(live) - free_slots, 0)
            wait = ahead / mu if mu > 0 else 0.0
            if ages[i] + wait + prompts[i] * self.prefill_s_per_token <= targets[i]:
                live.append(i)
                pressure = max(pressure, ref * ages[i] / targets[i])
            else:
                late.append(i)
        late.sort()
        order = (*live, *late)
        if not late and order == tuple(range(len(ages))):
            return (), 0, pressure
        return order, len(late), pressure

    # -- memory guard --------------------------------------------------------------------
    def _memory_cap(
        self, obs: Observation, cap: int, queue_prompts: list[int], num_live: int
    ) -> tuple[int, float, list[int] | None]:
        total = obs.kv_blocks_total
        if total <= 0:
            return cap, 0.0, None
        if obs.num_waiting == 0:
            # nothing to admit, so nothing to bound: the cap stands (the common decode-only step)
            return cap, float(obs.kv_blocks_used), None
        usable = total * (1.0 - self.kv_headroom)
        bound: SumKV | PeakKV = (
            SumKV(obs, self.output_tokens_mean)
            if self.peak_z is None
            else PeakKV(obs, self.output_tokens_mean, self.peak_z)
        )
        room = cap - obs.num_running
        listed = [float(p) for p in queue_prompts[: max(room, 0)]]
        admit, kv = bound.prefix_fit(listed, usable)
        taken = list(range(admit))
        skipped = False
        if self.backfill and admit < len(listed) and admit >= num_live:
            # the first misfit is late, and so is every request after it (live ones come first):
            # a late request is passed over, a later, smaller prompt may still fit
            stop = len(queue_prompts) if bound.scan is None else min(len(queue_prompts), admit + bound.scan)
            for j in range(admit, stop):
                if len(taken) >= room:
                    break
                nxt = bound.bound_blocks(queue_prompts[j])
                if nxt > usable:
                    skipped = True
                    continue
                bound.add(queue_prompts[j])
                kv = nxt
                taken.append(j)
            admit = len(taken)
        backfilled = taken if skipped and taken else None
        if admit < room and len(queue_prompts) < obs.num_waiting and admit == len(queue_prompts):
            # unlisted waiting requests: a listed-average prompt for each further admission
            mean_p = sum(queue_prompts) / len(queue_prompts) if queue_prompts else self.output_tokens_mean
            limit = min(room - admit, obs.num_waiting - len(queue_prompts))
            extra, after = bound.prefix_fit([mean_p] * limit, usable)
            if extra:
                kv = after
            admit += extra
        if admit >= min(room, obs.num_waiting):
            # memory does not bind: every request the cap would admit fits, so the cap stands
            # (lowering it to n + admit would change nothing now and only make the cap chatter)
            return cap, kv, backfilled
        return max(self.b_min, min(cap, obs.num_running + admit)), kv, backfilled
