from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.design import design_mpc
from controlkit.mpc import MPCController
from controlkit.plant import DesignPlant


def make(cap_upper=180, rate=8, tpot=0.05):
    return MPCController(
        intercept_s=0.02,
        k_max=1.5e-4,
        tpot_slo_s=tpot,
        ttft_slo_s=2.0,
        b_min=1,
        cap_upper=cap_upper,
        rate_limit=rate,
        prompt_tokens_mean=400,
        output_tokens_mean=200,
        budgets=(256, 1024, 4096),
        prefill_s_per_token=1e-5,
    )


@settings(max_examples=40)
@given(
    st.integers(1, 400),
    st.integers(1, 30),
    st.integers(10, 300),
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 2000), st.floats(0, 200)), min_size=1, max_size=60
    ),
)
def test_mpc_holds_hard_constraints_and_stays_feasible_from_any_start(cap0, rate, upper, obs):
    m = make(upper, rate)
    cap = cap0
    for running, waiting, lam in obs:
        new, tokens = m.decide(num_running=running, num_waiting=waiting, cap=cap, arrivals_per_s=lam)
        assert abs(new - cap) <= rate  # rate limit, also when starting outside the hard set
        if cap <= upper:
            assert 1 <= new <= upper  # once inside the hard set, it stays inside (recursive feasibility)
        else:
            assert new <= max(cap - rate, upper)  # outside: moves towards it as fast as allowed
        assert tokens >= new
        cap = new


def test_mpc_backs_off_when_the_tpot_slo_binds_and_admits_when_the_queue_builds():
    m = make(tpot=0.04)
    cap, _ = m.decide(num_running=180, num_waiting=0, cap=180, arrivals_per_s=1.0)
    assert cap < 180  # 0.02 + 1.5e-4 * 180 = 0.047 > 0.04 -> the soft TPOT bound pulls back
    cap2, _ = m.decide(num_running=50, num_waiting=500, cap=50, arrivals_per_s=50.0)
    assert cap2 > 50


def test_mpc_design_certifies_memory_and_feasibility():
    p = DesignPlant.example()
    d = design_mpc(p, 0.05, 2.0)
    assert d.certificate.holds
    assert d.params["cap_upper"] * p.kv_blocks_per_seq <= p.kv_usable_blocks
