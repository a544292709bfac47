"""The discrete-event engine: continuous batching with a paged KV cache (DESIGN.md §6).

One loop iteration is one engine step.  Per step the engine builds an
:class:`~controlkit.contract.Observation`, asks the policy for
:class:`~controlkit.contract.BatchLimits` (sanitized: a policy that raises or returns
nonsense keeps the last safe limits and counts a fault), schedules, and advances time by
``plant.step_s(...)``.  Two scheduling modes:

* ``chunked_prefill=True`` (vLLM v1): every running decode gets one token; running partial
  prefills continue, then waiting requests are admitted (FCFS or the policy's order) while
  ``num_running < max_active_seqs`` and the token budget and free blocks allow; prompts are
  cut into chunks under the budget (decodes take one token each of it).
* ``chunked_prefill=False`` (vLLM 0.5 default): if any waiting request can be admitted
  (whole prompt within the budget, blocks free beyond a 1% watermark), the step is
  prefill-only; otherwise it is decode-only.

When a decode needs a new block and none is free, the most recently admitted running request
is preempted by recompute: its blocks are freed, it goes to the front of the waiting queue and
later re-prefills prompt + generated tokens; no request is admitted in a step that preempted.
A lowered cap never evicts.  Per-decode work is event-driven (block-boundary and finish
events keyed by the decode-step counter), so a step costs O(1) plus its events.
"""

from __future__ import annotations

import dataclasses
import math
import random
import warnings
from collections import deque
from collections.abc import Sequence
from itertools import islice
from typing import Any

import numpy as np

from controlkit.contract import WAITING_LIST_LIMIT, BatchLimits, BatchPolicy, Observation, sanitize_limits
from controlkit.sim.metrics import SLO, RequestOutcomes, SimResult, compute_metrics
from controlkit.sim.plants import Plant
from controlkit.sim.workloads import Workload
from identification.errors import ControlkitError, ExtrapolationWarning

__all__ = ["WAITING_LIST_LIMIT", "simulate"]  # the limit lives in controlkit.contract


def _slo_classes(slo: SLO | Sequence[SLO]) -> tuple[SLO, ...]:
    """One SLO, or one per class, as a non-empty tuple of :class:`SLO`."""
    classes = (slo,) if isinstance(slo, SLO) else tuple(slo)
    if not classes or not all(isinstance(c, SLO) for c in classes):
        raise ControlkitError(f"slo must be an SLO or a non-empty sequence of SLOs, got {slo!r}")
    return classes

#: Slot setters of :class:`Observation` in field order: building the (frozen, validation-free)
#: observation through them skips the dataclass ``__init__``'s ``object.__setattr__`` per field.
_OBS_SETTERS = tuple(Observation.__dict__[f.name].__set__ for f in dataclasses.fields(Observation))
_new_object = object.__new__


def _observation(*values: Any) -> Observation:
    """Return ``Observation(*values)`` (all fields, in order), about three times faster."""
    obs: Observation = _new_object(Observation)
    for setter, value in zip(_OBS_SETTERS, values, strict=True):
        setter(obs, value)
    return obs


