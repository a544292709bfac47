"""Common quadratic Lyapunov functions for a finite set of vertex matrices.

For matrices ``A_1..A_m`` (the vertices of a multi-affine sector model) find ``P = L L^T``
with ``||A_i x||_P <= rho ||x||_P`` for all ``i``; because ``A -> ||A||_P`` is convex, the same
``rho`` holds for every matrix in their convex hull, hence for every time-varying mixture
(``docs/theory.md`` §4).  The check, given ``L``, is exact: ``rho = max_i ||L^T A_i L^-T||_2``.

Examples
--------
>>> import warnings

import warnings

import numpy as np
>>> res = common_lyapunov([np.array([[0.5]]), np.array([[-0.8]])])
>>> round(res.rho, 3)
0.8
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.optimize
from numpy.typing import NDArray

__all__ = ["LyapunovResult", "common_lyapunov", "contraction_rate"]

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LyapunovResult:
    """``rho`` (contraction rate per decision) in the norm ``||x||_P``, ``P = L L^T``."""

    rho: float
    chol: Matrix


def contraction_rate(mats: Sequence[Matrix], chol: Matrix) -> float:
    """``max_i ||L^T A_i L^-T||_2``: the exact contraction rate of the vertices in ``P = L L^T``."""
    linv_t = np.linalg.inv(chol).T
    return max(float(np.linalg.norm(chol.T @ a @ linv_t, 2)) for a in mats)


def _candidates(mats: Sequence[Matrix]) -> list[Matrix]:
    n = mats[0].shape[0]
    cands = [np.eye(n)]
    groups = [list(mats), *[[m] for m in mats]]
    for group in groups:
        mean: Matrix = np.asarray(np.mean(np.stack(group), axis=0), dtype=float)
        r = max(float(max(abs(np.linalg.eigvals(m)))) for m in group)
        if not r < 1.0:
            continue
        for scale in (1.0, 0.5 * (1.0 + r)):
            a = mean / scale
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
                    p = scipy.linalg.solve_discrete_lyapunov(a.T, np.eye(n))
                cands.append(np.linalg.cholesky(0.5 * (p + p.T)))
            except (np.linalg.LinAlgError, ValueError):
                continue
    return cands


def common_lyapunov(
    mats: Sequence[Matrix], *, polish_iter: int = 400, polish_if_below: float = 0.0
) -> LyapunovResult:
    """Search a common quadratic Lyapunov function; ``rho < 1`` certifies contraction.

    Candidates come from discrete Lyapunov equations of the vertices and of their mean; the
    best is then polished by a derivative-free search over the Cholesky factor, unless it
    already certifies a rate below ``polish_if_below``.
    """
    n = mats[0].shape[0]
    if n == 0:
        return LyapunovResult(0.0, np.zeros((0, 0)))
    # balance the state scaling (sequences vs seconds) before searching
    _, (scale_d, _) = scipy.linalg.matrix_balance(sum(np.abs(m) for m in mats) + np.eye(n), separate=True)
    dmat = np.diag(scale_d)
    dinv = np.diag(1.0 / scale_d)
    res = _search([dinv @ m @ dmat for m in mats], polish_iter, polish_if_below)
    return LyapunovResult(res.rho, dinv @ res.chol)


def _search(mats: Sequence[Matrix], polish_iter: int, polish_if_below: float) -> LyapunovResult:
    n = mats[0].shape[0]
    best = min(_candidates(mats), key=lambda l_: contraction_rate(mats, l_))
    rho0 = contraction_rate(mats, best)
    if polish_iter <= 0 or rho0 < polish_if_below:
        return LyapunovResult(rho0, best)
    idx = np.tril_indices(n)

    def unpack(v: Matrix) -> Matrix:
        m = np.zeros((n, n))
        m[idx] = v
        return m

    def objective(v: Matrix) -> float:
        l_ = unpack(v)
        if abs(np.prod(np.diag(l_))) < 1e-12:
            return 10.0
        return contraction_rate(mats, l_)

    scale = np.abs(best[idx]).max()
    res = scipy.optimize.minimize(
        objective,
        best[idx] / scale,
        method="Nelder-Mead",
        options={"maxiter": polish_iter, "xatol": 1e-6, "fatol": 1e-7},
    )
    cand = unpack(res.x)
    rho1 = objective(res.x)
    return LyapunovResult(rho1, cand) if rho1 < rho0 else LyapunovResult(rho0, best)
