"""The modelled feedback loop: transfer functions, and vertex matrices for the contraction.

See ``docs/theory.md`` §1-§4.

The loop, per decision ``t`` (deviations from the equilibrium ``b*`` with ``f(b*) = r``):

* plant ``y_t = s * c_{t-d} (+ s*q_t + n_t)``, ``s`` the incremental slope in ``[k_min, k_max]``,
  ``d`` the measurement delay, ``q`` the rounding error (``|q| <= 1/2``), ``n`` noise;
* filter ``yf = F(z) y`` (EMA, or a quantile window: a selector among its samples);
* velocity PID ``du = -(Kp + Ki*T) yf_t + Kp yf_{t-1} + (D_t - D_{t-1})``, ``T`` the period;
* rate limit ``du' = sigma2 * du`` (``sigma2`` in ``[sigma2_min, 1]``), integration and bounds
  ``c_t = sat(c_{t-1} + du')`` with ``sat(v) - b* = sigma * (v - b*)``, ``sigma`` in ``[0, 1]``.

The open loop (linear part, ``sigma = sigma2 = 1``) is ``L(z) = s z^-d F(z) C(z) / (1 - z^-1)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from controlkit.filters import FilterSpec

__all__ = ["ControllerSpec", "LoopVertex", "char_poly", "open_loop_poly", "vertex_matrices"]

Vec = NDArray[np.float64]
Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class ControllerSpec:
    """The PID as the analysis sees it (the same numbers the runtime PID gets).

    Parameters
    ----------
    kp, ki, kd
        Gains (seq per second of error, seq/s^2, seq).
    sample_period_s
        Decision period ``T`` the gains are applied with.
    filter
        The measurement filter.
    rate_limit
        Largest cap change per decision (sequences).
    derivative_filter_s
        Derivative filter time constant.
    anti_windup
        ``"conditional"`` or ``"back_calculation"``.
    tracking_gain
        Back-calculation gain.
    """

    kp: float
    ki: float
    kd: float = 0.0
    sample_period_s: float = 0.05
    filter: FilterSpec = FilterSpec()  # noqa: RUF009 - frozen, immutable default
    rate_limit: int = 8
    derivative_filter_s: float = 0.0
    anti_windup: str = "conditional"
    tracking_gain: float = 1.0

    @property
    def beta(self) -> float:
        """Derivative filter pole ``Tf / (Tf + T)``."""
        return self.derivative_filter_s / (self.derivative_filter_s + self.sample_period_s)

    def scaled(self, factor: float) -> ControllerSpec:
        """Return the same controller with every gain multiplied by ``factor``."""
        return ControllerSpec(
            self.kp * factor,
            self.ki * factor,
            self.kd * factor,
            self.sample_period_s,
            self.filter,
            self.rate_limit,
            self.derivative_filter_s,
            self.anti_windup,
            self.tracking_gain,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the ``params`` of a ``pid`` policy file)."""
        return {
            "kp": self.kp,
            "ki": self.ki,
            "kd": self.kd,
            "sample_period_s": self.sample_period_s,
            "filter": self.filter.to_dict(),
            "rate_limit": self.rate_limit,
            "derivative_filter_s": self.derivative_filter_s,
            "anti_windup": self.anti_windup,
            "tracking_gain": self.tracking_gain,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ControllerSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kp=float(doc["kp"]),
            ki=float(doc["ki"]),
            kd=float(doc.get("kd", 0.0)),
            sample_period_s=float(doc["sample_period_s"]),
            filter=FilterSpec.from_dict(dict(doc.get("filter", {}))),
            rate_limit=int(doc.get("rate_limit", 8)),
            derivative_filter_s=float(doc.get("derivative_filter_s", 0.0)),
            anti_windup=str(doc.get("anti_windup", "conditional")),
            tracking_gain=float(doc.get("tracking_gain", 1.0)),
        )


def _ctrl_poly(c: ControllerSpec) -> tuple[Vec, Vec]:
    """``C(q) = Cn/Cd`` in ascending powers of ``q = z^-1``: ``du = -C(q) yf``."""
    t = c.sample_period_s
    cn = np.array([c.kp + c.ki * t, -c.kp])
    if c.kd == 0.0:
        return cn, np.array([1.0])
    b = c.beta
    cd = np.array([1.0, -b])
    dterm = (1.0 - b) * (c.kd / t) * np.array([1.0, -2.0, 1.0])
    return np.polynomial.polynomial.polyadd(np.polynomial.polynomial.polymul(cn, cd), dterm), cd


def _filter_poly(f: FilterSpec) -> tuple[Vec, Vec]:
    if f.kind == "none":
        return np.array([1.0]), np.array([1.0])
    if f.kind == "ema":
        return np.array([f.alpha]), np.array([1.0, -(1.0 - f.alpha)])
    return np.full(f.window, 1.0 / f.window), np.array([1.0])


def open_loop_poly(c: ControllerSpec, delay: int) -> tuple[Vec, Vec]:
    """``L(z)/s = N/D`` as coefficient arrays in *descending* powers of ``z``, equal length.

    The moving-average surrogate stands for the quantile filter here.
    """
    pm = np.polynomial.polynomial
    cn, cd = _ctrl_poly(c)
    fn, fd = _filter_poly(c.filter)
    num = pm.polymul(pm.polymul(np.r_[np.zeros(delay), 1.0], fn), cn)
    den = pm.polymul(pm.polymul(fd, cd), np.array([1.0, -1.0]))
    n = max(len(num), len(den))
    # ascending coefficients in q padded to degree n-1 are descending coefficients in z
    return np.r_[num, np.zeros(n - len(num))], np.r_[den, np.zeros(n - len(den))]


