"""Online re-identification of the step-time model: a Kalman filter on ``[intercept, slope]``.

The identified model ``step_s = a + k n`` (``n`` decoding sequences, prefill cost removed with the
identified per-token price) is only evidence for the engine it was fitted on.  At run time the
slope drifts (another model version, a slower GPU, longer contexts), so the adaptive policy
(:mod:`policies.adaptive`) re-estimates it from every step it observes:

* :class:`SlopeEstimator`: a Kalman filter on ``theta = [a, k]`` with a random-walk model
  (process noise ``q`` per step, mostly on the slope), measurement ``y = [1, n] theta + v``. The
  measurement variance is estimated online (an EMA of the squared innovations, floored).  To
  stay bounded without excitation (a regulated loop holds ``n`` almost constant, so one
  direction of ``theta`` is unobservable and its variance would grow without end) the covariance
  is clipped to ``p_max`` (eigenvalues) and the estimate is projected onto a box: it is a
  *projected* filter, bounded whatever the data (``docs/theory.md`` §9).
* :class:`DriftDetector`: a two-sided CUSUM on the normalised innovations ``nu / sqrt(S)``; an
  alarm means the model no longer explains the steps (a change, not noise), and the estimator's
  covariance is reset to its prior so that it re-converges in tens of steps instead of hundreds.

Examples
--------
>>> est = SlopeEstimator(intercept_s=0.01, slope_s_per_seq=1e-4)
>>> for i in range(400):
...     n = 20 + (i * 37) % 100
...     _ = est.update(n, 0.01 + 2e-4 * n)
>>> round(est.slope_s_per_seq * 1e4, 2)
2.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["DriftDetector", "OnlineEstimate", "SlopeEstimator"]

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class OnlineEstimate:
    """One update's result: the estimate, its standard deviations and the normalised innovation."""

    intercept_s: float
    slope_s_per_seq: float
    intercept_sd_s: float
    slope_sd_s_per_seq: float
    innovation_z: float
    updates: int