def simulate(
    plant: Plant,
    workload: Workload,
    policy: BatchPolicy,
    *,
    slo: SLO | Sequence[SLO],
    max_num_seqs: int | None = None,
    max_batched_tokens: int | None = None,
    seed: int = 0,
    horizon_s: float | None = None,
    telemetry: Any = None,
    requests_out: Any = None,
    record_steps: bool = False,
    chunked_prefill: bool = True,
    check_invariants: bool = False,
    step_noise_cv: float = 0.0,
    max_num_queued_reqs: int | None = None,
    window_s: tuple[float, float] | None = None,
) -> SimResult:
    """Run ``policy`` on ``plant`` under ``workload`` in closed loop.

    Parameters
    ----------
    plant
        Step time and KV capacity (:func:`~controlkit.sim.load_plant`).
    workload
        Requests; clipped to ``plant.max_model_len`` (counted in ``num_clipped``).
    policy
        Any object with ``decide(Observation) -> BatchLimits`` and ``reset()``; ``reset()``
        is called first.
    slo
        The per-request SLO used for goodput and attainment, or one SLO per SLO class
        (``workload.slo_class`` indexes it).  An SLO's ``timeout_s`` is the client timeout of
        its requests: a request without its first token that long after arrival is aborted
        (timed out; its slot and blocks are freed whether it waits or is being prefilled).
    max_num_seqs
        The engine's ceiling for the admission cap (default ``plant.max_num_seqs_default``).
    max_batched_tokens
        The engine's per-step token budget (default ``plant.max_batched_tokens_default``
        with chunked prefill, else ``max(2048, max_model_len)``).
    seed
        Seed of the step-time noise (``step_noise_cv``); the run is deterministic given it.
    horizon_s
        Stop at this simulated time; requests not finished are reported unfinished.
    telemetry
        Path to write per-step records (JSONL, ``controlkit.steps/1``), or None.
    requests_out
        Path to write request records (JSONL, ``controlkit.requests/1``), or None.
    record_steps
        Keep per-step records in :attr:`SimResult.steps`.
    chunked_prefill
        vLLM v1 chunked prefill (default) or vLLM 0.5 prefill-only steps.
    step_noise_cv
        Multiplicative Gaussian noise on every step time (coefficient of variation; 0: none),
        clipped to +-3 sigma, drawn from ``random.Random(seed)``.
    max_num_queued_reqs
        Reject an arriving request while this many are unfinished (waiting + running), as
        vLLM's ``--max-num-queued-reqs`` answers HTTP 503 (``None``: unbounded).
    window_s
        ``(start, end)`` of the measurement window (see :func:`compute_metrics`); ``None``:
        the whole run.
    check_invariants
        Verify after every step (O(running), for tests) that blocks are conserved and that
        admissions never pushed the running count above the cap in force; raises
        ``AssertionError`` otherwise.

    Examples
    --------
    >>> import numpy as np
    >>> from controlkit.contract import BatchLimits
    >>> class Cap:
    ...     def decide(self, obs): return BatchLimits(4)
    ...     def reset(self): pass
    >>> p = Plant("toy", (1.0, 8.0), (0.010, 0.017), 0.005, 1e-5, kv_blocks_total=100)
    >>> w = Workload("one", np.array([0.0]), np.array([32]), np.array([3]))
    >>> m = simulate(p, w, Cap(), slo=SLO(1.0, 1.0)).metrics
    >>> round(m.ttft_p50_s, 6), round(m.tpot_p50_s, 6)
    (0.00532, 0.01)
    """
    if max_num_seqs is not None and max_num_seqs < 1:
        raise ControlkitError(f"max_num_seqs must be >= 1, got {max_num_seqs}")
    wl, num_clipped = workload.clipped(plant.max_model_len)
    bs = plant.block_size
    total_blocks = plant.kv_blocks_total
    ceiling = max_num_seqs or plant.max_num_seqs_default
    if max_batched_tokens is None:
        max_batched_tokens = (
            plant.max_batched_tokens_default if chunked_prefill else max(2048, plant.max_model_len)
        )
    min_budget = 1 if chunked_prefill else plant.max_model_len
    if max_batched_tokens < min_budget:
        raise ControlkitError(
            f"max_batched_tokens={max_batched_tokens} must be >= {min_budget} "
            f"({'chunked' if chunked_prefill else 'no chunked prefill: >= max_model_len'})"
        )
    watermark = 0 if chunked_prefill else math.ceil(0.01 * total_blocks)
    if not (0.0 <= step_noise_cv < 0.3):
        raise ControlkitError(f"step_noise_cv must be in [0, 0.3), got {step_noise_cv}")
    gauss = random.Random(seed).gauss

    n = len(wl)
    arr: list[float] = wl.arrival_s.tolist()
    prm: list[int] = wl.prompt_tokens.tolist()
    out: list[int] = wl.output_tokens.tolist()
    first = [math.nan] * n
    fin_t = [math.nan] * n
    npre = [0] * n
    emitted = [0] * n  # tokens emitted so far (valid while not decoding)
    epoch = [0] * n
    blocks = [0] * n
    computed = [0] * n  # prefill tokens computed in the current prefill phase
    target = [0] * n  # prefill target of the current phase: prompt + emitted
    d_pf = [0] * n  # decode counter at prefill completion
    g_pf = [0] * n  # tokens emitted at prefill completion
    decoding = [False] * n

    running: dict[int, None] = {}
    prefilling: list[int] = []
    waiting: deque[int] = deque()
    fin_ev: dict[int, list[tuple[int, int]]] = {}
    blk_ev: dict[int, list[tuple[int, int]]] = {}

    classes = _slo_classes(slo)
    cls: list[int] = wl.classes().tolist()
    if n and max(cls) >= len(classes):
        raise ControlkitError(f"workload {wl.name!r} uses SLO class {max(cls)} but only {len(classes)} SLO(s) given")
    # how each request ended: 0 not (yet), 1 finished, 2 rejected, 3 timed out; end_t when it did
    ended = [0] * n
    end_t = [math.nan] * n
    rejected = shed = timed_out = 0
    usable = total_blocks - watermark
    ok_req = [True] * n
    for i in range(n):
        if -(-(prm[i] + out[i] - 1) // bs) > total_blocks or -(-prm[i] // bs) > usable:
            ok_req[i] = False
            rejected += 1
            ended[i] = 2
            end_t[i] = arr[i]
    # client timeouts: deadlines in time order, one pointer (aborts are O(1) amortised per step)
    tmo = [math.inf if c.timeout_s is None else c.timeout_s for c in classes]
    dl_order = sorted((arr[i] + tmo[cls[i]], i) for i in range(n) if ok_req[i] and tmo[cls[i]] < math.inf)
    n_dl = len(dl_order)
    tp = 0
    next_dl = dl_order[0][0] if n_dl else math.inf
    queue_cap = math.inf if max_num_queued_reqs is None else max_num_queued_reqs
    multi = len(classes) > 1
    class_ttft = tuple(c.ttft_s for c in classes) if multi else ()

    policy.reset()
    limits = BatchLimits(ceiling, max_batched_tokens)
    last_raw: object = None
    faults = infeasible = extrap_steps = steps = 0
    fault_msgs: list[str] = []
    free = total_blocks
    ctx_total = 0
    n_dec = 0
    dcount = 0
    t = 0.0
    ai = 0
    last_dt = 0.0
    last_pf = last_dec = 0
    last_pre = last_fin = 0
    last_ttft: list[float] = []
    itl = 0.0
    t_last_dec = -1.0
    wait_version = 0
    obs_version = -1
    wait_tuple: tuple[int, ...] = ()
    wait_arr: list[float] = []
    wait_cls: tuple[int, ...] = ()
    kv_used: list[int] = []
    kv_dt: list[float] = []
    rec: list[tuple[Any, ...]] | None = [] if (record_steps or telemetry is not None) else None
    extrap_seen = False
    lo_b, hi_b = plant.batch_range
    step_fn = plant.step_s
    horizon = math.inf if horizon_s is None else float(horizon_s)

    def preempt(rid: int) -> None:
        nonlocal free, ctx_total, n_dec, wait_version
        if decoding[rid]:
            g = g_pf[rid] + (dcount - 1 - d_pf[rid])
            emitted[rid] = g
            ctx_total -= prm[rid] + g - 1
            decoding[rid] = False
            n_dec -= 1
        else:
            ctx_total -= computed[rid]
            prefilling.remove(rid)
        free += blocks[rid]
        blocks[rid] = 0
        computed[rid] = 0
        epoch[rid] += 1
        npre[rid] += 1
        del running[rid]
        waiting.appendleft(rid)
        wait_version += 1

    def abort(rid: int, now: float) -> None:
        """Client timeout: drop a request that has no first token yet, waiting or prefilling."""
        nonlocal free, ctx_total, wait_version
        if rid in running:
            ctx_total -= computed[rid]
            prefilling.remove(rid)
            free += blocks[rid]
            blocks[rid] = 0
            computed[rid] = 0
            del running[rid]
        else:
            waiting.remove(rid)
            wait_version += 1
        epoch[rid] += 1
        ended[rid] = 3
        end_t[rid] = now

    def shed_listed(indices: tuple[int, ...], now: float) -> set[int]:
        """Reject the listed waiting requests at ``indices`` (the policy's load shedding)."""
        nonlocal wait_version
        gone = {waiting[i] for i in indices}
        kept = [r for r in waiting if r not in gone]
        waiting.clear()
        waiting.extend(kept)
        wait_version += 1
        for r in gone:
            ended[r] = 2
            end_t[r] = now
        return gone

    def prefill_done(rid: int, now: float) -> None:
        nonlocal free, ctx_total, n_dec
        g = emitted[rid] + 1
        emitted[rid] = g
        if first[rid] != first[rid]:  # NaN: the first token
            first[rid] = now
            last_ttft.append(now - arr[rid])
        o = out[rid]
        if g >= o:
            fin_t[rid] = now
            free += blocks[rid]
            blocks[rid] = 0
            ctx_total -= computed[rid]
            del running[rid]
            return
        decoding[rid] = True
        n_dec += 1
        d_pf[rid] = dcount
        g_pf[rid] = g
        remaining = o - g
        ep = epoch[rid]
        key = dcount + remaining
        lst = fin_ev.get(key)
        if lst is None:
            fin_ev[key] = [(rid, ep)]
        else:
            lst.append((rid, ep))
        cache = target[rid]
        j1 = (-cache) % bs + 1
        if j1 <= remaining:
            key = dcount + j1
            lst = blk_ev.get(key)
            if lst is None:
                blk_ev[key] = [(rid, ep)]
            else:
                lst.append((rid, ep))

    while True:
        while ai < n and arr[ai] <= t:
            if ok_req[ai]:
                if len(running) + len(waiting) >= queue_cap:
                    ended[ai] = 2
                    end_t[ai] = arr[ai]
                    shed += 1
                else:
                    waiting.append(ai)
                    wait_version += 1
            ai += 1
        while next_dl <= t:
            rid = dl_order[tp][1]
            tp += 1
            next_dl = dl_order[tp][0] if tp < n_dl else math.inf
            if not ended[rid] and first[rid] != first[rid]:  # no first token yet (NaN)
                abort(rid, t)
                timed_out += 1
        if not running and not waiting:
            if ai >= n:
                break
            t = max(t, arr[ai])
            continue
        if t >= horizon:
            break

        # ---- observe, decide, sanitize
        if obs_version != wait_version:
            wait_tuple = tuple(prm[r] + emitted[r] for r in islice(waiting, WAITING_LIST_LIMIT))
            wait_arr = [arr[r] for r in islice(waiting, WAITING_LIST_LIMIT)]
            if multi:
                wait_cls = tuple(cls[r] for r in islice(waiting, WAITING_LIST_LIMIT))
            obs_version = wait_version
        # ages of the listed waiting requests (O(listed) per step, only while a queue exists)
        wait_age = tuple([t - a for a in wait_arr]) if wait_arr else ()
        obs = _observation(
            t,
            len(running),
            len(waiting),
            total_blocks - free,
            total_blocks,
            last_pf,
            last_dec,
            ctx_total,
            last_dt,
            last_pre,
            last_fin,
            tuple(last_ttft),
            itl,
            (t - arr[waiting[0]]) if waiting else 0.0,
            wait_tuple,
            wait_age,
            limits.max_active_seqs,
            limits.max_batched_tokens or max_batched_tokens,
            bs,
            wait_cls,
            class_ttft,
        )
        try:
            raw: object = policy.decide(obs)
        except Exception as exc:  # a policy must never crash the engine
            raw = exc
        to_shed: tuple[int, ...] = ()
        if raw is last_raw and type(raw) is BatchLimits and not raw.admission_order and not raw.reject:
            pass  # the same object as last step, already validated
        elif (
            type(raw) is BatchLimits
            and type(raw.max_active_seqs) is int
            and 1 <= raw.max_active_seqs <= ceiling
            and (
                raw.max_batched_tokens is None
                or (
                    type(raw.max_batched_tokens) is int
                    and min_budget <= raw.max_batched_tokens <= max_batched_tokens
                )
            )
            and not raw.admission_order
            and not raw.reject
        ):
            limits = raw  # fast path: already in range, sanitize_limits would return the same values
            last_raw = raw
        else:
            if isinstance(raw, Exception):
                res_fault = f"policy raised {type(raw).__name__}: {raw}"
                new_limits = limits
            else:
                res = sanitize_limits(
                    raw,
                    last_safe=limits,
                    max_seqs_ceiling=ceiling,
                    min_batched_tokens=min_budget,
                    max_batched_tokens_ceiling=max_batched_tokens,
                    num_waiting=min(len(waiting), WAITING_LIST_LIMIT),
                )
                res_fault, new_limits = res.fault, res.limits
            if res_fault:
                faults += 1
                if len(fault_msgs) < 5 and res_fault not in fault_msgs:
                    fault_msgs.append(res_fault)
                last_raw = None
                # a stale admission order (or rejection) would index a queue that has changed since
                new_limits = BatchLimits(
                    new_limits.max_active_seqs, new_limits.max_batched_tokens, (), new_limits.flags
                )
            else:
                last_raw = raw
                to_shed = new_limits.reject
            limits = new_limits
        if limits.flags and "infeasible" in limits.flags:
            infeasible += 1
        cap = limits.max_active_seqs
        budget = limits.max_batched_tokens or max_batched_tokens
        order = limits.admission_order
        order_rids: list[int] | None = None
        if to_shed:
            if order:
                order_rids = [waiting[i] for i in order]
            gone = shed_listed(to_shed, t)
            shed += len(gone)
            if order_rids is not None:
                order_rids = [r for r in order_rids if r not in gone]
            if not waiting and not running:
                continue

        # ---- schedule
        num_pre = 0
        admitted_n = 0
        pf_tokens = 0
        done_pf: list[int] = []
        admit_ok = True
        is_decode_step = chunked_prefill
        if not chunked_prefill:
            if waiting and len(running) < cap:
                picks = order_rids if order_rids is not None else ([waiting[i] for i in order] if order else None)
                pi = 0
                while len(running) < cap:
                    if picks is not None:
                        if pi >= len(picks):
                            break
                        rid = picks[pi]
                        pi += 1
                        if rid in running:  # a repeated index
                            continue
                    elif waiting:
                        rid = waiting[0]
                    else:
                        break
                    need = prm[rid] + emitted[rid]
                    nb = -(-need // bs)
                    if pf_tokens + need > budget or free - nb < watermark:
                        break
                    if picks is None:
                        waiting.popleft()
                    else:
                        waiting.remove(rid)
                    wait_version += 1
                    free -= nb
                    blocks[rid] = nb
                    target[rid] = need
                    computed[rid] = need
                    running[rid] = None
                    pf_tokens += need
                    ctx_total += need
                    admitted_n += 1
                    done_pf.append(rid)
            is_decode_step = not done_pf
        if is_decode_step:
            dcount += 1
            needs = blk_ev.pop(dcount, None)
            if needs:
                need_ids = {r for r, ep in needs if ep == epoch[r]}
                while free < len(need_ids) and running:
                    victim = next(reversed(running))
                    preempt(victim)
                    num_pre += 1
                    need_ids.discard(victim)
                free -= len(need_ids)
                for r in need_ids:
                    blocks[r] += 1
                    nxt = dcount + bs
                    if nxt - d_pf[r] <= out[r] - g_pf[r]:
                        lst = blk_ev.get(nxt)
                        if lst is None:
                            blk_ev[nxt] = [(r, epoch[r])]
                        else:
                            lst.append((r, epoch[r]))
            admit_ok = num_pre == 0
        if chunked_prefill:
            rem = budget - n_dec
            for rid in list(prefilling):
                if rem <= 0:
                    break
                if rid not in running:
                    continue
                chunk = min(target[rid] - computed[rid], rem)
                nb = -(-(computed[rid] + chunk) // bs) - blocks[rid]
                while free < nb and running:
                    victim = next(reversed(running))
                    preempt(victim)
                    num_pre += 1
                    if victim == rid:
                        break
                if rid not in running:
                    break
                free -= nb
                blocks[rid] += nb
                computed[rid] += chunk
                pf_tokens += chunk
                ctx_total += chunk
                rem -= chunk
                if computed[rid] >= target[rid]:
                    prefilling.remove(rid)
                    done_pf.append(rid)
            if num_pre:
                admit_ok = False
            if admit_ok and waiting and rem > 0 and len(running) < cap:
                picks = order_rids if order_rids is not None else ([waiting[i] for i in order] if order else None)
                pi = 0
                while len(running) < cap and rem > 0:
                    if picks is not None:
                        if pi >= len(picks):
                            break
                        rid = picks[pi]
                        pi += 1
                        if rid in running:  # a repeated index
                            continue
                    elif waiting:
                        rid = waiting[0]
                    else:
                        break
                    need = prm[rid] + emitted[rid]
                    chunk = min(need, rem)
                    nb = -(-chunk // bs)
                    if free < nb:
                        break
                    if picks is None:
                        waiting.popleft()
                    else:
                        waiting.remove(rid)
                    wait_version += 1
                    free -= nb
                    blocks[rid] = nb
                    target[rid] = need
                    computed[rid] = chunk
                    running[rid] = None
                    pf_tokens += chunk
                    ctx_total += chunk
                    admitted_n += 1
                    rem -= chunk
                    if chunk >= need:
                        done_pf.append(rid)
                    else:
                        prefilling.append(rid)
        dec_now = n_dec if is_decode_step else 0
        if check_invariants and admitted_n:
            assert len(running) <= cap, f"admissions pushed running to {len(running)} above the cap {cap}"
            assert num_pre == 0, "a request was admitted in a step that preempted"
        if dec_now == 0 and pf_tokens == 0:
            if num_pre:  # everything runnable was preempted: schedule again from the freed cache
                continue
            if ai < n or next_dl < math.inf:  # nothing can run until the next arrival or timeout
                t = max(t, min(arr[ai] if ai < n else math.inf, next_dl))
                continue
            break  # no progress is possible: the rest is reported unfinished
        n_run_sched = len(running)
        n_wait_sched = len(waiting)
        dt = step_fn(dec_now, pf_tokens, ctx_total, n_run_sched - dec_now - len(done_pf))
        if step_noise_cv:
            dt *= 1.0 + step_noise_cv * max(-3.0, min(3.0, gauss(0.0, 1.0)))
        if dec_now and (dec_now > hi_b or dec_now < lo_b):
            extrap_steps += 1
            extrap_seen = True
        t_start = t
        t += dt
        ctx_total += dec_now
        steps += 1
        last_ttft.clear()
        last_fin = 0
        for rid in done_pf:
            if computed[rid] == target[rid] and not decoding[rid]:
                n_before = len(running)
                prefill_done(rid, t)
                if len(running) < n_before:
                    last_fin += 1
        if is_decode_step:
            fins = fin_ev.pop(dcount, None)
            if fins:
                for rid, ep in fins:
                    if ep != epoch[rid] or not decoding[rid]:
                        continue
                    fin_t[rid] = t
                    emitted[rid] = out[rid]
                    decoding[rid] = False
                    n_dec -= 1
                    free += blocks[rid]
                    blocks[rid] = 0
                    ctx_total -= prm[rid] + out[rid] - 1
                    del running[rid]
                    last_fin += 1
            if dec_now:
                itl = (t - t_last_dec) if (t_last_dec >= 0 and not chunked_prefill) else dt
                t_last_dec = t
        used = total_blocks - free
        if check_invariants:
            held = sum(blocks[r] for r in running)
            assert held == used and 0 <= free <= total_blocks, f"blocks not conserved: {held} != {used}"
            assert all(blocks[r] == 0 for r in waiting), "a waiting request holds blocks"
            assert len(set(waiting)) == len(waiting) and not set(waiting) & set(running), "request duplicated"
            assert not any(ended[r] for r in (*waiting, *running)), "an ended request is still queued"
        kv_used.append(used)
        kv_dt.append(dt)
        if rec is not None:
            rec.append(
                (
                    t_start,
                    dt,
                    n_run_sched,
                    n_wait_sched,
                    pf_tokens,
                    dec_now,
                    used,
                    total_blocks,
                    num_pre,
                    ctx_total,
                    cap,
                    budget,
                )
            )
        last_dt, last_pf, last_dec, last_pre = dt, pf_tokens, dec_now, num_pre

    if extrap_seen:
        warnings.warn(
            f"plant {plant.name!r}: {extrap_steps} of {steps} steps ran a decode batch outside the measured "
            "range "
            f"{plant.batch_range}; their step times are linear extrapolations",
            ExtrapolationWarning,
            stacklevel=2,
        )
    fin_arr = np.asarray(fin_t, dtype=float)
    end_arr = np.asarray(ended, dtype=np.int64)
    end_arr[~np.isnan(fin_arr)] = 1
    outcomes = RequestOutcomes(
        arrival_s=wl.arrival_s.copy(),
        first_token_s=np.asarray(first, dtype=float),
        finish_s=fin_arr,
        prompt_tokens=wl.prompt_tokens.copy(),
        output_tokens=wl.output_tokens.copy(),
        num_preemptions=np.asarray(npre, dtype=np.int64),
        status=end_arr,
        end_s=np.where(np.isnan(fin_arr), np.asarray(end_t, dtype=float), fin_arr),
        slo_class=np.asarray(cls, dtype=np.int64),
    )
    counters = {
        "rejected": rejected + shed,
        "shed": shed,
        "timed_out": timed_out,
        "clipped": num_clipped,
        "faults": faults,
        "infeasible": infeasible,
        "extrapolated": extrap_steps,
        "steps": steps,
    }
    metrics = compute_metrics(
        outcomes,
        classes,
        sim_time_s=t,
        window_s=window_s,
        kv_used=kv_used,
        kv_dt_s=kv_dt,
        kv_blocks_total=total_blocks,
        counters=counters,
        first_fault=fault_msgs[0] if fault_msgs else "",
    )
    from controlkit.sim.telemetry import steps_frame, write_requests, write_steps

    frame = steps_frame(rec or [])
    if telemetry is not None:
        write_steps(telemetry, frame, plant=plant, workload=wl.name)
    if requests_out is not None:
        write_requests(requests_out, outcomes)
    result = SimResult(
        metrics=metrics,
        requests=outcomes,
        plant_name=plant.name,
        workload_name=wl.name,
        fault_messages=tuple(fault_msgs),
    )
    if record_steps:
        object.__setattr__(result, "steps", frame)
    return result