def char_poly(c: ControllerSpec, delay: int, slope: float) -> Vec:
    """Closed-loop characteristic polynomial ``D(z) + s N(z)`` (descending powers of ``z``)."""
    num, den = open_loop_poly(c, delay)
    return den + slope * num


@dataclass(frozen=True, slots=True)
class LoopVertex:
    """One vertex of the sector model: the matrices and the parameters that produced them."""

    a: Matrix
    e_y: Vec  # how a unit disturbance on the measured sample y enters the next state
    slope: float
    sigma: float
    sigma2: float
    selector: int


def _step(
    c: ControllerSpec,
    delay: int,
    fmodel: tuple[Matrix, Matrix, Matrix, Matrix],
    x: Vec,
    y_extra: float,
    s: float,
    sigma: float,
    sigma2: float,
) -> Vec:
    af, bf, cf, df = fmodel
    nf = af.shape[0]
    t = c.sample_period_s
    w = x[0]
    dl = x[1:delay]
    xf = x[delay : delay + nf]
    p = x[delay + nf]
    g = x[delay + nf + 1] if c.kd else 0.0
    cur = w if c.anti_windup == "conditional" else sigma * w
    c_old = cur if delay == 1 else dl[-1]
    y = s * c_old + y_extra
    yf = float((cf @ xf)[0] + df[0, 0] * y) if nf else float(df[0, 0] * y)
    xf_new = af @ xf + bf[:, 0] * y
    b = c.beta
    dd = (1.0 - b) * (c.kd / t) * (yf - p)
    d_delta = (b - 1.0) * g - dd
    du = sigma2 * (-(c.kp + c.ki * t) * yf + c.kp * p + d_delta)
    conditional = c.anti_windup == "conditional"
    w_new = sigma * (w + du) if conditional else w + du + c.tracking_gain * (cur - w)
    dl_new = np.r_[cur, dl[:-1]] if delay > 1 else np.zeros(0)
    ctrl = [yf] + ([b * g - dd] if c.kd else [])
    out: Vec = np.asarray(np.r_[w_new, dl_new, xf_new, ctrl], dtype=float)
    return out


def state_dim(c: ControllerSpec, delay: int, fmodel: tuple[Matrix, Matrix, Matrix, Matrix]) -> int:
    """Dimension of the loop state for this controller, delay and filter model."""
    return 1 + (delay - 1) + int(fmodel[0].shape[0]) + 1 + (1 if c.kd else 0)


def loop_matrix(
    c: ControllerSpec,
    delay: int,
    slope: float,
    sigma: float = 1.0,
    sigma2: float = 1.0,
    selector: int | None = None,
) -> LoopVertex:
    """Return the loop's state matrix at one point of the sector (selector: quantile window position)."""
    models = c.filter.selector_models() if selector is not None else [c.filter.linear()]
    fmodel = models[selector or 0]
    n = state_dim(c, delay, fmodel)
    a = np.column_stack([_step(c, delay, fmodel, col, 0.0, slope, sigma, sigma2) for col in np.eye(n)])
    e_y = _step(c, delay, fmodel, np.zeros(n), 1.0, slope, sigma, sigma2)
    return LoopVertex(a, e_y, slope, sigma, sigma2, -1 if selector is None else selector)


def sigma2_min(c: ControllerSpec, k_max: float, b_min: int, b_max: int) -> float:
    """Lower end of the rate-limit sector: ``R / max|du|`` over the bounded state set."""
    t = c.sample_period_s
    y_span = k_max * (b_max - b_min)
    du_max = (abs(c.kp + c.ki * t) + abs(c.kp) + 4.0 * c.kd / t) * y_span
    return 1.0 if du_max <= c.rate_limit else c.rate_limit / du_max


def vertex_matrices(
    c: ControllerSpec, delay: int, k_min: float, k_max: float, b_min: int, b_max: int
) -> list[LoopVertex]:
    """Every vertex of the multi-affine sector model (slope x saturation x rate x selector)."""
    s2 = sigma2_min(c, k_max, b_min, b_max)
    sig2 = (s2, 1.0) if s2 < 1.0 else (1.0,)
    n_sel = c.filter.window if c.filter.kind == "quantile" else 1
    sels: list[int | None] = list(range(n_sel)) if c.filter.kind == "quantile" else [None]
    out = []
    for s, sg, sg2, sel in itertools.product((k_min, k_max), (0.0, 1.0), sig2, sels):
        out.append(loop_matrix(c, delay, s, sg, sg2, sel))
    assert len(out) == 2 * 2 * len(sig2) * n_sel
    return out


def spectral_radius(m: Matrix) -> float:
    """Largest eigenvalue modulus."""
    return float(np.max(np.abs(np.linalg.eigvals(m)))) if m.size else 0.0


def settle_steps(rho: float, ratio: float = 0.02) -> int:
    """Decisions for a contraction at rate ``rho`` to shrink a deviation to ``ratio`` of itself."""
    return math.ceil(math.log(ratio) / math.log(rho)) if 0 < rho < 1 else 0
