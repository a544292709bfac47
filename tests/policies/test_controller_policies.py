import math

from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation
from controlkit.design import design_mpc, design_optimal, design_pid
from controlkit.plant import DesignPlant
from policies.registry import PolicyContext, available_kinds, build_policy

P = DesignPlant.example(
    b_max=256, arrival_rate_per_s=5, prompt_tokens_mean=400, output_tokens_mean=200
)
FILES = {
    "pid": design_pid(P, 0.05, 2.0, method="simc").to_policy_file(),
    "optimal": design_optimal(P, 0.05, 2.0).to_policy_file(),
    "mpc": design_mpc(P, 0.05, 2.0).to_policy_file(),
}


def test_kinds_are_registered():
    assert {"pid", "optimal", "mpc"} <= set(available_kinds())


obs = st.builds(
    Observation,
    t_s=st.floats(0, 1e4),
    num_running=st.integers(0, 500),
    num_waiting=st.integers(0, 5000),
    kv_blocks_used=st.integers(0, 8000),
    kv_blocks_total=st.just(8000),
    last_step_s=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1)),
    ttft_s=st.lists(st.floats(0, 100), max_size=3).map(tuple),
    oldest_wait_s=st.floats(0, 100),
)


@settings(max_examples=30)
@given(st.sampled_from(sorted(FILES)), st.lists(obs, min_size=1, max_size=40))
def test_controller_policies_never_raise_and_respect_their_limits(kind, observations):
    pol = build_policy(FILES[kind], PolicyContext(kv_blocks_total=8000, max_num_seqs=256))
    prev = None
    for o in observations:
        lim = pol.decide(o)
        assert isinstance(lim, BatchLimits)
        assert 1 <= lim.max_active_seqs <= 200  # memory-safe cap
        guarded = bool({"memory_guard", "model_limit"} & lim.flags)
        # the controller's own output is rate-limited; the memory guard and the measured-slope
        # limit may only lower it
        if prev is not None and kind != "optimal" and not guarded and not prev[1]:
            assert abs(lim.max_active_seqs - prev[0]) <= 8
        prev = (lim.max_active_seqs, guarded)


def test_pid_policy_tracks_the_tpot_setpoint_and_flags_overload():
    pol = build_policy(FILES["pid"], PolicyContext(max_num_seqs=256))
    cap = 10
    for i in range(2000):
        step = 0.02 + 1.5e-4 * cap
        lim = pol.decide(
            Observation(
                t_s=i * step,
                num_running=cap,
                num_waiting=100,
                kv_blocks_used=0,
                kv_blocks_total=8000,
                last_step_s=step,
                oldest_wait_s=0.1,
            )
        )
        cap = lim.max_active_seqs
    assert math.isclose(0.02 + 1.5e-4 * cap, 0.045, abs_tol=2e-4)  # 0.9 x TPOT SLO
    for i in range(200):
        lim = pol.decide(
            Observation(
                t_s=i,
                num_running=cap,
                num_waiting=5000,
                kv_blocks_used=0,
                kv_blocks_total=8000,
                last_step_s=0.02 + 1.5e-4 * cap,
                oldest_wait_s=10.0,
            )
        )
        cap = lim.max_active_seqs
    assert "infeasible" in lim.flags
