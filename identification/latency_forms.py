"""The latency model's forms and their intervals (used by latency.py).

:func:`fit_form` fits one form robustly to :class:`~identification.fitdata.FitData` and returns
a :class:`FormFit` that evaluates the curve and its intervals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

from identification.derive import StepObservations
from identification.errors import TelemetryError
from identification.fitdata import EXTRA_TERMS, FitData
from identification.robust import FloatArray, RobustFit, robust_fit, robust_scale

__all__ = ["FormFit", "fit_form", "observations_from_mapping"]



@dataclass(frozen=True)
class FormFit:
    """One fitted form: parameters, covariance (or bootstrap draws) and how to evaluate it."""

    form: str
    extras: tuple[str, ...]
    theta: FloatArray
    cov: FloatArray
    dof: int
    scale: float
    method: str
    singular: bool = False
    boot: FloatArray | None = None

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in the order of ``theta``."""
        base = ("c0_s", "c_seq_s") if self.form == "affine" else ("c0_s", "c_seq_s", "c_seq_above_s")
        return (*base, *self.extras, *(("knee_batch",) if self.form == "knee" else ()))

    def jacobian(self, theta: FloatArray, b: FloatArray, extra: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Prediction and its derivative with respect to ``theta``."""
        m = extra.shape[1]
        if self.form == "affine":
            jac = np.column_stack([np.ones_like(b), b, extra])
            return jac @ theta, jac
        k = theta[-1]
        lo, hi = np.minimum(b, k), np.maximum(b - k, 0.0)
        dk = (theta[1] - theta[2]) * (b > k)
        jac = np.column_stack([np.ones_like(b), lo, hi, extra, dk])
        return jac[:, : 3 + m] @ theta[: 3 + m], jac

    def evaluate(self, b: FloatArray, context: FloatArray, prefill: FloatArray) -> FloatArray:
        """Step time for arrays of equal shape."""
        cols = {"c_prefill_s": prefill.ravel(), "c_ctx_s": (b * context).ravel()}
        extra = np.column_stack([cols[e] for e in self.extras]) if self.extras else np.zeros((b.size, 0))
        return self.jacobian(self.theta, b.ravel().astype(np.float64), extra)[0].reshape(b.shape)

    def predict(self, fd: FitData) -> FloatArray:
        """Step time at the rows of ``fd``."""
        return self.evaluate(fd.batch, fd.context, fd.prefill)

    def curve(self, b: FloatArray, context: float) -> FloatArray:
        """Step time vs batch at a fixed context and no prefill."""
        return self.evaluate(b, np.full_like(b, context), np.zeros_like(b))

    def knee(self) -> float | None:
        """Batch at the knee, or ``None`` for the affine form."""
        return float(self.theta[-1]) if self.form == "knee" else None

    def coefficients(self) -> dict[str, float]:
        """Cost coefficients in seconds; dropped terms appear as 0."""
        out = {n: float(v) for n, v in zip(self.names, self.theta, strict=True) if n != "knee_batch"}
        return {**out, **{e: 0.0 for e in EXTRA_TERMS if e not in out}}

    def _draw_interval(self, g: FloatArray, confidence: float, inflate: float = 1.0) -> tuple[float, float]:
        value = float(g @ self.theta)
        if self.boot is not None and confidence > 0:
            draws = self.boot @ g
            alpha = (1.0 - confidence) / 2.0
            lo, hi = np.quantile(draws, [alpha, 1.0 - alpha])
            lo_i, hi_i = value - inflate * (value - float(lo)), value + inflate * (float(hi) - value)
            return (min(lo_i, value), max(hi_i, value))
        half = inflate * float(stats.t.ppf(0.5 + confidence / 2.0, max(self.dof, 1))) * float(
            np.sqrt(max(float(g @ self.cov @ g), 0.0)))
        return (value - half, value + half)

    def coefficient_intervals(self, confidence: float) -> dict[str, tuple[float, float]]:
        """Intervals of the coefficients (dropped terms: (0, 0))."""
        out: dict[str, tuple[float, float]] = {}
        for i, name in enumerate(self.names):
            if name != "knee_batch":
                out[name] = self._draw_interval(np.eye(self.theta.size)[i], confidence)
        return {**out, **{e: (0.0, 0.0) for e in EXTRA_TERMS if e not in out}}

    def slope_interval(self, confidence: float, batch_range: tuple[float, float],
                       context: float, inflate: float = 1.0) -> tuple[float, float]:
        """Interval covering d step_s / d batch of every segment inside ``batch_range``.

        ``inflate`` multiplies each half-width (the effective-sample-size correction for
        autocorrelated rows, ``sqrt(tau)``).
        """
        p = self.theta.size
        ctx_g = np.zeros(p)
        if "c_ctx_s" in self.extras:
            ctx_g[self.names.index("c_ctx_s")] = context
        segments = [1]
        if self.form == "knee":
            k = self.theta[-1]
            segments = ([1] if k > batch_range[0] else []) + ([2] if k < batch_range[1] else []) or [1, 2]
        bounds = [self._draw_interval(np.eye(p)[s] + ctx_g, confidence, inflate) for s in segments]
        return (min(b[0] for b in bounds), max(b[1] for b in bounds))

    def residual_scale(self, fd: FitData) -> float:
        """Robust scale (1.4826·MAD) of the residuals, seconds."""
        return robust_scale(fd.step_s - self.predict(fd))

    def with_bootstrap(self, fd: FitData, n_boot: int, max_rows: int, rng: np.random.Generator,
                       loss: str = "huber", threshold: float = 1.345) -> FormFit:
        """Replace the covariance intervals by a (cluster or row) bootstrap of at most ``max_rows`` rows."""
        groups = np.unique(fd.group)
        clustered = groups.size >= self.theta.size + 3
        draws = []
        for _ in range(n_boot):
            if clustered:
                pick = rng.choice(groups, groups.size, replace=True)
                rows = np.concatenate([np.flatnonzero(fd.group == g) for g in pick])
                if rows.size > max_rows:
                    rows = rng.choice(rows, max_rows, replace=False)
            else:
                rows = rng.integers(0, fd.batch.size, min(fd.batch.size, max_rows))
            sub = fd.take(rows)
            ref = float(np.median(fd.step_s))
            unit = _time_units(self.form, len(self.extras), ref)
            sub = replace(sub, step_s=sub.step_s / ref)
            fit = _fit(self.form, sub, self.theta / unit, loss, threshold, self.scale / ref, covariance=False)
            draws.append(fit.theta * unit)
        kind = "cluster" if clustered else "row"
        return replace(self, boot=np.array(draws),
                       method=f"bootstrap ({n_boot} {kind} resamples of <= {max_rows} rows)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state."""
        return {"form": self.form, "extras": list(self.extras), "theta": self.theta.tolist(),
                "cov": self.cov.tolist(), "dof": self.dof, "scale": self.scale, "method": self.method,
                "singular": self.singular, "boot": None if self.boot is None else self.boot.tolist()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FormFit:
        """Inverse of :meth:`to_dict`."""
        boot = None if d["boot"] is None else np.asarray(d["boot"], dtype=np.float64)
        return cls(str(d["form"]), tuple(str(e) for e in d["extras"]), np.asarray(d["theta"], np.float64),
                   np.asarray(d["cov"], np.float64), int(d["dof"]), float(d["scale"]), str(d["method"]),
                   bool(d["singular"]), boot)


def _fit(form: str, fd: FitData, theta0: FloatArray, loss: str, threshold: float, scale: float,
         *, covariance: bool) -> RobustFit:
    shell = FormFit(form, fd.extras, theta0, np.zeros((0, 0)), 0, scale, "")
    extra = fd.extra_matrix(fd.batch, fd.context, fd.prefill)

    def model(theta: FloatArray) -> tuple[FloatArray, FloatArray]:
        return shell.jacobian(theta, fd.batch, extra)

    bounds = None
    if form == "knee":
        lo = np.full(theta0.size, -np.inf)
        hi = np.full(theta0.size, np.inf)
        lo[-1], hi[-1] = fd.batch.min(), fd.batch.max()
        bounds = (lo, hi)
    return robust_fit(model, theta0, fd.step_s, fd.weights, fd.group, loss=loss, threshold=threshold,
                      scale=scale, covariance=covariance, bounds=bounds)


def _init(form: str, fd: FitData) -> FloatArray:
    sub = fd.subsample(20_000, np.random.default_rng(0))
    extra = sub.extra_matrix(sub.batch, sub.context, sub.prefill)
    sw = np.sqrt(sub.weights)

    def solve(cols: list[FloatArray]) -> tuple[FloatArray, float]:
        a = np.column_stack([np.ones_like(sub.batch), *cols, extra])
        coef, *_ = np.linalg.lstsq(a * sw[:, None], sub.step_s * sw, rcond=None)
        return coef, float(np.sum(sub.weights * (a @ coef - sub.step_s) ** 2))

    if form == "affine":
        return solve([sub.batch])[0]
    levels = np.unique(np.quantile(sub.batch, np.linspace(0.03, 0.97, 25)))
    levels = levels[(levels > sub.batch.min()) & (levels < sub.batch.max())]
    if levels.size == 0:
        levels = np.array([np.median(sub.batch)])
    best = min(((solve([np.minimum(sub.batch, k), np.maximum(sub.batch - k, 0.0)]), k) for k in levels),
               key=lambda item: item[0][1])
    (coef, _), k = best
    return np.concatenate([coef, [k]])


def fit_form(form: str, fd: FitData, loss: str, threshold: float, *, covariance: bool) -> FormFit:
    """Fit one form robustly; with ``covariance`` also compute its sandwich covariance.

    The fit runs on step times divided by their median, so it is exactly equivariant to a
    change of time units; the results are scaled back.
    """
    ref = float(np.median(fd.step_s))
    unit = _time_units(form, len(fd.extras), ref)
    scaled = replace(fd, step_s=fd.step_s / ref)
    theta0 = _init(form, scaled)
    shell = FormFit(form, fd.extras, theta0, np.zeros((0, 0)), 0, 1.0, "")
    scale = robust_scale(scaled.step_s - shell.predict(scaled))
    fit = _fit(form, scaled, theta0, loss, threshold, scale, covariance=covariance)
    kind = "cluster-robust over runs" if fit.clustered else "row-level HC1"
    return FormFit(form, fd.extras, fit.theta * unit, fit.cov * np.outer(unit, unit), fit.dof, scale * ref,
                   f"sandwich covariance ({kind})", fit.singular)


def _time_units(form: str, n_extras: int, ref: float) -> FloatArray:
    """Per-parameter multiplier from unit-free to seconds (the knee is in sequences)."""
    n = (2 if form == "affine" else 3) + n_extras
    return np.concatenate([np.full(n, ref), np.ones(1 if form == "knee" else 0)])


def observations_from_mapping(d: Mapping[str, Any]) -> StepObservations:
    """Build observations from plain arrays.

    The mapping holds ``batch`` and ``step_s``, and optionally ``prefill_tokens``,
    ``context_tokens`` (per sequence) and ``group``.
    """
    for key in ("batch", "step_s"):
        if key not in d:
            raise TelemetryError(f"missing array {key!r}; expected 'batch' and 'step_s'", field=key)
    b = np.asarray(d["batch"], dtype=np.float64).ravel()
    n = b.size

    def arr(key: str, fill: float) -> FloatArray:
        v = np.asarray(d.get(key, fill), dtype=np.float64)
        out = np.broadcast_to(v, (n,)).astype(np.float64) if v.ndim == 0 else v.ravel()
        if out.size != n:
            raise TelemetryError(f"array {key!r} has {out.size} entries; expected {n} like 'batch'",
                                 field=key)
        return out

    nan = np.full(n, np.nan)
    group = arr("group", 0.0).astype(np.int64)
    return StepObservations(batch=b, step_s=arr("step_s", np.nan), prefill_tokens=arr("prefill_tokens", 0.0),
                            context_tokens=arr("context_tokens", np.nan), group=group,
                            group_names=tuple(str(g) for g in np.unique(group)), kv_blocks_used=nan,
                            kv_blocks_total=nan, num_preempted=np.zeros(n), forward_step_s=nan,
                            scheduler_step_s=nan, source="steps")
