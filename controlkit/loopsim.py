"""A small, fast closed-loop simulation of the *modelled* loop, for property tests.

Not the engine simulator (:mod:`controlkit.sim`): here the step time is a function of the
cap alone, ``y_t = f(c_{t-d}) + disturbance_t + noise_t``, and the controller is the real
runtime :class:`~controlkit.pid.PID` built from a :class:`ControllerSpec`.  This is exactly
the loop the certificate speaks about, so every certified claim can be checked on it.

Examples
--------
>>> from controlkit.certify.loop import ControllerSpec
>>> ctrl = ControllerSpec(kp=0.0, ki=4000.0, sample_period_s=0.05)
>>> tr = simulate_pid(ctrl, setpoint_s=0.05, step_s=lambda b: 0.02 + 1.5e-4 * b, delay=1,
...                   b_min=1, b_max=256, start=1, n_steps=400)
>>> int(tr.cap[-1])
200
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from controlkit.certify.loop import ControllerSpec, loop_matrix
from controlkit.pid import PID

__all__ = ["LoopTrace", "certified_envelope", "initial_state", "piecewise_linear_plant", "simulate_pid"]


@dataclass(frozen=True, slots=True)
class LoopTrace:
    """Per-decision arrays of one closed-loop run."""

    cap: NDArray[np.int64]
    step_s: NDArray[np.float64]


def piecewise_linear_plant(intercept_s: float, slopes: list[float], b_max: int) -> Callable[[float], float]:
    """Return an increasing step-time curve with the given slopes on equal segments of ``[0, b_max]``."""
    knots = np.linspace(0.0, float(b_max), len(slopes) + 1)
    vals = intercept_s + np.r_[0.0, np.cumsum(np.diff(knots) * np.asarray(slopes))]

    def f(b: float) -> float:
        return float(
            np.interp(
                b,
                knots,
                vals,
                left=vals[0] + slopes[0] * (b - knots[0]),
                right=vals[-1] + slopes[-1] * (b - knots[-1]),
            )
        )

    return f


def make_pid(ctrl: ControllerSpec, setpoint_s: float, b_min: int, b_max: int, start: int) -> PID:
    """Build the runtime PID for ``ctrl`` (the same construction the ``pid`` policy uses)."""
    return PID(
        ctrl.kp,
        ctrl.ki,
        ctrl.kd,
        setpoint=setpoint_s,
        output_limits=(b_min, b_max),
        rate_limit=ctrl.rate_limit,
        derivative_filter_s=ctrl.derivative_filter_s,
        anti_windup=ctrl.anti_windup,
        tracking_gain=ctrl.tracking_gain,
        measurement_filter=ctrl.filter,
        initial_output=start,
    )


def simulate_pid(
    ctrl: ControllerSpec,
    *,
    setpoint_s: float,
    step_s: Callable[[float], float],
    delay: int,
    b_min: int,
    b_max: int,
    start: int,
    n_steps: int,
    noise_s: float = 0.0,
    seed: int = 0,
    disturbance_s: Callable[[int], float] | None = None,
) -> LoopTrace:
    """Run the loop for ``n_steps`` decisions from cap ``start`` (history filled with ``start``)."""
    pid = make_pid(ctrl, setpoint_s, b_min, b_max, start)
    rng = np.random.default_rng(seed)
    hist = [start] * delay  # hist[-d] is c_{t-d}
    caps = np.empty(n_steps, dtype=np.int64)
    ys = np.empty(n_steps)
    for t in range(n_steps):
        y = step_s(hist[-delay])
        if disturbance_s is not None:
            y += disturbance_s(t)
        if noise_s > 0:
            y += float(rng.normal(0.0, noise_s))
        c = pid.step(y, ctrl.sample_period_s)
        hist.append(c)
        caps[t], ys[t] = c, y
    return LoopTrace(caps, ys)


def initial_state(
    ctrl: ControllerSpec, delay: int, dev_cap: float, secant_slope: float
) -> NDArray[np.float64]:
    """Return the analysis state at the first decision for a run started at ``b* + dev_cap``.

    The history holds the start cap, the filter starts at the first sample and the PID's
    previous filtered value equals it (no proportional kick): every cap state is ``dev_cap``
    and every measured state ``secant_slope * dev_cap``.
    """
    n = loop_matrix(ctrl, delay, 1.0).a.shape[0]
    x = np.full(n, secant_slope * dev_cap)
    x[:delay] = dev_cap
    if ctrl.kd:
        x[-1] = 0.0
    return x


def certified_envelope(
    chol: NDArray[np.float64], rho: float, band_seq: float, x0: NDArray[np.float64], t: int
) -> float:
    """Return the certificate's bound on ``|c_t - b*|``: ``||L^-1 e0|| rho^t ||x0||_P + band``."""
    e0 = np.zeros(chol.shape[0])
    e0[0] = 1.0
    out_gain = float(np.linalg.norm(np.linalg.solve(chol, e0)))
    return out_gain * rho**t * float(np.linalg.norm(chol.T @ x0)) + band_seq
