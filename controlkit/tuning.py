"""PID tuning from the identified plant: the SIMC rule and a robust search over the slope interval.

The plant seen by the controller is a static gain ``s`` (s/seq) with ``d`` decisions of
delay and the measurement filter's lag.  Two tuners:

* :func:`simc_tune` -- Skogestad's SIMC rule on the first-order-plus-delay approximation
  ``k e^{-theta s} / (tau s + 1)`` with ``k = k_max`` (the worst case for stability),
  ``theta = (d_max + 1/2) T`` (delay plus half a sample for the hold), ``tau`` the EMA
  filter's time constant ``T (1 - alpha) / alpha``; closed-loop time constant
  ``tau_c = lambda_factor * theta``.  ``Kc = tau / (k (tau_c + theta))``,
  ``tau_I = min(tau, 4 (tau_c + theta))``, i.e. ``Kp = Kc``, ``Ki = Kc / tau_I``.
* :func:`robust_tune` -- a grid search over the integral loop gain ``g = Ki T k_max`` and the
  ratio ``Kp / (Ki T)``: keep the candidates whose phase and gain margins meet the spec at
  every slope of the interval and every delay, and take the one whose worst closed-loop
  pole radius is smallest (fastest guaranteed decay).

Both return a :class:`~controlkit.certify.loop.ControllerSpec`; certification is separate.

Examples
--------
>>> from controlkit.plant import DesignPlant
>>> p = DesignPlant(sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4,
...                 b_min=1, b_max=128, kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600)
>>> c = simc_tune(p)
>>> round(c.ki * c.sample_period_s * p.k_max, 3)   # integral loop gain per decision
0.2
"""

from __future__ import annotations

import math

import numpy as np

from controlkit.certify.checks import MarginSpec
from controlkit.certify.loop import ControllerSpec, char_poly, open_loop_poly
from controlkit.filters import FilterSpec
from controlkit.plant import DesignPlant

__all__ = ["fast_margins", "robust_tune", "simc_tune"]


def _filter_lag_s(f: FilterSpec, period_s: float) -> tuple[float, float]:
    """(time constant, extra dead time) the filter adds, seconds."""
    if f.kind == "ema":
        return period_s * (1.0 - f.alpha) / f.alpha, 0.0
    if f.kind == "quantile":
        return 0.0, period_s * (f.window - 1) / 2.0
    return 0.0, 0.0


def simc_tune(
    plant: DesignPlant, *, filter: FilterSpec | None = None, lambda_factor: float = 1.0, rate_limit: int = 8
) -> ControllerSpec:
    """SIMC tuning on the worst-case slope (see module docstring)."""
    f = filter or FilterSpec()
    t = plant.sample_period_s
    tau, extra = _filter_lag_s(f, t)
    theta = (max(plant.delays) + 0.5) * t + extra
    tau_c = lambda_factor * theta
    k = plant.k_max
    if tau > 0:
        kc = tau / (k * (tau_c + theta))
        tau_i = min(tau, 4.0 * (tau_c + theta))
        kp, ki = kc, kc / tau_i
    else:
        kp, ki = 0.0, 1.0 / (k * (tau_c + theta))
    return ControllerSpec(kp=kp, ki=ki, sample_period_s=t, filter=f, rate_limit=rate_limit)


def fast_margins(ctrl: ControllerSpec, delay: int, slope: float, n_freq: int = 1500) -> tuple[float, float]:
    """(gain margin dB, phase margin deg) from a dense frequency grid (used inside the search)."""
    num, den = open_loop_poly(ctrl, delay)
    w = np.linspace(1e-4, math.pi, n_freq)
    z = np.exp(1j * w)
    resp = slope * np.polyval(num, z) / np.polyval(den, z)
    mag = np.abs(resp)
    ph = np.unwrap(np.angle(resp))
    gm_db = math.inf
    idx = np.nonzero(np.diff(np.sign(np.sin(ph))) != 0)[0]
    for i in idx:
        if math.cos(ph[i]) < 0:
            gm_db = min(gm_db, -20.0 * math.log10(max(mag[i], 1e-300)))
    pm = math.inf
    cross = np.nonzero(np.diff(np.sign(mag - 1.0)) != 0)[0]
    for i in cross:
        pm = min(pm, 180.0 + float(np.degrees(np.angle(resp[i]))))
    return gm_db, pm


def robust_tune(
    plant: DesignPlant,
    *,
    filter: FilterSpec | None = None,
    spec: MarginSpec | None = None,
    rate_limit: int = 8,
    n_slopes: int = 7,
) -> ControllerSpec:
    """Fastest PI whose margins meet ``spec`` at every slope in the interval and every delay.

    Raises nothing: when no grid point meets the spec, the most conservative candidate is
    returned and certification reports the shortfall.
    """
    f = filter or FilterSpec()
    sp = spec or MarginSpec()
    t = plant.sample_period_s
    slopes = np.linspace(plant.k_min, plant.k_max, n_slopes)
    best: tuple[float, ControllerSpec] | None = None
    fallback: ControllerSpec | None = None
    for g in np.geomspace(0.005, 1.5, 36):
        for ratio in (0.0, 0.25, 0.5, 1.0, 2.0):
            ki = float(g) / (t * plant.k_max)
            cand = ControllerSpec(
                kp=ratio * ki * t, ki=ki, sample_period_s=t, filter=f, rate_limit=rate_limit
            )
            if fallback is None:
                fallback = cand
            ok, worst = True, 0.0
            for d in plant.delays:
                for s in slopes:
                    gm, pm = fast_margins(cand, d, float(s))
                    r = float(max(abs(np.roots(char_poly(cand, d, float(s))))))
                    if r >= 1.0 or gm < sp.gain_margin_db + 0.2 or pm < sp.phase_margin_deg + 0.5:
                        ok = False
                        break
                    worst = max(worst, r)
                if not ok:
                    break
            if ok and (best is None or worst < best[0]):
                best = (worst, cand)
    assert fallback is not None
    return best[1] if best is not None else fallback
