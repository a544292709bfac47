"""The hook applies ``BatchLimits.admission_order`` to vLLM's waiting queue (real scheduler)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation
from policies.vllm.admission import reorder_head
from policies.vllm.config import HookConfig


@given(st.integers(0, 60).flatmap(lambda n: st.tuples(
    st.just(n), st.permutations(range(min(n, 32))).flatmap(lambda p: st.integers(0, len(p)).map(lambda k: p[:k])))))
def test_reorder_head_puts_the_listed_first_and_keeps_the_rest_in_order(case: tuple[int, list[int]]) -> None:
    n, order = case
    queue = deque(range(n))
    moved = reorder_head(queue, tuple(order))
    out = list(queue)
    assert sorted(out) == list(range(n))  # nothing lost, nothing duplicated
    assert out[: len(order)] == list(order)
    rest = out[len(order):]
    assert rest == sorted(rest)  # the others keep their relative (FCFS) order
    assert moved == (list(order) != list(range(len(order))))


@pytest.mark.parametrize("order", [(0, 0), (3,), (-1, 0)])
def test_reorder_head_refuses_bad_orders_and_leaves_the_queue(order: tuple[int, ...]) -> None:
    queue = deque("abc")
    with pytest.raises(ValueError, match="distinct indices"):
        reorder_head(queue, order)
    assert list(queue) == list("abc")


@dataclass
class LongestFirst:
    """Admit the longest listed prompt first (or return a fixed bad order); cap fixed."""

    cap: int
    bad_order: tuple[int, ...] | None = None
    seen: list[Observation] = field(default_factory=list)

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        prompts = observation.waiting_prompt_tokens
        if self.bad_order is not None:
            return BatchLimits(self.cap, admission_order=self.bad_order if prompts else ())
        order = sorted(range(len(prompts)), key=lambda i: -prompts[i])
        return BatchLimits(self.cap, admission_order=tuple(order))

    def reset(self) -> None:
        self.seen.clear()


def _drive_admissions(
    make_sched: Any, request_fn: Any, policy: Any, *, async_mode: bool, n: int = 10
) -> tuple[list[str], Any]:
    from vllm.v1.outputs import ModelRunnerOutput

    from policies.vllm.scheduler import ControlledAsyncScheduler, ControlledScheduler

    cls = ControlledAsyncScheduler if async_mode else ControlledScheduler
    sched = make_sched(cls, async_scheduling=async_mode, controlkit=HookConfig(policy=policy, decide_budget_s=60.0))
    for i in range(n):
        sched.add_request(request_fn(f"r{i}", 20 + i, 4))
    admitted: list[str] = []
    finished: set[str] = set()
    pending: Any = None

    def update(step: tuple[Any, Any]) -> None:
        for eco in sched.update_from_output(*step).values():
            finished.update(o.request_id for o in eco.outputs if o.finish_reason is not None)

    for _ in range(500):
        if len(finished) == n:
            break
        so = sched.schedule()
        admitted.extend(r.req_id for r in so.scheduled_new_reqs)
        queued = [r.request_id for r in sched.waiting] + [r.request_id for r in sched.kv_holding_waiting]
        running = [r.request_id for r in sched.running]
        # never lose or duplicate a request
        assert len(set(queued)) == len(queued) and not set(queued) & set(running)
        assert len(queued) + len(running) + len(finished) == n
        ids = list(so.num_scheduled_tokens)
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                sampled_token_ids=[[] if sched.requests[r].is_prefill_chunk else [7] for r in ids])
        step: Any = (so, mro)
        if async_mode:  # depth-2 batch queue: update step N after scheduling step N+1
            step, pending = pending, step
        if step is not None:
            update(step)
    if pending is not None:
        update(pending)
    assert len(finished) == n and admitted and sorted(set(admitted)) == sorted(f"r{i}" for i in range(n))
    return admitted, sched


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async-depth2"])
def test_policy_order_decides_who_is_admitted_first(async_mode: bool, make_sched: Any, request_fn: Any) -> None:
    policy = LongestFirst(cap=2)
    admitted, sched = _drive_admissions(make_sched, request_fn, policy, async_mode=async_mode)
    # FCFS would admit r0, r1, ...; longest prompt first admits r9, r8, ... at every admission
    assert admitted == [f"r{i}" for i in reversed(range(10))]
    hook = sched.controlkit
    assert hook.orders_applied > 0 and hook.guard.total_faults == 0
    assert policy.seen[0].waiting_prompt_tokens == tuple(20 + i for i in range(10))


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async-depth2"])
@pytest.mark.parametrize("bad", [(10,), (0, -1), (99, 0)])
def test_out_of_range_order_is_a_fault_and_keeps_fcfs(
    async_mode: bool, bad: tuple[int, ...], make_sched: Any, request_fn: Any
) -> None:
    policy = LongestFirst(cap=2, bad_order=bad)
    admitted, sched = _drive_admissions(make_sched, request_fn, policy, async_mode=async_mode)
    assert admitted == [f"r{i}" for i in range(10)]
    hook = sched.controlkit
    assert hook.orders_applied == 0 and hook.guard.faults["invalid"] > 0


def test_repeated_indices_are_applied_once(make_sched: Any, request_fn: Any) -> None:
    policy = LongestFirst(cap=2, bad_order=(1, 1, 0, 1))  # valid indices (while >= 2 wait), repeated
    admitted, sched = _drive_admissions(make_sched, request_fn, policy, async_mode=False)
    assert admitted[:2] == ["r1", "r0"] and len(admitted) == 10
    assert sched.controlkit.orders_applied > 0


@dataclass
class Recorder:
    """Records observations; fixed cap; optionally declares it does not read the waiting lists."""

    cap: int = 2
    seen: list[Observation] = field(default_factory=list)

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        return BatchLimits(self.cap)

    def reset(self) -> None:
        self.seen.clear()


class NoDetails(Recorder):
    needs_waiting_details = False


def _queue_with_arrivals(make_sched: Any, request_fn: Any, policy: Any, n: int = 40) -> Any:
    from policies.vllm.scheduler import ControlledScheduler

    sched = make_sched(ControlledScheduler, controlkit=HookConfig(policy=policy))
    for i in range(n):
        req = request_fn(f"a{i}", 16 + i, 4)
        req.arrival_time = 1000.0 + i  # wall-clock seconds, as vLLM stamps them
        sched.add_request(req)
    sched.controlkit.observer.wall_clock = lambda: 1100.0
    return sched


def test_observation_lists_waiting_ages_in_queue_order(make_sched: Any, request_fn: Any) -> None:
    from controlkit.contract import WAITING_LIST_LIMIT as LISTED

    policy = Recorder(cap=2)
    n = LISTED + 20  # longer than the listed head
    sched = _queue_with_arrivals(make_sched, request_fn, policy, n=n)
    oldest = n + 100.0
    sched.controlkit.observer.wall_clock = lambda: 1000.0 + oldest
    sched.schedule()
    sched.schedule()
    first, second = policy.seen
    assert first.num_waiting == n and len(first.waiting_prompt_tokens) == LISTED
    assert first.waiting_prompt_tokens == tuple(16 + i for i in range(LISTED))
    assert first.waiting_age_s == tuple(oldest - i for i in range(LISTED))
    assert first.oldest_wait_s == oldest
    # two admitted (cap 2): the list moves on with the queue, ages from the same clock
    assert second.waiting_prompt_tokens == tuple(16 + i for i in range(2, 2 + LISTED))
    assert second.waiting_age_s == tuple(oldest - i for i in range(2, 2 + LISTED))
    # an arrival stamped ahead of this clock (skew) reads as age 0, never negative
    sched.controlkit.observer.wall_clock = lambda: 1010.5
    sched.schedule()
    ages = policy.seen[-1].waiting_age_s
    assert min(ages) == 0.0 and ages[0] == 10.5 - 2 and len(ages) == len(policy.seen[-1].waiting_prompt_tokens)


def test_policies_that_skip_the_waiting_lists_get_them_empty(make_sched: Any, request_fn: Any) -> None:
    policy = NoDetails(cap=2)
    sched = _queue_with_arrivals(make_sched, request_fn, policy)
    sched.schedule()
    obs = policy.seen[0]
    assert obs.waiting_prompt_tokens == () and obs.waiting_age_s == ()
    assert obs.num_waiting == 40 and obs.oldest_wait_s == 100.0  # the counts stay
    from policies.static import StaticPolicy

    assert StaticPolicy.needs_waiting_details is False


def test_priority_queue_keeps_its_own_order(make_sched: Any, request_fn: Any) -> None:
    from vllm.v1.core.sched.request_queue import PriorityRequestQueue

    from policies.vllm.scheduler import ControlledScheduler

    sched = make_sched(ControlledScheduler, controlkit=HookConfig(policy=Recorder()))
    queue = PriorityRequestQueue()
    for i in range(5):
        queue.add_request(request_fn(f"p{i}", 16, 4))
    before = [r.request_id for r in queue]
    hook = sched.controlkit
    assert hook.apply_admission_order(queue, (0, 1)) is False and hook.orders_ignored == 0  # identity
    assert hook.apply_admission_order(queue, (3, 0)) is False
    assert [r.request_id for r in queue] == before and len(queue) == 5
    assert hook.orders_ignored == 1 and hook.orders_applied == 0