class SlopeEstimator:
    """Projected Kalman filter on ``[intercept_s, slope_s_per_seq]`` (random-walk parameters).

    Parameters
    ----------
    intercept_s, slope_s_per_seq
        Prior (the identified model); also the centre of the projection box.
    intercept_sd_s, slope_sd_s_per_seq
        Prior standard deviations (default 5 % of the intercept scale and 50 % of the slope).
    slope_drift_per_step, intercept_drift_per_step
        Random-walk standard deviation per step, relative to the prior value (defaults 1e-3 and
        0: the slope may change, the intercept is taken as fixed).  A drifting intercept makes the
        regulated loop's unobservable direction (``a`` up, ``k`` down at a constant batch) grow,
        and a later change at another batch is then blamed on the wrong parameter; with it fixed,
        an intercept change shows up in the slope as the secant ``(y - a) / n``, which is what
        the loop's gain depends on near its operating point.
    noise_sd_s
        Initial measurement standard deviation (default 5 % of the step at ``n = 64``);
        ``noise_floor_s`` is its lower bound (default a tenth of it).
    noise_ema
        Weight of the squared innovation in the measurement-variance EMA.
    box_factor
        Projection box: ``a`` in ``[-f a0, f a0]`` (``a0 > 0``) and ``k`` in ``[k0 / f^2, f k0]``.
    """

    def __init__(
        self,
        intercept_s: float,
        slope_s_per_seq: float,
        *,
        intercept_sd_s: float | None = None,
        slope_sd_s_per_seq: float | None = None,
        slope_drift_per_step: float = 1e-3,
        intercept_drift_per_step: float = 0.0,
        noise_sd_s: float | None = None,
        noise_floor_s: float | None = None,
        noise_ema: float = 0.02,
        box_factor: float = 10.0,
    ) -> None:
        if not (math.isfinite(intercept_s) and math.isfinite(slope_s_per_seq) and slope_s_per_seq > 0):
            raise ValueError(
                f"SlopeEstimator prior intercept_s={intercept_s!r}, slope_s_per_seq={slope_s_per_seq!r}: "
                "expected finite numbers, slope > 0"
            )
        if not (box_factor > 1.0 and 0.0 < noise_ema < 1.0):
            raise ValueError(f"SlopeEstimator box_factor={box_factor!r} > 1 and 0 < noise_ema={noise_ema!r} < 1")
        a0, k0 = float(intercept_s), float(slope_s_per_seq)
        scale_a = max(abs(a0), 64.0 * k0)
        sd_a = 0.05 * scale_a if intercept_sd_s is None else float(intercept_sd_s)
        sd_k = 0.5 * k0 if slope_sd_s_per_seq is None else float(slope_sd_s_per_seq)
        self.prior = np.array([a0, k0])
        self.p0: Matrix = np.diag([sd_a**2, sd_k**2])
        self.qaa = (intercept_drift_per_step * scale_a) ** 2
        self.qkk = (slope_drift_per_step * k0) ** 2
        self.sd0 = (sd_a, sd_k)
        self.p_max = box_factor**2  # largest eigenvalue, in units of the prior variances
        r0 = 0.05 * (scale_a + 64.0 * k0) if noise_sd_s is None else float(noise_sd_s)
        self.r_floor = (0.1 * r0 if noise_floor_s is None else float(noise_floor_s)) ** 2
        self.r_init = max(r0**2, self.r_floor)
        self.noise_ema = float(noise_ema)
        self.lo = (-box_factor * scale_a, k0 / box_factor**2)
        self.hi = (box_factor * scale_a, box_factor * k0)
        self.reset()

    def reset(self) -> None:
        """Back to the prior."""
        self.a, self.k = float(self.prior[0]), float(self.prior[1])
        self.paa, self.pak, self.pkk = float(self.p0[0, 0]), 0.0, float(self.p0[1, 1])
        self.r = self.r_init
        self.updates = 0

    def inflate(self) -> None:
        """Forget after a detected change: the slope's prior variance back, the correlation dropped.

        The change is attributed to the slope: the intercept keeps a tenth of its prior variance.
        Keeping the old correlation would be wrong: at a constant batch ``n0`` the filter knows
        ``a + k n0`` precisely, so a surprise at a smaller batch (where the loop moves after a
        slope increase) would pivot the line about ``n0``, raising ``a`` and *lowering* ``k``.
        """
        self.paa = min(self.paa, 0.1 * float(self.p0[0, 0]))
        self.pak = 0.0
        self.pkk = max(self.pkk, float(self.p0[1, 1]))

    @property
    def theta(self) -> Matrix:
        """The estimate ``[intercept_s, slope_s_per_seq]``."""
        return np.array([self.a, self.k])

    @property
    def covariance(self) -> Matrix:
        """Covariance of :attr:`theta`."""
        return np.array([[self.paa, self.pak], [self.pak, self.pkk]])

    @property
    def intercept_s(self) -> float:
        """Current intercept estimate (seconds)."""
        return self.a

    @property
    def slope_s_per_seq(self) -> float:
        """Current slope estimate (seconds per sequence)."""
        return self.k

    @property
    def slope_sd_s_per_seq(self) -> float:
        """Standard deviation of the slope estimate."""
        return math.sqrt(max(self.pkk, 0.0))

    def predict_s(self, batch: float) -> float:
        """Predicted step time at ``batch`` decoding sequences (no prefill)."""
        return self.a + self.k * batch

    def update(self, batch: float, step_s: float) -> OnlineEstimate:
        """Fold in one step (``batch`` decodes, ``step_s`` seconds net of prefill); non-finite data is ignored.

        Plain-float 2x2 algebra (this runs once per engine step).
        """
        if not (math.isfinite(batch) and math.isfinite(step_s) and batch >= 0):
            return self.estimate(0.0)
        n = float(batch)
        paa, pak, pkk = self.paa + self.qaa, self.pak, self.pkk + self.qkk
        ph0, ph1 = paa + pak * n, pak + pkk * n  # P h
        s = ph0 + ph1 * n + self.r
        nu = float(step_s) - (self.a + self.k * n)
        g0, g1 = ph0 / s, ph1 / s
        # Huber: the innovation moves the estimate by at most 3 sd (a change far outside the
        # model is the drift detector's to report, not a licence for one giant, mis-attributed jump)
        root_s = math.sqrt(s)
        nu_used = min(max(nu, -3.0 * root_s), 3.0 * root_s)
        self.a = min(max(self.a + g0 * nu_used, self.lo[0]), self.hi[0])
        self.k = min(max(self.k + g1 * nu_used, self.lo[1]), self.hi[1])
        # P - g (P h)^T, then the eigenvalues clipped to [0, p_max]
        # (in units of the prior sds, so that the clip does not depend on the units of a and k)
        sa, sk = self.sd0
        caa, cak, ckk = _clip_covariance(
            (paa - g0 * ph0) / (sa * sa), (pak - g0 * ph1) / (sa * sk), (pkk - g1 * ph1) / (sk * sk), self.p_max
        )
        self.paa, self.pak, self.pkk = caa * sa * sa, cak * sa * sk, ckk * sk * sk
        # measurement variance: EMA of the innovation's excess over the parameter part, floored.
        # An innovation beyond 3 sd counts only a tenth, clipped: a change must show as a run of
        # large z (for the drift detector), not be absorbed into R (which would grow geometrically)
        hph = self.paa + 2.0 * self.pak * n + self.pkk * n * n
        if nu * nu <= 9.0 * s:
            self.r += self.noise_ema * (nu * nu - hph - self.r)
        else:
            self.r += 0.1 * self.noise_ema * (min(nu * nu, 9.0 * self.r) - self.r)
        self.r = max(self.r, self.r_floor)
        self.updates += 1
        return self.estimate(nu / root_s)

    def estimate(self, innovation_z: float = 0.0) -> OnlineEstimate:
        """Return the current estimate as a record."""
        return OnlineEstimate(
            self.a, self.k, math.sqrt(max(self.paa, 0.0)), self.slope_sd_s_per_seq, float(innovation_z), self.updates
        )


