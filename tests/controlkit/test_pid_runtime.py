import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.filters import FilterSpec
from controlkit.pid import PID
from identification.errors import PolicyError

measurements = st.lists(st.floats(min_value=0.0, max_value=10.0, allow_nan=False), min_size=1, max_size=200)


@given(
    measurements,
    st.integers(1, 20),
    st.integers(1, 50),
    st.integers(2, 400),
    st.sampled_from(["conditional", "back_calculation"]),
    st.floats(0.05, 1.0),
    st.sampled_from([FilterSpec("ema", alpha=0.3), FilterSpec("quantile", window=4), FilterSpec("none")]),
)
def test_pid_output_stays_within_limits_for_any_measurement_sequence(ys, rate, lo, span, aw, kt, filt):
    hi = lo + span
    pid = PID(
        3000.0,
        50000.0,
        5.0,
        setpoint=0.05,
        output_limits=(lo, hi),
        rate_limit=rate,
        anti_windup=aw,
        tracking_gain=kt,
        derivative_filter_s=0.02,
        measurement_filter=filt,
        initial_output=lo,
    )
    prev = pid.output
    for y in ys:
        out = pid.step(y, 0.05)
        assert isinstance(out, int)
        assert lo <= out <= hi
        assert abs(out - prev) <= rate
        prev = out


def test_integral_action_removes_offset_at_the_setpoint():
    pid = PID(0.0, 5000.0, setpoint=0.05, output_limits=(1, 500), rate_limit=10, initial_output=10)
    cap = 10
    for _ in range(600):
        cap = pid.step(0.02 + 1.5e-4 * cap, 0.05)
    assert cap == 200


def test_proportional_on_measurement_gives_no_kick_on_a_setpoint_step():
    pid = PID(1000.0, 0.0, setpoint=0.05, output_limits=(1, 500), initial_output=100)
    pid.step(0.04, 0.05)
    pid.setpoint = 0.08
    assert pid.step(0.04, 0.05) == 100
    pe = PID(
        1000.0,
        0.0,
        setpoint=0.05,
        output_limits=(1, 500),
        initial_output=100,
        proportional_on_measurement=False,
    )
    pe.step(0.04, 0.05)
    pe.setpoint = 0.08
    assert pe.step(0.04, 0.05) == 130


def test_switch_to_auto_is_bumpless_from_the_manual_output():
    pid = PID(100.0, 5000.0, setpoint=0.05, output_limits=(1, 500), rate_limit=4, initial_output=10)
    pid.set_auto_mode(False)
    pid.set_manual_output(300)
    assert pid.step(0.01, 0.05) == 300
    pid.set_auto_mode(True)
    out = pid.step(0.01, 0.05)
    assert 296 <= out <= 304
    assert pid.components.proportional == 0.0


def test_reset_forgets_state_and_bad_time_is_an_error():
    pid = PID(0.0, 5000.0, setpoint=0.05, output_limits=(1, 500), initial_output=10)
    for _ in range(20):
        pid.step(0.0, 0.05)
    pid.reset()
    assert pid.output == 10
    with pytest.raises(PolicyError, match="dt_s"):
        pid.step(0.01, 0.0)
    with pytest.raises(PolicyError, match="measurement"):
        pid.step(math.nan, 0.05)
    with pytest.raises(PolicyError, match="anti_windup"):
        PID(1.0, 1.0, setpoint=0.05, output_limits=(1, 5), anti_windup="clamp")


def test_back_calculation_unwinds_slower_than_conditional_integration():
    def run(aw: str, kt: float) -> int:
        pid = PID(
            0.0,
            20000.0,
            setpoint=0.05,
            output_limits=(1, 100),
            rate_limit=1000,
            anti_windup=aw,
            tracking_gain=kt,
            initial_output=50,
        )
        for _ in range(30):
            pid.step(0.0, 0.05)  # saturate high
        return pid.step(0.06, 0.05)  # now above the setpoint

    assert run("conditional", 1.0) < 100
    assert run("back_calculation", 0.05) == 100  # still wound up past the bound
