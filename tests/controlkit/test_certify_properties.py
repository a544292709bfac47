"""Every certified claim holds in closed-loop simulation; outside the certified region it fails."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.certify import certify_pid, certify_policy
from controlkit.certify.checks import crossing_slopes
from controlkit.design import design_pid
from controlkit.loopsim import certified_envelope, initial_state, piecewise_linear_plant, simulate_pid
from controlkit.plant import DesignPlant


def make_plant(k_min: float, ratio: float, delays: tuple[int, ...] = (1, 2), b_max: int = 256) -> DesignPlant:
    return DesignPlant(
        sample_period_s=0.04,
        intercept_s=0.015,
        k_min=k_min,
        k_nom=k_min * (1 + ratio) / 2,
        k_max=k_min * ratio,
        b_min=1,
        b_max=b_max,
        kv_capacity_blocks=200_000,
        block_size=16,
        tokens_per_seq=512,
        delays=delays,
    )


_DESIGNS: dict[tuple[float, float, str], object] = {}


def designed(k_min: float, ratio: float, method: str):  # cached: design is the slow part
    key = (k_min, ratio, method)
    if key not in _DESIGNS:
        p = make_plant(k_min, ratio)
        tpot = p.intercept_s + p.k_max * 180 / 0.9 + 1e-3
        _DESIGNS[key] = design_pid(p, tpot, method=method)
    return _DESIGNS[key]


plants = st.tuples(
    st.sampled_from([5e-5, 1.5e-4]), st.sampled_from([1.3, 2.0]), st.sampled_from(["simc", "robust"])
)


@settings(max_examples=25)
@given(plants, st.data())
def test_certified_controller_converges_from_any_bounded_start(cfg, data):
    d = designed(*cfg)
    assert d.certificate.holds, d.certificate.summary()
    p, c = d.plant, d.controller
    delay = data.draw(st.sampled_from(p.delays), label="delay")
    # a plant inside the certificate: piecewise-linear, every slope in [k_min, k_max] (edges included)
    slopes = data.draw(
        st.lists(st.sampled_from([p.k_min, p.k_max, 0.5 * (p.k_min + p.k_max)]), min_size=1, max_size=5),
        label="slopes",
    )
    b_star = data.draw(st.floats(p.b_min + 2, p.b_max - 2), label="b*")
    start = data.draw(st.integers(p.b_min, p.b_max), label="start")
    setpoint = d.tpot_target_s
    shape = piecewise_linear_plant(0.0, slopes, p.b_max)
    intercept = setpoint - shape(b_star)
    f = lambda b: intercept + shape(b)  # noqa: E731
    tr = simulate_pid(
        c, setpoint_s=setpoint, step_s=f, delay=delay, b_min=p.b_min, b_max=p.b_max, start=start, n_steps=1500
    )
    caps = np.r_[start, tr.cap]
    assert caps.min() >= p.b_min and caps.max() <= p.b_max
    assert np.abs(np.diff(caps)).max() <= c.rate_limit
    nums = d.certificate.numbers
    chol = np.asarray(nums["lyapunov_chol_by_delay"][str(delay)])
    rho = nums["contraction_rate_by_delay"][str(delay)]
    band = nums["quantisation_band_seq_by_delay"][str(delay)]
    secant = (f(start) - setpoint) / (start - b_star)
    x0 = initial_state(c, delay, start - b_star, secant)
    for t, cap in enumerate(tr.cap):
        assert abs(cap - b_star) <= certified_envelope(chol, rho, band, x0, t) + 1e-9
    # no limit cycle beyond the quantisation band once settled
    tail = tr.cap[-200:]
    assert np.abs(tail - b_star).max() <= band
    # the memory claim: the cap never exceeds the memory-safe batch
    assert caps.max() * p.kv_blocks_per_seq <= p.kv_usable_blocks


@settings(max_examples=10)
@given(plants, st.floats(-0.01, 0.01), st.integers(100, 600))
def test_certified_loop_recovers_after_a_load_step(cfg, jump_s, at):
    d = designed(*cfg)
    p, c = d.plant, d.controller
    sp = d.tpot_target_s
    f = lambda b: sp - p.k_nom * 100 + p.k_nom * b  # noqa: E731  b* = 100 before the step
    tr = simulate_pid(
        c,
        setpoint_s=sp,
        step_s=f,
        delay=max(p.delays),
        b_min=p.b_min,
        b_max=p.b_max,
        start=100,
        n_steps=at + 1500,
        disturbance_s=lambda t: jump_s if t >= at else 0.0,
    )
    b_after = min(max(100 - jump_s / p.k_nom, p.b_min), p.b_max)
    band = d.certificate.numbers["quantisation_band_seq_by_delay"][str(max(p.delays))]
    assert np.abs(tr.cap[-100:] - b_after).max() <= band + 1


def test_slope_beyond_the_crossing_slope_is_caught_by_certify_and_oscillates_in_simulation():
    d = designed(1.5e-4, 2.0, "robust")
    p, c = d.plant, d.controller
    pf = d.to_policy_file()
    s_crit = min(crossing_slopes(c, dl)[0] for dl in p.delays)
    bad = p.replace(k_min=p.k_min, k_nom=p.k_max, k_max=1.3 * s_crit)
    cert = certify_policy(pf, bad)
    assert not cert.claim("poles_inside_unit_circle").holds
    assert not cert.holds and "poles_inside_unit_circle" in cert.failure_message()
    # the predicted failure is observed: at 1.3x the crossing slope the loop never settles
    sp = d.tpot_target_s
    s = 1.3 * s_crit
    f = lambda b: sp - s * 100 + s * b  # noqa: E731
    tr = simulate_pid(
        c, setpoint_s=sp, step_s=f, delay=max(p.delays), b_min=p.b_min, b_max=p.b_max, start=90, n_steps=3000
    )
    tail = tr.cap[-300:]
    # a sustained oscillation (the rate limit bounds it into a limit cycle) ...
    assert tail.max() - tail.min() >= 10
    # ... where the same loop at the top certified slope settles to the quantisation level
    g = lambda b: sp - p.k_max * 100 + p.k_max * b  # noqa: E731
    ok = simulate_pid(
        c, setpoint_s=sp, step_s=g, delay=max(p.delays), b_min=p.b_min, b_max=p.b_max, start=90, n_steps=3000
    )
    assert ok.cap[-300:].max() - ok.cap[-300:].min() <= 2


def test_gains_scaled_up_leave_the_certified_region_and_the_loop_oscillates():
    d = designed(5e-5, 1.3, "simc")
    p = d.plant
    hot = d.controller.scaled(8.0)
    cert = certify_pid(p, hot)
    assert not cert.holds
    failed = {cl.name for cl in cert.failed}
    assert "poles_inside_unit_circle" in failed
    sp = d.tpot_target_s
    f = lambda b: sp - p.k_max * 120 + p.k_max * b  # noqa: E731
    tr = simulate_pid(
        hot, setpoint_s=sp, step_s=f, delay=2, b_min=p.b_min, b_max=p.b_max, start=110, n_steps=2000
    )
    tail = tr.cap[-300:]
    assert tail.max() - tail.min() >= 10  # a sustained limit cycle, not the +-1 quantisation dither


def test_exact_crossing_slope_agrees_with_the_pole_grid():
    d = designed(1.5e-4, 2.0, "robust")
    c = d.controller
    from controlkit.certify.loop import char_poly

    for dl in (1, 2):
        s = crossing_slopes(c, dl)[0]
        below = max(abs(np.roots(char_poly(c, dl, 0.99 * s))))
        above = max(abs(np.roots(char_poly(c, dl, 1.01 * s))))
        assert below < 1.0 < above