def _clip_covariance(paa: float, pak: float, pkk: float, p_max: float) -> tuple[float, float, float]:
    """Clip the eigenvalues of the symmetric 2x2 ``[[paa, pak], [pak, pkk]]`` to ``[0, p_max]``."""
    half_tr, half_diff = 0.5 * (paa + pkk), 0.5 * (paa - pkk)
    rad = math.hypot(half_diff, pak)
    w_lo, w_hi = half_tr - rad, half_tr + rad
    if w_lo >= 0.0 and w_hi <= p_max:
        return paa, pak, pkk
    c_lo, c_hi = min(max(w_lo, 0.0), p_max), min(max(w_hi, 0.0), p_max)
    if rad == 0.0:
        return c_hi, 0.0, c_hi
    # unit eigenvector of w_hi: (cos t, sin t) with tan 2t = 2 pak / (paa - pkk)
    t = 0.5 * math.atan2(pak, half_diff)
    c, sn = math.cos(t), math.sin(t)
    return (c_hi * c * c + c_lo * sn * sn, (c_hi - c_lo) * c * sn, c_hi * sn * sn + c_lo * c * c)


class DriftDetector:
    """Two-sided CUSUM on normalised innovations: an alarm when their mean leaves ``+-slack``.

    Parameters
    ----------
    slack
        Allowed mean of ``|z|`` per step before it accumulates (units of the innovation's sd).
    threshold
        Alarm level of either cumulative sum.
    z_clip
        Each ``z`` is clipped to ``+-z_clip`` first (one outlier step cannot raise an alarm alone).

    Examples
    --------
    >>> d = DriftDetector(slack=0.5, threshold=4.0)
    >>> [d.update(0.1) for _ in range(3)]
    [False, False, False]
    >>> [d.update(2.0) for _ in range(3)]
    [False, False, True]
    """

    def __init__(self, *, slack: float = 1.5, threshold: float = 20.0, z_clip: float = 3.0) -> None:
        if not (slack > 0 and threshold > 0 and z_clip > slack):
            raise ValueError(f"DriftDetector slack={slack!r}, threshold={threshold!r}, z_clip={z_clip!r}: expected > 0")
        self.slack, self.threshold, self.z_clip = float(slack), float(threshold), float(z_clip)
        self.reset()

    def reset(self) -> None:
        """Clear both sums."""
        self.up = 0.0
        self.down = 0.0
        self.alarms = 0

    def update(self, z: float) -> bool:
        """Fold in one normalised innovation; return True on an alarm (the sums restart)."""
        if not math.isfinite(z):
            return False
        zc = max(-self.z_clip, min(self.z_clip, z))
        self.up = max(0.0, self.up + zc - self.slack)
        self.down = max(0.0, self.down - zc - self.slack)
        if self.up > self.threshold or self.down > self.threshold:
            self.up = self.down = 0.0
            self.alarms += 1
            return True
        return False
