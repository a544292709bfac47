"""The optimum's step-capped token budget: every step within the TPOT SLO while the TTFT has slack.

The claim ``step_within_tpot_slo`` is checked three ways: the bound itself (any step the budget
allows is within it), closed-loop simulation on a plant at the edge of the certified slope
interval (no step over the SLO, no request misses TPOT), and negatively (a steeper plant fails
``certify``, and the throughput budget the claim replaces does break TPOT in simulation).
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.certify import certify_policy
from controlkit.contract import Observation
from controlkit.design import design_optimal
from controlkit.optimal import step_bound_s, token_budget
from controlkit.plant import DesignPlant
from controlkit.sim import SLO, simulate
from controlkit.sim.plants import Plant
from controlkit.sim.workloads import Workload
from policies.controllers import OptimalPolicy
from policies.registry import PolicyContext, build_policy

TPOT_SLO_S = 0.05
DESIGN = DesignPlant.example(
    prefill_s_per_token=5e-5, prompt_tokens_mean=400, output_tokens_mean=200, arrival_rate_per_s=2.0
)


def linear_plant(k_s_per_seq: float, c_p: float = 5e-5) -> Plant:
    """A simulator plant ``a + k n + c_p * prefill_tokens`` (no hidden costs)."""
    a = DESIGN.intercept_s
    return Plant(
        name=f"linear-k{k_s_per_seq:g}",
        decode_batch=(1.0, 512.0),
        decode_step_s=(a + k_s_per_seq, a + 512 * k_s_per_seq),
        prefill_base_s=0.0,
        prefill_s_per_token=c_p,
        kv_blocks_total=DESIGN.kv_capacity_blocks,
        max_num_seqs_default=512,
    )


def mixed_prompts(rate_per_s: float, n: int = 400, seed: int = 1) -> Workload:
    """Poisson arrivals; prompts up to 1,900 tokens (one fills a throughput-budget step)."""
    rng = np.random.default_rng(seed)
    arrival = np.cumsum(rng.exponential(1.0 / rate_per_s, n))
    prompts = rng.integers(20, 1900, n)
    outputs = rng.integers(2, 24, n)  # short outputs: one long step decides their TPOT
    return Workload("mixed", arrival, prompts, outputs)


@given(
    st.floats(1e-5, 1e-3),
    st.floats(1e-6, 2e-3),
    st.integers(1, 400),
    st.integers(1, 5000),
    st.data(),
)
def test_no_step_the_budget_allows_is_longer_than_the_bound(k, c_p, batch, budget, data):
    p = DESIGN.replace(k_min=k / 2, k_nom=k / 1.5, k_max=k, prefill_s_per_token=c_p)
    n = data.draw(st.integers(0, min(batch, budget)), label="decodes")
    prefill = data.draw(st.integers(0, budget - n), label="prefill tokens")
    assert p.intercept_s + k * n + c_p * prefill <= step_bound_s(p, batch, budget) + 1e-12


@given(st.floats(1e-5, 1e-3), st.floats(1e-6, 2e-3), st.integers(1, 300), st.floats(0.0, 0.5))
def test_the_step_capped_budget_keeps_its_bound_within_the_cap(k, c_p, batch, slack_s):
    p = DESIGN.replace(k_min=k / 2, k_nom=k / 1.5, k_max=k, prefill_s_per_token=c_p)
    cap_s = step_bound_s(p, batch, batch) + slack_s  # a cap the decodes alone meet
    budget = token_budget(p, batch, step_cap_s=cap_s)
    assert budget > batch
    assert step_bound_s(p, batch, budget) <= cap_s + 1e-9 or budget == batch + 1


def test_design_adds_a_certified_step_cap_and_certify_rechecks_it():
    d = design_optimal(DESIGN, TPOT_SLO_S, 2.0)
    pf = d.to_policy_file()
    sc = pf.params["step_cap"]
    assert sc["max_batched_tokens"] < pf.limits["max_batched_tokens"]
    assert step_bound_s(DESIGN, sc["batch"], sc["max_batched_tokens"]) <= TPOT_SLO_S
    claim = next(c for c in d.certificate.claims if c.name == "step_within_tpot_slo")
    assert claim.holds and claim.margin >= 0
    again = certify_policy(pf, DESIGN)
    assert again.holds and any(c.name == "step_within_tpot_slo" for c in again.claims)
    # a GPU twice as slow per sequence invalidates the claim, and certify says so
    slow = DESIGN.replace(k_min=2 * DESIGN.k_min, k_nom=2 * DESIGN.k_nom, k_max=2 * DESIGN.k_max)
    bad = certify_policy(pf, slow)
    failed = [c.name for c in bad.claims if not c.holds]
    assert "step_within_tpot_slo" in failed


def test_no_step_cap_without_a_prefill_cost():
    pf = design_optimal(DESIGN.replace(prefill_s_per_token=0.0), TPOT_SLO_S, 2.0).to_policy_file()
    assert "step_cap" not in pf.params


def _run(policy, k_s_per_seq: float, rate_per_s: float):
    return simulate(
        linear_plant(k_s_per_seq),
        mixed_prompts(rate_per_s),
        policy,
        slo=SLO(ttft_s=2.0, tpot_s=TPOT_SLO_S),
        max_num_seqs=512,
        record_steps=True,
    )


@pytest.mark.parametrize("k_edge", [DESIGN.k_min, DESIGN.k_max])
def test_in_closed_loop_no_step_exceeds_the_slo_and_no_request_misses_tpot(k_edge):
    pf = design_optimal(DESIGN, TPOT_SLO_S, 2.0).to_policy_file()
    policy = build_policy(pf, PolicyContext(kv_blocks_total=DESIGN.kv_capacity_blocks, max_num_seqs=512))
    res = _run(policy, k_edge, rate_per_s=2.0)
    assert res.metrics.num_finished == 400
    assert res.steps["step_s"].max() <= TPOT_SLO_S + 1e-12
    tpot = res.requests.tpot_s
    assert np.nanmax(tpot) <= TPOT_SLO_S + 1e-12


def test_the_throughput_budget_it_replaces_breaks_tpot_on_the_same_run():
    """Negative: the same cap with the TTFT-sized budget has steps (and requests) over the SLO."""
    pf = design_optimal(DESIGN, TPOT_SLO_S, 2.0).to_policy_file()
    cap, tokens = pf.params["step_cap"]["batch"], pf.limits["max_batched_tokens"]
    static = build_policy(f"static:max_num_seqs={cap},max_num_batched_tokens={tokens}", PolicyContext(max_num_seqs=512))
    res = _run(static, DESIGN.k_max, rate_per_s=2.0)
    assert res.steps["step_s"].max() > TPOT_SLO_S
    assert np.nanmax(res.requests.tpot_s) > TPOT_SLO_S


def test_queue_pressure_switches_to_the_throughput_budget_with_hysteresis():
    pf = design_optimal(DESIGN, TPOT_SLO_S, 2.0).to_policy_file()
    pol = build_policy(pf, PolicyContext(kv_blocks_total=8000, max_num_seqs=512))
    assert isinstance(pol, OptimalPolicy)
    capped, full = pf.params["step_cap"]["max_batched_tokens"], pf.limits["max_batched_tokens"]

    def obs(t: float, waiting: int, age: float) -> Observation:
        return Observation(
            t, 20, waiting, 500, 8000, last_step_s=0.03, oldest_wait_s=age,
            waiting_prompt_tokens=(1500,) * waiting, waiting_age_s=(age,) * waiting,
        )  # fmt: skip

    quiet = [pol.decide(obs(i * 0.03, 0, 0.0)) for i in range(30)]
    assert {lim.max_batched_tokens for lim in quiet} == {capped}
    busy = [pol.decide(obs(1 + i * 0.03, 40, 1.9)) for i in range(60)]
    budgets = [lim.max_batched_tokens for lim in busy]
    assert budgets[0] == capped and budgets[-1] == full  # switches, after a dwell
    first = budgets.index(full)
    assert first >= pol.budget_supervisor.dwell_decisions and set(budgets[first:]) == {full}  # and stays
    assert "budget_throughput" in busy[-1].flags
    back = [pol.decide(obs(5 + i * 0.03, 0, 0.0)).max_batched_tokens for i in range(80)]
    assert back[0] == full and back[-1] == capped
