"""When the TTFT binds, every controller trades its TPOT headroom for admission (theory §8).

The PID's measured-slope limit, the optimum's derating and the MPC's soft TPOT target all
follow the TTFT supervisor's setpoint: ``0.9 x TPOT`` in ``normal``, the TPOT SLO once the
live queue's age has stayed above ``0.7 x TTFT`` for the dwell.  The optimum never exceeds its
certified ``b*``.  And the memory guard's backfill passes over late requests only.
"""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.admission import AdmissionGuard
from controlkit.contract import Observation
from controlkit.design import design_mpc, design_optimal, design_pid
from controlkit.plant import DesignPlant
from policies.registry import PolicyContext, build_policy

P = DesignPlant.example(b_max=256, arrival_rate_per_s=5, prompt_tokens_mean=400, output_tokens_mean=200)
TPOT, TTFT = 0.05, 2.0
K = P.k_max  # no prefill cost: k_eff = k_max
NORMAL_LIMIT = math.floor((0.9 * TPOT - P.intercept_s) / K)  # 166
TTFT_LIMIT = math.floor((TPOT - P.intercept_s) / K)  # 200
CTX = PolicyContext(kv_blocks_total=10**6, max_num_seqs=256)


def obs(i: int, cap: int, age_s: float) -> Observation:
    """A fast plant (the PID wants more) with ``waiting`` requests of age ``age_s``."""
    waiting = 8 if age_s > 0 else 0
    return Observation(
        t_s=i * 0.03, num_running=cap, num_waiting=waiting, kv_blocks_used=0, kv_blocks_total=10**6,
        last_step_s=P.intercept_s + 0.5 * K * cap, num_decode_tokens=cap, oldest_wait_s=age_s,
        waiting_prompt_tokens=(100,) * waiting, waiting_age_s=(age_s,) * waiting,
    )  # fmt: skip


def run(policy, age_s: float, n: int, cap: int = 10):
    caps, flags = [], set()
    for i in range(n):
        lim = policy.decide(obs(i, cap, age_s))
        cap = lim.max_active_seqs
        caps.append(cap)
        flags |= lim.flags
    return caps, flags


def test_pid_limit_rises_to_the_tpot_slo_only_while_the_ttft_binds():
    pol = build_policy(design_pid(P, TPOT, TTFT, method="simc").to_policy_file(), CTX)
    caps, flags = run(pol, 0.0, 400)
    assert max(caps) == NORMAL_LIMIT and "model_limit" in flags and "mode_normal" in flags
    caps, flags = run(pol, 1.8, 400, caps[-1])  # live requests older than 0.7 x TTFT
    assert "mode_ttft" in flags and max(caps) == min(TTFT_LIMIT, pol.b_max)
    caps, flags = run(pol, 0.0, 400, caps[-1])  # the queue drains: back to the normal limit
    assert caps[-1] == NORMAL_LIMIT


def test_optimal_raises_its_derated_cap_but_never_above_the_certified_optimum():
    pf = design_optimal(P, TPOT, TTFT).to_policy_file()
    b_star = pf.params["max_num_seqs"]
    pol = build_policy(pf, CTX)
    caps, _ = run(pol, 0.0, 100)
    assert set(caps) == {min(b_star, NORMAL_LIMIT)}
    caps, flags = run(pol, 1.8, 100)
    assert "mode_ttft" in flags and caps[-1] == min(b_star, TTFT_LIMIT) > caps[0]
    assert max(caps) <= b_star


def test_mpc_soft_tpot_target_follows_the_supervisor():
    pol = build_policy(design_mpc(P, TPOT, TTFT).to_policy_file(), CTX)
    run(pol, 0.0, 50)
    assert math.isclose(pol.mpc.tpot_target_s, 0.9 * TPOT)
    _, flags = run(pol, 1.8, 100)
    assert "mode_ttft" in flags and math.isclose(pol.mpc.tpot_target_s, TPOT)


@settings(max_examples=80)
@given(
    st.lists(st.tuples(st.floats(0, 6), st.integers(1, 2000)), min_size=1, max_size=40),
    st.integers(0, 40),
    st.integers(0, 600),
)
def test_memory_backfill_passes_over_late_requests_only(reqs, running, used):
    g = AdmissionGuard(ttft_slo_s=TTFT, output_tokens_mean=100, kv_headroom=0.0, prefill_s_per_token=1e-4)
    ages = tuple(sorted((a for a, _ in reqs), reverse=True))
    prompts = tuple(p for _, p in reqs)
    o = Observation(
        1.0, running, len(prompts), used, 1000, last_step_s=0.02, num_finished=1,
        waiting_prompt_tokens=prompts, waiting_age_s=ages,
    )  # fmt: skip
    plan = g.plan(o, running + len(prompts))
    order = plan.order or tuple(range(len(prompts)))
    assert sorted(order) == list(range(len(prompts)))  # a permutation: nobody dropped
    admitted = order[: max(plan.cap - running, 0)]
    grow = math.ceil(100 / 16)
    predicted = used + running * grow + sum(math.ceil(prompts[i] / 16) + grow for i in admitted)
    # the memory bound holds for whatever is admitted (b_min aside: the cap never goes below it)
    assert predicted <= 1000 or len(admitted) <= max(g.b_min - running, 0)
    # live requests keep FCFS: no live request is passed over by one behind it
    deadline = g._order(o, running + len(prompts))[0] or tuple(range(len(prompts)))
    live = deadline[: len(deadline) - plan.num_demoted]
    pos = {i: k for k, i in enumerate(deadline)}
    for i in live:
        if i not in admitted:
            assert all(pos[j] < pos[i] for j in admitted)


def test_with_ttft_priority_a_late_queue_raises_every_controller_to_overload():
    """Every waiting request already late (age 5 s > TTFT 2 s): the live pressure is 0, but
    with ``priority="ttft"`` the demotions alone push the supervisor to ``overload``; with
    the default ``"tpot"`` the controllers stay in ``normal``."""
    designs = {
        "pid": lambda prio: design_pid(P, TPOT, TTFT, method="simc", priority=prio),
        "optimal": lambda prio: design_optimal(P, TPOT, TTFT, priority=prio),
        "mpc": lambda prio: design_mpc(P, TPOT, TTFT, priority=prio),
    }
    for name, design in designs.items():
        for prio, mode in (("ttft", "mode_overload"), ("tpot", "mode_normal")):
            pol = build_policy(design(prio).to_policy_file(), CTX)
            _, flags = run(pol, 5.0, 200)
            assert mode in flags, (name, prio, sorted(flags))
            assert "infeasible" in flags  # raised by the admission guard's demotions either way
            if prio == "tpot":
                assert "mode_overload" not in flags and "mode_ttft" not in flags, (name, sorted(flags))
    pol = build_policy(designs["pid"]("ttft").to_policy_file(), CTX)
    caps, _ = run(pol, 5.0, 400)
    assert max(caps) == min(math.floor((1.5 * TPOT - P.intercept_s) / K), pol.b_max)
