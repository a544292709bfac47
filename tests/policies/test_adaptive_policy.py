"""The gain-scheduled ``pid-adaptive`` policy: scale invariance, re-tune log, fallback, drift in the simulator."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.certify import MarginSpec
from controlkit.certify.checks import margin_claims, pole_claim
from controlkit.certify.loop import ControllerSpec
from controlkit.contract import BatchLimits, Observation
from controlkit.design import guard_params
from controlkit.optimal import prefill_load_s_per_seq
from controlkit.plant import DesignPlant
from controlkit.policyfile import PolicyFile
from controlkit.schedule import scaled_controller, schedule_params
from identification.errors import ExtrapolationWarning
from policies.registry import PolicyContext, available_kinds, build_policy

# The gains design_pid / design_adaptive_pid give for the plant below (robust tuning, EMA 0.1, both
# certified: recomputing them takes ~40 s, so the runtime tests take them as given).
PERIOD_S = 0.028984284101479064
PID_GAINS = (317.919603722766, 5484.344595327483)
ADAPTIVE_GAINS = (71.56171580047138, 1234.4916912544954)


def _plant(tpot_s: float, intercept_s: float, slope: float, prefill_s_per_token: float) -> DesignPlant:
    return DesignPlant(
        sample_period_s=0.9 * tpot_s,
        intercept_s=intercept_s,
        k_min=0.95 * slope,
        k_nom=slope,
        k_max=1.05 * slope,
        b_min=1,
        b_max=168,
        kv_capacity_blocks=5659,
        block_size=16,
        tokens_per_seq=500,
        prompt_tokens_mean=200,
        output_tokens_mean=250,
        prefill_s_per_token=prefill_s_per_token,
    )


def _file(plant: DesignPlant, tpot_s: float, gains: tuple[float, float], adaptive: bool) -> PolicyFile:
    ctrl = ControllerSpec(kp=gains[0], ki=gains[1], sample_period_s=PERIOD_S)
    params = {
        "controller": ctrl.to_dict(),
        "setpoint_s": 0.9 * tpot_s,
        "reference_batch": 64,
        "guard": guard_params(plant),
        "model": {
            "intercept_s": plant.intercept_s,
            "k_eff_s_per_seq": plant.k_max + prefill_load_s_per_seq(plant),
            "tpot_target_s": 0.9 * tpot_s,
        },
    }
    if adaptive:
        env = (0.5 * plant.k_min, 4.0 * plant.k_max)
        params["schedule"] = schedule_params(plant, env, (0.6, 1.6))
    limits = {"b_min": 1, "b_max": plant.b_max, "rate_limit": 8}
    return PolicyFile(kind="pid-adaptive" if adaptive else "pid", params=params, limits=limits, slos={"tpot_s": tpot_s},
                      sample_period_s=PERIOD_S)


TOY = _plant(0.05, 0.02, 1.2e-4, 0.0)


def test_kind_is_registered():
    assert "pid-adaptive" in available_kinds()


def test_scaled_gains_have_the_reference_claims():
    """Gains scaled by k_ref/k_s on slopes scaled by k_s/k_ref: the same poles and margins (exactly)."""
    ctrl = ControllerSpec(kp=ADAPTIVE_GAINS[0], ki=ADAPTIVE_GAINS[1], sample_period_s=PERIOD_S)
    ref = TOY.replace(k_min=0.6 * TOY.k_nom, k_max=1.6 * TOY.k_nom, sample_period_s=PERIOD_S)
    base = [c.value for c in (pole_claim(ref, ctrl)[0], *margin_claims(ref, ctrl, MarginSpec())[0])]
    for f in (0.3, 3.7):
        p = ref.replace(k_min=ref.k_min * f, k_nom=ref.k_nom * f, k_max=ref.k_max * f)
        c = scaled_controller(ctrl, ref.k_nom, ref.k_nom * f)
        got = [x.value for x in (pole_claim(p, c)[0], *margin_claims(p, c, MarginSpec())[0])]
        assert np.allclose(got, base, rtol=1e-6)
    # and the unscaled gains on the scaled plant do differ (the test can fail)
    p = ref.replace(k_min=ref.k_min * 3.7, k_nom=ref.k_nom * 3.7, k_max=ref.k_max * 3.7)
    assert not np.isclose(margin_claims(p, ctrl, MarginSpec())[0][0].value, base[1], rtol=1e-3)


def _obs(i: int, cap: int, step_s: float) -> Observation:
    return Observation(
        t_s=i * step_s,
        num_running=cap,
        num_waiting=100,
        kv_blocks_used=0,
        kv_blocks_total=8000,
        num_decode_tokens=cap,
        last_step_s=step_s,
    )


def _drive(pol, slope: float, steps: int, rng: np.random.Generator, cap: int) -> tuple[int, list[BatchLimits]]:
    out = []
    for i in range(steps):
        n = max(1, cap + int(rng.integers(-3, 4)))  # requests finish and arrive: some excitation
        lim = pol.decide(_obs(i, n, 0.02 + slope * n))
        cap = lim.max_active_seqs
        out.append(lim)
    return cap, out


def test_retunes_are_logged_with_reasons_and_fallback_outside_the_envelope(caplog):
    pol = build_policy(_file(TOY, 0.05, (0.0, 4000.0), adaptive=True), PolicyContext(max_num_seqs=256))
    rng = np.random.default_rng(0)
    with caplog.at_level(logging.INFO, logger="controlkit.policies.adaptive"):
        cap, _ = _drive(pol, 2.0 * TOY.k_nom, 3000, rng, 50)  # slope doubled: inside the envelope
        assert pol.counters["retunes"] >= 1 and not pol.fallback
        assert abs(pol.k_sched / (2.0 * TOY.k_nom) - 1.0) < 0.2
        assert abs(0.02 + 2.0 * TOY.k_nom * cap - 0.045) < 0.003  # still regulated to 0.9 x TPOT
        cap, lims = _drive(pol, 8.0 * TOY.k_nom, 2000, rng, cap)  # beyond 4 x k_max: fall back
    assert pol.fallback and pol.counters["fallbacks"] == 1
    assert "adaptive_fallback" in lims[-1].flags
    safe = lims[-1].max_active_seqs
    assert 0.02 + 8.0 * TOY.k_nom * safe <= 0.045 * 1.02  # the safe cap meets the setpoint
    reasons = [e.reason for e in pol.events]
    assert "envelope_exit" in reasons and reasons[0] in ("drift", "estimate_moved")
    assert any("envelope_exit" in r.getMessage() for r in caplog.records)
    _drive(pol, 2.0 * TOY.k_nom, 3000, rng, safe)  # back inside: recovers, bumpless
    assert not pol.fallback and pol.counters["recoveries"] == 1


obs = st.builds(
    Observation,
    t_s=st.floats(0, 1e4),
    num_running=st.integers(0, 500),
    num_waiting=st.integers(0, 5000),
    kv_blocks_used=st.integers(0, 8000),
    kv_blocks_total=st.just(8000),
    num_decode_tokens=st.integers(0, 500),
    num_prefill_tokens=st.integers(0, 8192),
    last_step_s=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(0, 1)),
)


@settings(max_examples=30)
@given(st.lists(obs, min_size=1, max_size=60))
def test_never_raises_and_respects_limits(observations):
    pol = build_policy(_file(TOY, 0.05, ADAPTIVE_GAINS, adaptive=True), PolicyContext(kv_blocks_total=8000))
    for o in observations:
        lim = pol.decide(o)
        assert 1 <= lim.max_active_seqs <= TOY.b_max
        assert "policy_fault" not in lim.flags


def _tpot_after(result, t_from: float) -> np.ndarray:
    req = result.requests
    m = (req.first_token_s >= t_from) & np.isfinite(req.tpot_s) & (req.output_tokens > 1)
    return req.tpot_s[m]


SETTLE_S = 10.0  # stated settling time after the slope doubles (the running batch must drain)


def test_slope_doubling_in_the_simulator(shared_data):
    """llama-2-7b on H100, the decode slope doubles at step 2500: TPOT p99 <= 1.1 SLO after 10 s."""
    from controlkit.sim import SLO, load_plant, load_workload, simulate
    from controlkit.sim.drift import DriftingPlant, slope_scaled

    p = load_plant("vllm-h100:llama-2-7b")
    tpot = 3.0 * p.step_s(1, 0)
    slope, intercept = np.polyfit(np.asarray(p.decode_batch), np.asarray(p.decode_step_s), 1)
    plant = _plant(tpot, float(intercept), float(slope), p.prefill_s_per_token)
    wl = load_workload("sharegpt:poisson:10", num_requests=1500, seed=1)
    ctx = PolicyContext(kv_blocks_total=p.kv_blocks_total, max_num_seqs=256)
    runs = {}
    for name, spec in (
        ("static", "static:max_num_seqs=256"),
        ("pid", _file(plant, tpot, PID_GAINS, adaptive=False)),
        ("adaptive", _file(plant, tpot, ADAPTIVE_GAINS, adaptive=True)),
    ):
        drift = DriftingPlant(p, slope_scaled(p, 2.0), switch_after_steps=2500)
        pol = build_policy(spec, ctx)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExtrapolationWarning)
            res = simulate(drift.as_plant(), wl, pol, slo=SLO(ttft_s=1e6, tpot_s=tpot), record_steps=True)
        t_switch = float(res.steps.t_s.iloc[2500])
        runs[name] = (np.quantile(_tpot_after(res, t_switch + SETTLE_S), 0.99) / tpot, pol)
    assert runs["static"][0] > 1.5  # the uncontrolled engine degrades: the scenario is a real test
    assert runs["adaptive"][0] <= 1.1
    ad = runs["adaptive"][1]
    assert ad.counters["retunes"] >= 1 and ad.k_sched > 1.5 * plant.k_nom  # it re-identified the change
    assert runs["pid"][0] <= 1.1  # the fixed-gain PID holds too here (its gain margin is > 20 dB)


def test_malformed_schedule_is_a_clear_error():
    f = _file(TOY, 0.05, ADAPTIVE_GAINS, adaptive=True)
    bad = PolicyFile(
        kind=f.kind, params=dict(f.params) | {"schedule": {"k_ref_s_per_seq": 1e-4}}, limits=f.limits, slos=f.slos
    )
    with pytest.raises(Exception, match=r"params\.schedule is malformed"):
        build_policy(bad)


def test_runs_behind_the_vllm_hooks_policy_guard(tmp_path):
    """The hook loads policy files through PolicyGuard: the adaptive kind runs there without faults."""
    from policies.vllm.failsafe import PolicyGuard

    path = tmp_path / "adaptive.json"
    _file(TOY, 0.05, ADAPTIVE_GAINS, adaptive=True).save(path)
    guard = PolicyGuard(str(path), fallback=BatchLimits(64), max_seqs_ceiling=256, log=False)
    cap = 32
    for i in range(300):
        slope = TOY.k_nom * (1.0 if i < 150 else 2.0)
        lim = guard.decide(_obs(i, cap, 0.02 + slope * cap))
        cap = lim.max_active_seqs
        assert 1 <= cap <= TOY.b_max
    # "slow" (over the 5 ms budget) depends on the machine's load, not on the policy
    assert guard.faults["raised"] == 0 and guard.faults["invalid"] == 0, dict(guard.faults)
