"""Turn a vLLM scheduler's state into :class:`Observation` and step records, cheaply.

:class:`StepObserver` is called by the hook at three points of every engine step:

1. :meth:`~StepObserver.observe`, at the top of ``schedule()``: builds the
   :class:`~controlkit.contract.Observation` the policy sees (running and waiting counts,
   KV blocks used and total, the tokens, step time, preemptions, finishes and first-token
   times of the last *completed* step, prompt lengths and ages of the head of the waiting
   queue);
2. :meth:`~StepObserver.on_schedule`, right after ``schedule()``: snapshots what was
   scheduled (prefill and decode tokens, preemptions, KV use, context tokens);
3. :meth:`~StepObserver.on_update`, right after ``update_from_output()``: closes the step,
   measures its duration and returns the step record.

It reads only scheduler attributes (``running``, ``waiting``, ``kv_cache_manager``,
``requests``, ``finished_req_ids``) and the returned ``SchedulerOutput``; it never calls
``make_stats()``, which would reset vLLM's own prefix-cache counters.

Definitions (vLLM has no step timestamps of its own):

* ``step_s`` is the time from the later of this step's ``schedule()`` entry and the
  previous step's ``update_from_output()`` exit, to this step's ``update_from_output()``
  exit.  In the synchronous engine that is schedule + execute + update; with async
  scheduling (depth-2 batch queue) it is the update-to-update interval, i.e. the iteration
  time.
* decode tokens are the requests scheduled for exactly one token; the rest of the step's
  tokens are prefill (exact without speculative decoding).
* ``itl_mean_s`` is the last step time when it decoded (every running decode request emits
  one token per step).
* ``ttft_s`` holds, for requests whose prefill completed in the last step, the time from
  their arrival (``Request.arrival_time``, wall clock) to the end of that step.
* ``waiting_age_s`` holds, for the listed head of ``waiting`` (at most :data:`~controlkit.contract.WAITING_LIST_LIMIT`,
  the same requests as ``waiting_prompt_tokens``), wall-clock now minus ``arrival_time``
  (one clock reading; never negative); ``oldest_wait_s`` is the same for the queue's head.
* KV blocks exclude vLLM's one reserved null block, so ``used / total`` equals vLLM's
  ``kv_cache_usage``.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from controlkit.contract import WAITING_LIST_LIMIT, Observation

__all__ = ["StepObserver", "make_observation"]

_computed = attrgetter("num_computed_tokens")
_prompt = attrgetter("num_prompt_tokens")
_arrival = attrgetter("arrival_time")

#: The order in which :func:`make_observation` takes its arguments (every Observation field).
OBSERVATION_FIELDS: tuple[str, ...] = (
    "t_s", "num_running", "num_waiting", "kv_blocks_used", "kv_blocks_total", "num_prefill_tokens",
    "num_decode_tokens", "num_context_tokens", "last_step_s", "num_preempted", "num_finished", "ttft_s",
    "itl_mean_s", "oldest_wait_s", "waiting_prompt_tokens", "waiting_age_s", "max_active_seqs",
    "max_batched_tokens", "block_size", "waiting_slo_class", "class_ttft_slo_s",
)


def _observation_builder() -> Callable[..., Observation]:
    """Return a positional constructor of :class:`Observation` that skips the frozen ``__init__``.

    A frozen dataclass sets each field through ``object.__setattr__`` (about 4.7 µs for 19
    fields); writing the slots through their descriptors builds the same, equal, immutable
    object in about 1.4 µs.  Falls back to the regular constructor if the contract ever gains
    a field this module does not know, or a ``__post_init__`` (validation must not be skipped).
    """
    names = tuple(f.name for f in dataclasses.fields(Observation))
    slots = getattr(Observation, "__slots__", ())
    if (
        set(names) != set(OBSERVATION_FIELDS) or len(names) != len(OBSERVATION_FIELDS)
        or hasattr(Observation, "__post_init__") or set(slots) != set(names)
    ):
        def regular(*values: Any) -> Observation:
            return Observation(**dict(zip(OBSERVATION_FIELDS, values, strict=True)))
        return regular
    setters = tuple(Observation.__dict__[name].__set__ for name in OBSERVATION_FIELDS)
    new = object.__new__

    def fast(*values: Any) -> Observation:
        obs: Observation = new(Observation)
        for setter, value in zip(setters, values, strict=True):
            setter(obs, value)
        return obs
    return fast


#: ``make_observation(*values)``: an :class:`Observation` from values in ``OBSERVATION_FIELDS`` order.
make_observation: Callable[..., Observation] = _observation_builder()


class StepObserver:
    """Per-step bookkeeping for one scheduler (see the module docstring).

    Parameters
    ----------
    block_size
        Tokens per KV block.
    context_tokens
        Sum the running requests' computed tokens every step (one pass over ``running``,
        about 10 µs at 512 requests); when False, context tokens are reported as unknown
        (``-1`` in step records, ``0`` in observations).
    records
        Keep what step records need (KV blocks, counts and limits at ``schedule()``) and
        return a record from :meth:`on_update`; when False only the observation's inputs are
        kept (the cheaper path when no step log is written).
    clock, wall_clock
        Monotonic and wall clocks (seconds), injectable for tests.
    """

    def __init__(
        self, block_size: int, *, clock: Any = time.monotonic, wall_clock: Any = time.time,
        context_tokens: bool = True, records: bool = True,
    ) -> None:
        self.block_size = block_size
        self.context_tokens = context_tokens and records
        self.records = records
        self.clock = clock
        self.wall_clock = wall_clock
        self.t0_s = clock()
        self.t0_unix_s = wall_clock()
        self.steps = 0
        self._pending: dict[int, tuple[Any, ...]] = {}
        self._prev_update_s = self.t0_s
        # the last completed step
        self.last_step_s = 0.0
        self.last_prefill_tokens = 0
        self.last_decode_tokens = 0
        self.last_preempted = 0
        self.last_finished = 0
        self.last_ttft_s: tuple[float, ...] = ()
        self.last_context_tokens = 0
        self._scheduler: Any = None
        self._free_blocks: Any = None
        self._kv_total = 0

    @staticmethod
    def kv_blocks(scheduler: Any) -> tuple[int, int]:
        """Return (used, total) KV blocks, excluding the reserved null block."""
        pool = scheduler.kv_cache_manager.block_pool
        total = int(pool.num_gpu_blocks) - 1
        return total - int(pool.get_num_free_blocks()), total

    def observe(
        self, scheduler: Any, max_active_seqs: int, max_batched_tokens: int, *, waiting_details: bool = True,
        now_s: float | None = None,
    ) -> Observation:
        """Build the observation for the decision at the top of ``schedule()``.

        With ``waiting_details`` the observation lists, for the first
        :data:`~controlkit.contract.WAITING_LIST_LIMIT` requests of vLLM's ``waiting`` queue in
        queue order, their prompt lengths (``waiting_prompt_tokens``) and their ages
        (``waiting_age_s``: wall-clock time now minus ``Request.arrival_time``, one clock
        reading for the whole list).  Requests in ``kv_holding_waiting`` (they hold KV blocks
        and vLLM always admits them first) are counted in ``num_waiting`` but not listed.
        Without it both lists are empty (saves a pass over the listed head when the policy
        does not read them).  ``now_s`` is this
        observer's ``clock()`` if the caller just read it.
        """
        now = self.clock() if now_s is None else now_s
        waiting = scheduler.waiting
        queued = len(waiting)
        num_waiting = queued + len(scheduler.kv_holding_waiting)
        oldest_wait_s = 0.0
        prompts: tuple[int, ...] = ()
        ages: tuple[float, ...] = ()
        if queued:
            wall = self.wall_clock()
            oldest_wait_s = max(0.0, wall - float(waiting.peek_request().arrival_time))
            if waiting_details:
                head = list(itertools.islice(waiting, WAITING_LIST_LIMIT))
                prompts = tuple(map(_prompt, head))
                ages = tuple([wall - a for a in map(_arrival, head)])
                if min(ages) < 0.0:  # an arrival stamped by a skewed clock
                    ages = tuple(max(0.0, a) for a in ages)
        if scheduler is not self._scheduler:  # the KV free-block queue lives as long as its scheduler
            self._scheduler = scheduler
            pool = scheduler.kv_cache_manager.block_pool
            self._free_blocks = pool.free_block_queue
            self._kv_total = int(pool.num_gpu_blocks) - 1
        total = self._kv_total
        used = total - self._free_blocks.num_free_blocks
        decode = self.last_decode_tokens
        return make_observation(
            now - self.t0_s, len(scheduler.running), num_waiting, used, total, self.last_prefill_tokens,
            decode, max(0, self.last_context_tokens), self.last_step_s, self.last_preempted,
            self.last_finished, self.last_ttft_s, self.last_step_s if decode else 0.0, oldest_wait_s,
            prompts, ages, max_active_seqs, max_batched_tokens, self.block_size, (), (),
        )

    def on_schedule(
        self, scheduler: Any, output: Any, t_entry_s: float, max_active_seqs: int, max_batched_tokens: int
    ) -> None:
        """Snapshot what ``schedule()`` just decided (call right after it returns)."""
        nst: dict[str, int] = output.num_scheduled_tokens
        total_tokens = output.total_num_scheduled_tokens
        scheduled = len(nst)
        if total_tokens == scheduled:  # every request got one token: pure decode, no list pass
            decode, prefilling = scheduled, None
        else:
            decode = list(nst.values()).count(1)
            prefilling = [rid for rid, n in nst.items() if n != 1]
        preempted = output.preempted_req_ids
        pending = self._pending
        if len(pending) > 16:  # steps that never got an update (aborted engine step)
            pending.clear()
        if not self.records:
            pending[id(output)] = (t_entry_s, total_tokens - decode, decode,
                                   len(preempted) if preempted else 0, prefilling)
            return
        used, total = self.kv_blocks(scheduler)
        running = scheduler.running
        context = sum(map(_computed, running)) if self.context_tokens else -1
        num_waiting = len(scheduler.waiting) + len(scheduler.kv_holding_waiting)
        pending[id(output)] = (
            t_entry_s, total_tokens - decode, decode, len(preempted) if preempted else 0, prefilling,
            len(running), num_waiting, used, total, context, max_active_seqs, max_batched_tokens,
        )

    def on_update(self, scheduler: Any, output: Any) -> tuple[float | int, ...] | None:
        """Close the step of ``output``; return its record (``STEP_LOG_FIELDS`` order) or None.

        None also when the observer keeps no records (``records=False``).
        """
        snap = self._pending.pop(id(output), None)
        now = self.clock()
        if snap is None:
            self._prev_update_s = now
            return None
        t_entry, prefill, decode, preempted, prefilling = snap[:5]
        prev = self._prev_update_s
        start = t_entry if t_entry > prev else prev
        step_s = now - start
        self._prev_update_s = now
        ttft: tuple[float, ...] = ()
        if prefilling:
            wall = self.wall_clock()
            requests = scheduler.requests
            firsts = []
            for rid in prefilling:
                req = requests.get(rid)
                if req is not None and req.num_output_tokens == 1 and not req.is_prefill_chunk:
                    firsts.append(max(0.0, wall - float(req.arrival_time)))
            ttft = tuple(firsts)
        self.steps += 1
        self.last_step_s = step_s
        self.last_prefill_tokens = prefill
        self.last_decode_tokens = decode
        self.last_preempted = preempted
        self.last_finished = len(scheduler.finished_req_ids)
        self.last_ttft_s = ttft
        if len(snap) == 5:
            return None
        running, waiting, used, total, context, cap, budget = snap[5:]
        self.last_context_tokens = context
        return (start - self.t0_s, step_s, running, waiting, prefill, decode, used, total, preempted,
                context, cap, budget)
