import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.backlog import SloSupervisor
from controlkit.design import design_optimal
from controlkit.optimal import operating_point
from controlkit.plant import DesignPlant
from identification.errors import InfeasibleSpecError, UncertifiedError


def plant(**kw):
    return DesignPlant.example(**kw)


def test_tpot_slo_below_the_batch_one_step_time_is_infeasible_and_says_the_minimum():
    with pytest.raises(InfeasibleSpecError, match=r"minimum achievable TPOT is 0.02015"):
        operating_point(plant(), 0.01)


@given(st.floats(0.03, 0.2), st.floats(0.1, 10.0))
def test_scaling_latency_units_scales_slope_and_keeps_the_chosen_batch(tpot, scale):
    p = plant()
    q = p.replace(
        intercept_s=p.intercept_s * scale, k_min=p.k_min * scale, k_nom=p.k_nom * scale, k_max=p.k_max * scale
    )
    assert operating_point(p, tpot).batch == operating_point(q, tpot * scale).batch


@given(st.floats(0.021, 0.5), st.integers(100, 50_000))
def test_operating_point_meets_tpot_at_the_upper_slope_and_fits_memory(tpot, blocks):
    p = plant(kv_capacity_blocks=blocks)
    op = operating_point(p, tpot)
    assert p.step_upper_s(op.batch) <= tpot + 1e-12 or op.batch == p.b_min
    assert op.batch * p.kv_blocks_per_seq <= p.kv_usable_blocks
    assert op.max_batched_tokens >= op.batch
    assert design_optimal(p, tpot).certificate.holds


def test_optimal_design_certifies_its_ttft_load_range_and_reports_overload():
    p = plant(arrival_rate_per_s=1000.0, output_tokens_mean=200, prompt_tokens_mean=400)
    d = design_optimal(p, 0.05, ttft_slo_s=1.0)
    assert not d.operating_point.ttft_feasible  # the identified load is overload ...
    claim = next(c for c in d.certificate.claims if c.name == "ttft_load_range")
    assert claim.holds and 0 < claim.value < 1000.0 and "BEYOND" in claim.detail  # ... beyond the certified range
    assert not d.to_policy_file().uncertified
    # a TTFT SLO that even an idle engine misses leaves no load range: refused without the override
    impossible = design_optimal(p, 0.05, ttft_slo_s=0.001)
    with pytest.raises(UncertifiedError, match="ttft_load_range"):
        impossible.to_policy_file()
    assert impossible.to_policy_file(allow_uncertified=True).uncertified


@given(st.lists(st.floats(0.0, 6.0), min_size=50, max_size=300), st.sampled_from(["tpot", "ttft"]))
def test_supervisor_never_chatters_faster_than_its_dwell(pressures, priority):
    s = SloSupervisor(0.05, 2.0, priority=priority, dwell_decisions=10)
    modes = [s.update(x).mode for x in pressures]
    changes = [i for i in range(1, len(modes)) if modes[i] != modes[i - 1]]
    assert all(b - a >= 10 for a, b in itertools.pairwise(changes))


def test_supervisor_overload_flags_infeasible_and_priority_decides_the_setpoint():
    for prio, want in (("tpot", 0.05), ("ttft", 0.075)):
        s = SloSupervisor(0.05, 2.0, priority=prio, dwell_decisions=3)
        states = [s.update(5.0) for _ in range(20)]
        assert states[-1].mode == "overload" and "infeasible" in states[-1].flags
        assert states[-1].setpoint_s == pytest.approx(want)
        assert len({st_.mode for st_ in states[8:]}) == 1  # stays, no oscillation


def test_a_late_queue_drives_the_ttft_priority_supervisor_into_overload_only():
    """The controllers feed the oldest *live* request's age, which stays under the TTFT SLO by
    definition; ``late=True`` (requests demoted) is what lets ``priority="ttft"`` reach overload."""
    for prio, want_mode, want_setpoint in (("ttft", "overload", 0.075), ("tpot", "normal", 0.045)):
        s = SloSupervisor(0.05, 2.0, priority=prio, dwell_decisions=3)
        states = [s.update(0.0, late=True) for _ in range(10)]
        assert states[-1].mode == want_mode
        assert states[-1].setpoint_s == pytest.approx(want_setpoint)
        # without the late signal the live pressure alone never exceeds the SLO: no overload
        s2 = SloSupervisor(0.05, 2.0, priority=prio, dwell_decisions=3)
        assert {s2.update(1.99).mode for _ in range(30)} <= {"normal", "ttft"}
    # the queue recovers (no late requests, low pressure): back down, one dwell per mode
    s = SloSupervisor(0.05, 2.0, priority="ttft", dwell_decisions=3)
    for _ in range(10):
        s.update(0.0, late=True)
    assert [s.update(0.0).mode for _ in range(8)][-1] == "normal"


@pytest.mark.parametrize("designer", ["pid", "optimal", "mpc"])
def test_every_controller_design_records_its_priority(designer):
    from controlkit.design import design_mpc, design_pid

    p = DesignPlant.example()
    fn = {"pid": design_pid, "optimal": design_optimal, "mpc": design_mpc}[designer]
    assert fn(p, 0.05, 2.0, priority="ttft").params["priority"] == "ttft"
    with pytest.raises(ValueError, match="priority"):
        fn(p, 0.05, 2.0, priority="fast")
