"""The hook sheds load through vLLM's own abort path (real 0.33 scheduler, fake model outputs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from controlkit.contract import BatchLimits, Observation
from policies.vllm.config import HookConfig
from policies.vllm.shed import SHED_METRIC


@dataclass
class ShedOdd:
    """Cap 2; reject every listed waiting request whose prompt length is odd."""

    seen: list[Observation] = field(default_factory=list)

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        odd = tuple(i for i, p in enumerate(observation.waiting_prompt_tokens) if p % 2)
        order = tuple(reversed(range(len(observation.waiting_prompt_tokens))))
        return BatchLimits(2, reject=odd, admission_order=order)

    def reset(self) -> None:
        self.seen.clear()


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async-depth2"])
def test_shed_requests_are_aborted_by_vllm_freed_reported_and_counted(
    async_mode: bool, make_sched: Any, request_fn: Any
) -> None:
    from vllm.v1.engine import FinishReason
    from vllm.v1.outputs import ModelRunnerOutput

    from policies.vllm.scheduler import ControlledAsyncScheduler, ControlledScheduler

    cls = ControlledAsyncScheduler if async_mode else ControlledScheduler
    sched = make_sched(cls, async_scheduling=async_mode, controlkit=HookConfig(policy=ShedOdd(), decide_budget_s=60.0))
    pool = sched.kv_cache_manager.block_pool
    free_at_start = pool.free_block_queue.num_free_blocks
    n = 10
    for i in range(n):
        sched.add_request(request_fn(f"r{i}", 20 + i, 4))  # r1, r3, ... have odd prompts
    reasons: dict[str, Any] = {}
    admitted: list[str] = []
    pending: Any = None

    def update(step: tuple[Any, Any]) -> None:
        for eco in sched.update_from_output(*step).values():
            for o in eco.outputs:
                if o.finish_reason is not None:
                    assert o.request_id not in reasons, "a request ended twice"
                    reasons[o.request_id] = o.finish_reason

    for _ in range(300):
        if len(reasons) == n:
            break
        so = sched.schedule()
        admitted.extend(r.req_id for r in so.scheduled_new_reqs)
        ids = list(so.num_scheduled_tokens)
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                sampled_token_ids=[[] if sched.requests[r].is_prefill_chunk else [7] for r in ids])
        step: Any = (so, mro)
        if async_mode:
            step, pending = pending, step
        if step is not None:
            update(step)
    if pending is not None:
        update(pending)
    odd = {f"r{i}" for i in range(1, n, 2)}
    # every request ended exactly once: the odd ones aborted by vLLM, never scheduled; the rest finished
    assert set(reasons) == {f"r{i}" for i in range(n)}
    assert {r for r, why in reasons.items() if why == FinishReason.ABORT} == odd
    assert not odd & set(admitted) and set(admitted) == {f"r{i}" for i in range(0, n, 2)}
    # vLLM freed everything: no request left, every block back in the pool
    assert not sched.requests and not sched.waiting and not sched.running
    assert pool.free_block_queue.num_free_blocks == free_at_start
    shedder = sched.controlkit.shedder
    assert shedder.total == len(odd) and f"{SHED_METRIC} {len(odd)}" in shedder.exposition()
    assert sched.controlkit.guard.total_faults == 0


def test_a_failing_abort_path_is_contained_and_the_engine_goes_on(make_sched: Any, request_fn: Any) -> None:
    from vllm.v1.outputs import ModelRunnerOutput

    from policies.vllm.scheduler import ControlledScheduler

    sched = make_sched(ControlledScheduler, async_scheduling=False,
                       controlkit=HookConfig(policy=ShedOdd(), decide_budget_s=60.0))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise AttributeError("finish_requests moved in this vLLM")

    sched.finish_requests = broken  # the abort path of another vLLM version
    for i in range(6):
        sched.add_request(request_fn(f"r{i}", 20 + i, 3))
    finished: set[str] = set()
    for _ in range(200):
        if len(finished) == 6:
            break
        so = sched.schedule()
        ids = list(so.num_scheduled_tokens)
        mro = ModelRunnerOutput(req_ids=ids, req_id_to_index={r: i for i, r in enumerate(ids)},
                                sampled_token_ids=[[] if sched.requests[r].is_prefill_chunk else [7] for r in ids])
        for eco in sched.update_from_output(so, mro).values():
            finished.update(o.request_id for o in eco.outputs if o.finish_reason is not None)
    shedder = sched.controlkit.shedder
    assert shedder.faults == 1 and shedder.total == 0  # shedding switched itself off after one fault
    assert finished == {f"r{i}" for i in range(6)}  # nothing shed, everything served
