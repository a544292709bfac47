"""Shared fitting machinery: declared hyper-parameters, robust least squares, sandwich covariance.

Hyper-parameters of every estimator are declared once, in a frozen dataclass whose fields carry
their bounds (``metadata={"bounds": (lo, hi)}``) or allowed values (``metadata={"choices":
(...)}``); :func:`check_hyperparameters` enforces them, so defaults, checks and docs cannot drift.

:func:`robust_fit` minimises ``Σ ρ(√w·(f(θ) − y)/σ)`` with :func:`scipy.optimize.least_squares`
(Huber or soft-L1 ``ρ``, threshold in units of a robust residual scale ``σ``) and returns the
M-estimator's sandwich covariance ``A⁻¹ B A⁻¹`` (``A = Σ ψ'·J Jᵀ``, ``B = Σ_g s_g s_gᵀ`` with
``s_g`` the score summed over a cluster ``g``), cluster-robust when enough clusters are present;
with clusters it is widened, direction by direction, to at least the leave-one-cluster-out
jackknife (CR3) covariance, because CR1 under-covers with few clusters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats

from identification.errors import ControlkitError

__all__ = ["ArgumentError", "RobustFit", "check_hyperparameters", "robust_fit", "robust_scale"]

FloatArray = npt.NDArray[np.float64]
ModelFn = Callable[[FloatArray], tuple[FloatArray, FloatArray]]


class ArgumentError(ControlkitError, ValueError):
    """A hyper-parameter or argument outside its declared range or choices."""


def check_hyperparameters(params: Any) -> None:
    """Check every field of a hyper-parameter dataclass against its declared bounds/choices.

    Raises
    ------
    ArgumentError
        A value outside its bounds or not among its choices; the message names both.
    """
    for f in fields(params):
        value = getattr(params, f.name)
        choices = f.metadata.get("choices")
        bounds = f.metadata.get("bounds")
        if choices is not None and value not in choices:
            raise ArgumentError(f"{f.name}={value!r} is not one of {list(choices)}")
        if bounds is not None:
            lo, hi = bounds
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ArgumentError(f"{f.name}={value!r} must be a number in [{lo}, {hi}]")
            if not lo <= value <= hi or value != value:
                raise ArgumentError(f"{f.name}={value!r} is outside its allowed range [{lo}, {hi}]")


def robust_scale(residuals: FloatArray) -> float:
    """Normal-consistent median absolute deviation (1.4826·MAD), never zero.

    Examples
    --------
    >>> round(robust_scale(np.array([-1.0, 0.0, 1.0, 100.0])), 3)
    1.483
    """
    r = residuals[np.isfinite(residuals)]
    if r.size == 0:
        return 1.0
    mad = float(np.median(np.abs(r - np.median(r)))) * 1.4826
    if mad > 0:
        return mad
    spread = float(np.std(r))
    return spread if spread > 0 else max(float(np.max(np.abs(r))), 1e-300) * 1e-6 + 1e-300


@dataclass(frozen=True)
class RobustFit:
    """The result of :func:`robust_fit`."""

    theta: FloatArray
    cov: FloatArray
    dof: int
    scale: float
    clustered: bool
    singular: bool

    def quantile(self, confidence: float) -> float:
        """Two-sided Student-t quantile for ``confidence`` at this fit's degrees of freedom."""
        return float(stats.t.ppf(0.5 + confidence / 2.0, max(self.dof, 1)))


def _psi(u: FloatArray, loss: str, c: float) -> tuple[FloatArray, FloatArray]:
    if loss == "huber":
        inside = np.abs(u) <= c
        return np.where(inside, u, c * np.sign(u)), inside.astype(np.float64)
    if loss == "soft_l1":
        q = 1.0 + (u / c) ** 2
        return u / np.sqrt(q), q**-1.5
    return u, np.ones_like(u)


