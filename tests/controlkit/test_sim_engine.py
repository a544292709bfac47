"""Engine semantics: hand-computed cases and hypothesis invariants for any policy output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation
from controlkit.sim import SLO, Plant, Workload, simulate
from identification.errors import ExtrapolationWarning

SLO_LOOSE = SLO(ttft_s=1e9, tpot_s=1e9)


class Cap:
    def __init__(self, cap: int, tokens: int | None = None) -> None:
        self.limits = BatchLimits(cap, tokens)
        self.seen: list[Observation] = []

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        return self.limits

    def reset(self) -> None:
        self.seen.clear()


class Scripted:
    """Replays a list of actions: BatchLimits, raw junk, or an exception to raise."""

    def __init__(self, actions: list[object]) -> None:
        self.actions = actions
        self.i = 0

    def decide(self, observation: Observation) -> BatchLimits:
        action = self.actions[self.i % len(self.actions)]
        self.i += 1
        if isinstance(action, Exception):
            raise action
        return action  # type: ignore[return-value]  # deliberately anything

    def reset(self) -> None:
        self.i = 0


def toy_plant(blocks: int = 100, lo: float = 1.0, hi: float = 64.0) -> Plant:
    # decode: 10 ms + 1 ms per sequence; prefill: 5 ms + 10 us per token
    return Plant(
        "toy",
        (lo, hi),
        (0.009 + 0.001 * lo, 0.009 + 0.001 * hi),
        0.005,
        1e-5,
        kv_blocks_total=blocks,
        max_model_len=512,
    )


def wl(arrivals: list[float], prompts: list[int], outputs: list[int]) -> Workload:
    return Workload("t", np.array(arrivals, float), np.array(prompts, np.int64), np.array(outputs, np.int64))


@pytest.mark.parametrize("chunked", [True, False])
def test_single_request_has_hand_computed_ttft_and_tpot(chunked: bool) -> None:
    res = simulate(toy_plant(), wl([0.5], [100], [5]), Cap(8), slo=SLO_LOOSE, chunked_prefill=chunked)
    r = res.requests
    assert r.first_token_s[0] == pytest.approx(0.5 + 0.005 + 100e-5)
    # 4 decode steps at batch 1: 10 ms each
    assert r.finish_s[0] - r.first_token_s[0] == pytest.approx(4 * 0.010)
    assert res.metrics.tpot_p50_s == pytest.approx(0.010)
    assert res.metrics.num_steps == 5
    assert res.metrics.throughput_tok_s == pytest.approx(5 / r.finish_s[0])


def test_chunked_prefill_splits_a_long_prompt_under_the_budget() -> None:
    res = simulate(
        toy_plant(),
        wl([0.0], [250], [2]),
        Cap(8, 100),
        slo=SLO_LOOSE,
        max_batched_tokens=100,
        record_steps=True,
    )
    assert res.steps["num_prefill_tokens"].tolist()[:3] == [100, 100, 50]
    assert res.requests.first_token_s[0] == pytest.approx(3 * 0.005 + 250e-5)


def test_lowered_cap_blocks_admissions_but_never_evicts() -> None:
    class Drop:
        def __init__(self) -> None:
            self.n = 0

        def decide(self, observation: Observation) -> BatchLimits:
            self.n += 1
            return BatchLimits(4 if self.n == 1 else 1)

        def reset(self) -> None:
            self.n = 0

    res = simulate(
        toy_plant(),
        wl([0.0] * 6, [16] * 6, [10] * 6),
        Drop(),
        slo=SLO_LOOSE,
        record_steps=True,
        check_invariants=True,
    )
    running = res.steps["num_running"].tolist()
    assert running[0] == 4  # admitted under the first cap
    assert max(running[1:]) == 4  # still 4: nothing evicted after the cap dropped to 1
    assert res.metrics.num_finished == 6 and res.metrics.num_preemptions == 0
    assert running[-1] == 0 or running[-1] == 1


def test_preemption_frees_the_most_recent_request_and_both_finish() -> None:
    # 3 blocks of 16; two prompts of 16 take a block each; at the first decode both need a 2nd block.
    res = simulate(
        toy_plant(blocks=3), wl([0.0, 0.0], [16, 16], [20, 20]), Cap(8), slo=SLO_LOOSE, check_invariants=True
    )
    assert res.requests.num_preemptions.tolist() == [0, 1]
    assert res.metrics.num_finished == 2
    assert res.requests.finish_s[1] > res.requests.finish_s[0]


def test_request_that_can_never_fit_is_rejected_and_reported_unfinished() -> None:
    res = simulate(toy_plant(blocks=2), wl([0.0, 0.0], [100, 8], [4, 4]), Cap(8), slo=SLO_LOOSE)
    m = res.metrics
    assert (m.num_rejected, m.num_finished, m.num_unfinished) == (1, 1, 1)
    assert m.slo_attainment == pytest.approx(0.5)


def test_horizon_reports_unfinished_requests() -> None:
    res = simulate(
        toy_plant(), wl([0.0, 0.0, 5.0], [16, 16, 16], [500, 3, 3]), Cap(8), slo=SLO_LOOSE, horizon_s=1.0
    )
    assert res.metrics.num_finished == 1
    assert res.metrics.num_unfinished == 2
    assert res.metrics.num_finished + res.metrics.num_unfinished == 3


def test_slo_attainment_counts_both_slos_and_unfinished_as_misses() -> None:
    w = wl([0.0, 0.0], [16, 16], [50, 50])
    tight = simulate(toy_plant(), w, Cap(1), slo=SLO(ttft_s=0.1, tpot_s=1.0))
    # with a cap of 1 the second request waits for the first: its TTFT exceeds 0.1 s
    assert tight.metrics.slo_attainment == pytest.approx(0.5)
    assert tight.metrics.goodput_req_s == pytest.approx(1 / tight.metrics.sim_time_s)


def test_observation_reports_engine_state() -> None:
    pol = Cap(8)
    simulate(
        toy_plant(), wl([0.0, 0.0, 0.0], [40, 20, 30], [3, 3, 3]), pol, slo=SLO_LOOSE, chunked_prefill=False
    )
    first = pol.seen[0]
    assert first.num_waiting == 3 and first.num_running == 0 and first.waiting_prompt_tokens == (40, 20, 30)
    second = pol.seen[1]
    assert second.num_running == 3 and second.num_prefill_tokens == 90 and len(second.ttft_s) == 3
    assert second.kv_blocks_used == 3 + 2 + 2 and second.kv_blocks_total == 100


def test_extrapolated_steps_warn_once_and_are_counted() -> None:
    plant = toy_plant(lo=1.0, hi=2.0)
    with pytest.warns(ExtrapolationWarning, match="outside the measured range") as record:
        res = simulate(plant, wl([0.0] * 4, [16] * 4, [5] * 4), Cap(8), slo=SLO_LOOSE)
    assert len(record) == 1
    assert res.metrics.extrapolated_steps == 4  # 4 decode steps at batch 4


def test_admission_order_is_applied() -> None:
    class Shortest:
        def decide(self, observation: Observation) -> BatchLimits:
            w = observation.waiting_prompt_tokens
            return BatchLimits(1, None, tuple(sorted(range(len(w)), key=lambda i: w[i])))

        def reset(self) -> None:
            pass

    res = simulate(toy_plant(), wl([0.0, 0.0, 0.0], [300, 10, 100], [2, 2, 2]), Shortest(), slo=SLO_LOOSE)
    order = np.argsort(res.requests.first_token_s)
    assert order.tolist() == [1, 2, 0]


junk = st.one_of(
    st.builds(BatchLimits, st.integers(-5, 400), st.one_of(st.none(), st.integers(-5, 10**7))),
    st.just(BatchLimits(10**9)),
    st.just(BatchLimits(float("nan"))),  # type: ignore[arg-type]
    st.just(BatchLimits(3, None, (99,))),
    st.just(BatchLimits(4, None, (0, 0, 1))),
    st.just(BatchLimits(4, None, (1, 0))),
    st.just(None),
    st.just(float("nan")),
    st.just(RuntimeError("policy bug")),
    st.builds(BatchLimits, st.integers(1, 8), st.none(), st.just(()), st.just(frozenset({"infeasible"}))),
)
requests = st.lists(
    st.tuples(st.floats(0.0, 0.5), st.integers(1, 120), st.integers(1, 60)), min_size=1, max_size=10
)


@given(
    reqs=requests,
    actions=st.lists(junk, min_size=1, max_size=6),
    blocks=st.integers(2, 30),
    chunked=st.booleans(),
    horizon=st.one_of(st.none(), st.floats(0.05, 2.0)),
)
def test_engine_invariants_hold_for_any_trace_and_any_policy_output(
    reqs: list[tuple[float, int, int]],
    actions: list[object],
    blocks: int,
    chunked: bool,
    horizon: float | None,
) -> None:
    arrivals = sorted(a for a, _, _ in reqs)
    w = wl(arrivals, [p for _, p, _ in reqs], [o for _, _, o in reqs])
    plant = Plant("toy", (1.0, 512.0), (0.010, 0.50), 0.005, 1e-5, kv_blocks_total=blocks, max_model_len=160)
    kw = dict(
        slo=SLO(0.5, 0.05),
        chunked_prefill=chunked,
        horizon_s=horizon,
        check_invariants=True,
        max_batched_tokens=None if chunked else 256,
    )
    a = simulate(plant, w, Scripted(actions), **kw)  # type: ignore[arg-type]
    m = a.metrics
    n = len(reqs)
    assert m.num_finished + m.num_unfinished == n
    fin = a.requests.finished
    # finished requests are finished exactly once, in order first token <= finish
    assert np.all(a.requests.first_token_s[fin] <= a.requests.finish_s[fin])
    assert np.all(a.requests.first_token_s[fin] >= a.requests.arrival_s[fin])
    if horizon is None:
        assert m.num_unfinished == m.num_rejected
    junk_outputs = any(
        not isinstance(x, BatchLimits)
        or not (isinstance(x.max_active_seqs, int) and 0 <= x.max_active_seqs <= 256000)
        for x in actions
    )
    if not junk_outputs:
        assert m.policy_faults == 0 or any(isinstance(x, BatchLimits) and x.admission_order for x in actions)
    b = simulate(plant, w, Scripted(actions), **kw)  # type: ignore[arg-type]
    assert a.metrics.to_dict() == b.metrics.to_dict() or math.isnan(a.metrics.ttft_p50_s)
    np.testing.assert_array_equal(a.requests.finish_s, b.requests.finish_s)
    np.testing.assert_array_equal(a.requests.num_preemptions, b.requests.num_preemptions)


def test_faulty_policy_is_contained_and_counted() -> None:
    res = simulate(
        toy_plant(),
        wl([0.0, 0.0], [16, 16], [10, 10]),
        Scripted([RuntimeError("boom"), BatchLimits(-3), BatchLimits(float("nan"))]),  # type: ignore[arg-type]
        slo=SLO_LOOSE,
    )
    assert res.metrics.num_finished == 2
    assert res.metrics.policy_faults == res.metrics.num_steps
    assert "boom" in res.metrics.first_fault


def test_step_noise_is_deterministic_given_the_seed_and_changes_with_it() -> None:
    w = wl([0.0] * 5, [30] * 5, [40] * 5)
    a = simulate(toy_plant(), w, Cap(8), slo=SLO_LOOSE, step_noise_cv=0.1, seed=7)
    b = simulate(toy_plant(), w, Cap(8), slo=SLO_LOOSE, step_noise_cv=0.1, seed=7)
    c = simulate(toy_plant(), w, Cap(8), slo=SLO_LOOSE, step_noise_cv=0.1, seed=8)
    assert a.metrics.to_dict() == b.metrics.to_dict()
    assert a.metrics.sim_time_s != c.metrics.sim_time_s
