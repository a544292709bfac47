"""Load shedding, client timeouts and SLO classes in the simulator (issue 12).

Every request ends exactly once, as finished, rejected or timed out; aborts free their slot
and blocks (the engine's ``check_invariants`` verifies block conservation after every
step); a shed or timed-out request is never counted as good.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation, sanitize_limits
from controlkit.sim import SLO, Plant, Workload, simulate
from controlkit.sim.metrics import FINISHED, PENDING, REJECTED, TIMED_OUT
from identification.errors import ControlkitError


def toy_plant(blocks: int = 100) -> Plant:
    # decode: 10 ms + 1 ms per sequence; prefill: 5 ms + 10 us per token
    return Plant("toy", (1.0, 64.0), (0.010, 0.073), 0.005, 1e-5, kv_blocks_total=blocks, max_model_len=512)


def wl(arrival: list[float], prompt: list[int], output: list[int], cls: list[int] | None = None) -> Workload:
    return Workload(
        "t",
        np.asarray(arrival, float),
        np.asarray(prompt, np.int64),
        np.asarray(output, np.int64),
        None if cls is None else np.asarray(cls, np.int64),
    )


class Script:
    """Replays actions (BatchLimits or junk); a callable action is called with the observation."""

    def __init__(self, actions: list[object]) -> None:
        self.actions, self.i = actions, 0
        self.seen: list[Observation] = []

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        action = self.actions[self.i % len(self.actions)]
        self.i += 1
        return action(observation) if callable(action) else action  # type: ignore[no-any-return,return-value]

    def reset(self) -> None:
        self.i = 0


def reject_all(obs: Observation) -> BatchLimits:
    return BatchLimits(8, reject=tuple(range(len(obs.waiting_prompt_tokens))))


def test_a_policy_that_rejects_everything_has_no_goodput_and_everything_rejected() -> None:
    res = simulate(toy_plant(), wl([0.0, 0.1, 0.2], [16, 16, 16], [4, 4, 4]), Script([reject_all]), slo=SLO(1e9, 1e9))
    m = res.metrics
    assert res.requests.statuses.tolist() == [REJECTED] * 3
    assert (m.goodput_req_s, m.slo_attainment, m.num_finished, m.num_shed, m.rejection_rate) == (0.0, 0.0, 0, 3, 1.0)


def test_client_timeout_aborts_a_waiting_request_and_frees_its_slot() -> None:
    # cap 1: the long request holds the slot; the second one's client gives up after 0.5 s
    slo = SLO(1e9, 1e9, timeout_s=0.5)
    res = simulate(toy_plant(), wl([0.0, 0.0, 4.0], [16, 16, 16], [300, 4, 4]), Script([BatchLimits(1)]), slo=slo,
                   check_invariants=True)
    st_ = res.requests.statuses.tolist()
    assert st_ == [FINISHED, TIMED_OUT, FINISHED]
    assert res.requests.end_s is not None
    waited = res.requests.end_s[1] - res.requests.arrival_s[1]
    assert 0.5 <= waited < 0.6  # aborted at the first step boundary after its deadline
    assert res.metrics.num_timed_out == 1 and res.metrics.timeout_rate == pytest.approx(1 / 3)


def test_client_timeout_aborts_a_request_in_chunked_prefill_and_frees_its_blocks() -> None:
    # a budget of 16 tokens per step and a 480-token prompt: 30 chunks, its client gives up first
    slo = SLO(1e9, 1e9, timeout_s=0.05)
    res = simulate(toy_plant(blocks=40), wl([0.0, 0.2], [480, 16], [4, 4]), Script([BatchLimits(4, 16)]), slo=slo,
                   check_invariants=True, record_steps=True)
    assert res.requests.statuses.tolist() == [TIMED_OUT, FINISHED]
    # after the abort the blocks in use drop to what the second request holds
    assert res.steps["kv_blocks_used"].iloc[-1] <= 2


def test_queue_cap_rejects_arrivals_like_vllm_max_num_queued_reqs() -> None:
    res = simulate(toy_plant(), wl([0.0] * 5, [16] * 5, [50] * 5), Script([BatchLimits(1)]), slo=SLO(1e9, 1e9),
                   max_num_queued_reqs=2)
    assert res.requests.statuses.tolist() == [FINISHED, FINISHED, REJECTED, REJECTED, REJECTED]
    assert res.metrics.num_shed == 3


def test_slo_classes_have_their_own_targets_and_are_observed() -> None:
    # same timing, two classes: the tight class misses its TTFT, the loose one meets it
    slos = (SLO(0.001, 1.0, name="interactive"), SLO(10.0, 1.0, name="batch"))
    pol = Script([BatchLimits(8)])
    res = simulate(toy_plant(), wl([0.0, 0.0, 0.0], [64] * 3, [4] * 3, [0, 1, 1]), pol, slo=slos)
    assert res.metrics.class_attainment == (0.0, 1.0)
    assert res.metrics.slo_attainment == pytest.approx(2 / 3)
    assert pol.seen[0].waiting_slo_class == (0, 1, 1) and pol.seen[0].class_ttft_slo_s == (0.001, 10.0)
    with pytest.raises(ControlkitError, match="SLO class 1"):
        simulate(toy_plant(), wl([0.0], [8], [2], [1]), pol, slo=slos[:1])


def test_goodput_in_a_window_divides_by_the_window_not_the_drain_time() -> None:
    arrivals = list(np.arange(0.0, 10.0, 0.5))
    w = wl(arrivals, [16] * 20, [4] * 20)
    m = simulate(toy_plant(), w, Script([BatchLimits(8)]), slo=SLO(1e9, 1e9), window_s=(2.0, 8.0)).metrics
    assert m.window_s == 6.0 and m.num_window_requests == 12
    assert m.goodput_req_s == pytest.approx(12 / 6.0, rel=0.1)


def test_sanitize_rejects_bad_reject_indices_and_dedupes() -> None:
    safe = BatchLimits(2)
    assert sanitize_limits(BatchLimits(4, reject=(5,)), last_safe=safe, max_seqs_ceiling=8, num_waiting=3).fault
    ok = sanitize_limits(BatchLimits(4, reject=(1, 1, 0)), last_safe=safe, max_seqs_ceiling=8, num_waiting=3)
    assert ok.limits.reject == (1, 0) and not ok.fault


actions = st.one_of(
    st.builds(BatchLimits, st.integers(1, 12)),
    st.builds(
        BatchLimits,
        st.integers(1, 12),
        st.none(),
        st.just(()),
        st.just(frozenset()),
        st.lists(st.integers(0, 3), max_size=3).map(tuple),
    ),
    st.just(reject_all),
    st.builds(lambda c: BatchLimits(c, None, (1, 0)), st.integers(1, 6)),
    st.builds(lambda c: BatchLimits(c, None, (1, 0), frozenset(), (0,)), st.integers(1, 6)),
    st.just(None),
)
reqs = st.lists(
    st.tuples(st.floats(0.0, 0.5), st.integers(1, 150), st.integers(1, 60), st.integers(0, 1)), min_size=1, max_size=12
)


@given(
    reqs=reqs,
    script=st.lists(actions, min_size=1, max_size=6),
    blocks=st.integers(2, 30),
    chunked=st.booleans(),
    timeouts=st.tuples(st.floats(0.01, 1.0), st.floats(0.01, 1.0)),
    queue_cap=st.one_of(st.none(), st.integers(1, 6)),
    tight=st.floats(0.001, 0.5),
)
def test_every_request_ends_exactly_once_blocks_conserved_shed_never_good(
    reqs: list[tuple[float, int, int, int]],
    script: list[object],
    blocks: int,
    chunked: bool,
    timeouts: tuple[float, float],
    queue_cap: int | None,
    tight: float,
) -> None:
    reqs = sorted(reqs)
    w = wl([r[0] for r in reqs], [r[1] for r in reqs], [r[2] for r in reqs], [r[3] for r in reqs])
    plant = Plant("toy", (1.0, 512.0), (0.010, 0.50), 0.005, 1e-5, kv_blocks_total=blocks, max_model_len=160)
    slos = (SLO(tight, 0.05, timeout_s=timeouts[0]), SLO(0.5, 0.2, timeout_s=timeouts[1]))
    res = simulate(
        plant,
        w,
        Script(script),
        slo=slos,
        chunked_prefill=chunked,
        check_invariants=True,  # blocks conserved, no ended request queued, after every step
        max_batched_tokens=None if chunked else 256,
        max_num_queued_reqs=queue_cap,
    )
    r, m = res.requests, res.metrics
    status = r.statuses
    # every request ended exactly once: one terminal state each, none left pending
    assert not np.any(status == PENDING)
    assert np.count_nonzero(status == FINISHED) == m.num_finished
    assert np.count_nonzero(status == REJECTED) == m.num_rejected
    assert np.count_nonzero(status == TIMED_OUT) == m.num_timed_out
    assert m.num_finished + m.num_rejected + m.num_timed_out == len(reqs)
    # a finished request has a first token and a finish; a shed or timed-out one has no finish
    fin = status == FINISHED
    assert np.all(np.isfinite(r.finish_s[fin])) and np.all(np.isnan(r.finish_s[~fin]))
    # bounded waiting: no request waits for its first token longer than its timeout (+ one step)
    assert r.end_s is not None
    to = status == TIMED_OUT
    limit = np.asarray(timeouts)[r.slo_class] + 0.6
    assert np.all((r.end_s - r.arrival_s)[to] <= limit[to])
    # shed and timed-out requests are never good: good count <= finished, per class too
    targets = np.asarray([(s.ttft_s, s.tpot_s) for s in slos])[r.slo_class]
    good = fin & (r.ttft_s <= targets[:, 0]) & (r.tpot_s <= targets[:, 1])
    assert m.slo_attainment == pytest.approx(np.count_nonzero(good) / len(reqs))
    assert m.slo_attainment <= np.count_nonzero(fin) / len(reqs) + 1e-12


def test_admission_layer_rejects_late_requests_in_reject_mode_and_demotes_by_default() -> None:
    from controlkit.admission import AdmissionGuard

    obs = Observation(0.0, 2, 3, 20, 500, waiting_prompt_tokens=(64, 64, 64), waiting_age_s=(5.0, 0.5, 0.1),
                      block_size=16)
    demote = AdmissionGuard(ttft_slo_s=2.0, output_tokens_mean=100).plan(obs, cap=8)
    assert demote.order == (1, 2, 0) and demote.reject == ()
    shed = AdmissionGuard(ttft_slo_s=2.0, output_tokens_mean=100, late_action="reject").plan(obs, cap=8)
    assert shed.reject == (0,) and 0 not in shed.order and "shed" in shed.flags
    with pytest.raises(ValueError, match="late_action"):
        AdmissionGuard(ttft_slo_s=2.0, output_tokens_mean=100, late_action="drop")


def test_admission_layer_orders_slo_classes_earliest_deadline_first() -> None:
    from controlkit.admission import AdmissionGuard

    # the first-come request belongs to the loose class: the tight one's deadline is earlier
    obs = Observation(0.0, 0, 2, 0, 500, waiting_prompt_tokens=(16, 16), waiting_age_s=(1.0, 0.2), block_size=16,
                      waiting_slo_class=(1, 0), class_ttft_slo_s=(0.5, 10.0))
    plan = AdmissionGuard(ttft_slo_s=0.5, output_tokens_mean=10).plan(obs, cap=8)
    assert plan.order == (1, 0) and plan.num_demoted == 0


def test_static_guard_in_reject_mode_sheds_in_the_simulator() -> None:
    from policies import build_policy

    pol = build_policy("static-guard:max_num_seqs=1,ttft_s=0.2,late_action=reject,output_tokens_mean=50")
    w = wl([0.0] * 6, [16] * 6, [100] * 6)
    m = simulate(toy_plant(), w, pol, slo=SLO(0.2, 1.0, timeout_s=5.0), check_invariants=True).metrics
    assert m.num_shed >= 1 and m.num_timed_out == 0
    assert m.num_finished + m.num_shed == 6


def test_the_engines_fast_observation_equals_the_dataclass() -> None:
    import dataclasses

    from controlkit.sim.engine import _observation

    values = (1.5, 2, 3, 10, 100, 64, 2, 300, 0.01, 0, 1, (0.2,), 0.01, 0.5, (16, 32), (0.5, 0.1), 8, 512, 16,
              (0, 1), (1.0, 5.0))
    assert len(values) == len(dataclasses.fields(Observation))
    fast, slow = _observation(*values), Observation(*values)
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.num_running = 0  # type: ignore[misc]  # the point: it stays frozen