def robust_fit(
    model: ModelFn,
    theta0: FloatArray,
    y: FloatArray,
    weights: FloatArray,
    clusters: npt.NDArray[np.int64] | None,
    *,
    loss: str,
    threshold: float,
    scale: float,
    covariance: bool = True,
    bounds: tuple[FloatArray, FloatArray] | None = None,
) -> RobustFit:
    """Robust weighted least squares and its sandwich covariance.

    Parameters
    ----------
    model
        ``model(theta) -> (prediction, jacobian)``; the jacobian is ``(n, p)``.
    theta0
        Starting point.
    y, weights
        Targets and row weights (mean about 1).
    clusters
        Cluster code per row for a cluster-robust covariance, or ``None`` for row-level (HC1).
    loss
        ``"huber"``, ``"soft_l1"`` or ``"linear"``.
    threshold
        Where the loss turns robust, in units of ``scale``.
    scale
        Residual scale (seconds) that normalises the residuals.
    covariance
        Compute the covariance (skip for bootstrap refits).
    bounds
        Optional ``(lower, upper)`` arrays bounding ``theta``.
    """
    sw = np.sqrt(weights) / scale

    def fun(theta: FloatArray) -> FloatArray:
        return np.asarray(sw * (model(theta)[0] - y), dtype=np.float64)

    def jac(theta: FloatArray) -> FloatArray:
        return np.asarray(sw[:, None] * model(theta)[1], dtype=np.float64)

    lims = bounds if bounds is not None else (np.full(theta0.size, -np.inf), np.full(theta0.size, np.inf))
    x0 = np.clip(theta0, lims[0], lims[1])
    loss_name = cast(Literal["huber", "soft_l1", "linear"], loss)
    res = optimize.least_squares(
        fun, x0, jac=jac, bounds=lims, loss=loss_name, f_scale=threshold, method="trf", x_scale="jac",
        max_nfev=200,
    )
    theta = np.asarray(res.x, dtype=np.float64)
    p = theta.size
    n = y.size
    if not covariance:
        return RobustFit(theta, np.full((p, p), np.nan), n - p, scale, False, False)
    u = fun(theta)
    jm = jac(theta)
    psi, dpsi = _psi(u, loss, threshold)
    a = jm.T @ (dpsi[:, None] * jm)
    scores = psi[:, None] * jm
    n_clusters = 0 if clusters is None else int(np.unique(clusters).size)
    clustered = clusters is not None and n_clusters >= p + 3
    jackknife: FloatArray | None = None
    if clustered:
        assert clusters is not None
        _, inverse = np.unique(clusters, return_inverse=True)
        summed = np.zeros((n_clusters, p))
        np.add.at(summed, inverse, scores)
        b = summed.T @ summed * (n_clusters / (n_clusters - 1.0)) * ((n - 1.0) / max(n - p, 1))
        dof = n_clusters - p
        jackknife = _cluster_jackknife(a, jm, dpsi, summed, inverse, n_clusters)
    else:
        b = scores.T @ scores * (n / max(n - p, 1))
        dof = n - p
    d = np.sqrt(np.abs(np.diag(a)))
    if np.all(np.isfinite(a)) and np.all(d > 0):
        singular = bool(np.linalg.cond(a / np.outer(d, d)) > 1e10)  # scale-free (correlation) condition
    else:
        singular = True
    a_inv = np.linalg.pinv(a)
    cov = a_inv @ b @ a_inv
    if jackknife is not None:  # few clusters: CR1 under-covers; take the larger, per direction
        cov = _psd_max(cov, jackknife)
    return RobustFit(theta, cov, dof, scale, clustered, singular)


def _cluster_jackknife(a: FloatArray, jm: FloatArray, dpsi: FloatArray, summed: FloatArray,
                       inverse: npt.NDArray[np.intp], n_clusters: int) -> FloatArray:
    """Leave-one-cluster-out (CR3) covariance by one Newton step from the full fit per cluster."""
    p = a.shape[0]
    a_g = np.zeros((n_clusters, p, p))
    np.add.at(a_g, inverse, dpsi[:, None, None] * jm[:, :, None] * jm[:, None, :])
    deltas = np.empty((n_clusters, p))
    for g in range(n_clusters):
        deltas[g] = -np.linalg.pinv(a - a_g[g]) @ summed[g]
    centred = deltas - deltas.mean(axis=0)
    return np.asarray(centred.T @ centred * ((n_clusters - 1.0) / n_clusters), dtype=np.float64)


def _psd_max(c1: FloatArray, c2: FloatArray) -> FloatArray:
    """Return a covariance at least as large as both in every direction (eigen-max in c1's metric)."""
    w, v = np.linalg.eigh(c1)
    w = np.maximum(w, 1e-300)
    t = v / np.sqrt(w)  # whitening of c1
    m = t.T @ c2 @ t
    mw, mv = np.linalg.eigh((m + m.T) / 2)
    mw = np.maximum(mw, 1.0)
    back = v * np.sqrt(w)
    return np.asarray(back @ (mv * mw) @ mv.T @ back.T, dtype=np.float64)
