"""Model-form error of the latency fit: the local slopes between batch levels, with their intervals.

A fitted form (affine, or the two-segment knee) has one or two slopes; the engine's step time
curves between them (attention and memory bandwidth change with the batch), and the controller
certificate needs every *incremental* slope (``docs/theory.md`` §1: the sector ``[k_min, k_max]``),
not the fitted one.  So the slope interval also covers the local slopes the data show:

* the rows are cut into ``n`` batch bins (quantiles, at least ``min_rows`` rows each);
* in each bin, the median residual of the fit and its standard error
  ``1.2533 · 1.4826 · MAD / sqrt(n_eff)``, with ``n_eff = n / tau`` and ``tau`` the integrated
  autocorrelation time of the residuals in time order (the larger of the lag-1 AR(1) value and the
  batch-means estimate): steps of one run are not independent, and pretending they are would make
  the interval cover a point;
* the local slope between adjacent bins is the fitted curve's secant plus the residuals' secant,
  with the standard error of that difference;
* ``n`` starts at ``max_bins`` and drops until every local slope is resolved (standard error at
  most ``resolution`` times the fitted slope): a curvature smaller than the noise cannot be seen,
  and two bins give back the overall secant.

The interval is the union of the local slopes' ``confidence`` intervals: it covers each local
slope at the nominal rate, hence the smallest and the largest.

Examples
--------
>>> import numpy as np
>>> from identification.latency import LatencyModel
>>> rng = np.random.default_rng(0)
>>> b = rng.integers(1, 257, 4000).astype(float)
>>> y = 0.01 + 3e-4 * np.minimum(b, 64) + 1.5e-4 * np.maximum(b - 64, 0) * (1 + 0.002 * (b - 64))
>>> m = LatencyModel(form="affine").fit({"batch": b, "step_s": y * (1 + rng.normal(0, 0.02, b.size))})
>>> lo, hi = m.slope_interval_model_form_
>>> bool(lo < 2e-4 < 3e-4 < hi)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats

from identification.fitdata import FitData
from identification.latency_forms import FormFit
from identification.robust import FloatArray

__all__ = ["LocalSlopes", "autocorrelation_time", "local_slopes"]


@dataclass(frozen=True, slots=True)
class LocalSlopes:
    """Local slopes between adjacent batch bins, their standard errors and the interval.

    ``batch``: the midpoints of adjacent bin centres; ``centres``: the bins' median batches;
    ``autocorrelation_time``: of the residuals, in rows.
    """

    batch: tuple[float, ...]
    centres: tuple[float, ...]
    slope_s_per_seq: tuple[float, ...]
    se_s_per_seq: tuple[float, ...]
    interval: tuple[float, float]
    autocorrelation_time: float


def autocorrelation_time(resid: FloatArray) -> float:
    """Integrated autocorrelation time of the residuals (>= 1, capped at 200).

    The residuals are clipped at 3 robust sd first: engine pauses (outliers many sd long) would
    otherwise dominate the sums and hide the correlation of the body.
    """
    r = resid - np.median(resid)
    scale = 1.4826 * float(np.median(np.abs(r)))
    if scale > 0:
        r = np.clip(r, -3.0 * scale, 3.0 * scale)
    r = r - r.mean()
    den = float(np.dot(r, r))
    if r.size < 3 or den <= 0:
        return 1.0
    rho = min(max(float(np.dot(r[1:], r[:-1])) / den, 0.0), 0.98)
    tau = (1.0 + rho) / (1.0 - rho)
    # batch means (blocks of ~sqrt(n) rows): also catches correlation that lag 1 understates
    # (noise constant over a window of many steps decays linearly, not geometrically)
    size = max(10, math.isqrt(r.size))
    blocks = r.size // size
    if blocks >= 5:
        means = r[: blocks * size].reshape(blocks, size).mean(axis=1)
        tau = max(tau, size * float(np.var(means)) / (den / r.size))
    return min(max(tau, 1.0), 200.0)


def _bins(batch: FloatArray, n: int, min_rows: int) -> list[FloatArray] | None:
    edges = np.unique(np.quantile(batch, np.linspace(0.0, 1.0, n + 1)))
    if edges.size < 3:
        return None
    idx = np.clip(np.searchsorted(edges, batch, side="right") - 1, 0, edges.size - 2)
    groups = [np.flatnonzero(idx == j) for j in range(edges.size - 1)]
    groups = [g for g in groups if g.size > 0]
    if len(groups) < 2 or min(g.size for g in groups) < min_rows:
        return None
    return [g.astype(np.float64) for g in groups]


def local_slopes(
    fd: FitData,
    fit: FormFit,
    confidence: float,
    *,
    max_bins: int = 8,
    min_rows: int = 30,
    resolution: float = 0.25,
) -> LocalSlopes | None:
    """Local slopes of the data between batch bins (module docstring); ``None`` with too few rows."""
    resid = fd.step_s - fit.predict(fd)
    tau = autocorrelation_time(resid)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    best: LocalSlopes | None = None
    ref = max(abs(float(np.ptp(fit.curve(np.array([fd.batch.min(), fd.batch.max()]), fd.typical_context))))
              / max(float(np.ptp(fd.batch)), 1e-12), 1e-12)
    for n in range(max_bins, 1, -1):
        groups = _bins(fd.batch, n, min_rows)
        if groups is None:
            continue
        rows = [g.astype(np.int64) for g in groups]
        centre = np.array([float(np.median(fd.batch[g])) for g in rows])
        med = np.array([float(np.median(resid[g])) for g in rows])
        mad = np.array([float(np.median(np.abs(resid[g] - m))) for g, m in zip(rows, med, strict=True)])
        se = 1.2533 * 1.4826 * mad / np.sqrt(np.array([g.size for g in rows]) / tau)
        db = np.diff(centre)
        if np.any(db <= 0):
            continue
        curve = fit.curve(centre, fd.typical_context)
        slope = np.diff(curve) / db + np.diff(med) / db
        slope_se = np.sqrt(se[1:] ** 2 + se[:-1] ** 2) / db
        best = LocalSlopes(
            tuple(float(v) for v in 0.5 * (centre[1:] + centre[:-1])),
            tuple(float(v) for v in centre),
            tuple(float(v) for v in slope),
            tuple(float(v) for v in slope_se),
            (float(np.min(slope - z * slope_se)), float(np.max(slope + z * slope_se))),
            tau,
        )
        if float(np.max(slope_se)) <= resolution * ref:
            return best
    return best
