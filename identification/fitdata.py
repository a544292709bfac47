"""The latency fit's design data: validated arrays, run weights, evidence-gated extra terms.

:class:`FitData` holds the fit arrays, row weights (every run counts equally) and the extra
cost terms that have evidence; :func:`split_groups` is the group-aware held-out split (whole
runs, or whole batch levels of one run).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from identification.derive import StepObservations
from identification.errors import TelemetryError
from identification.robust import FloatArray

__all__ = ["EXTRA_TERMS", "FitData", "IntArray", "split_groups"]

IntArray = npt.NDArray[np.int64]
EXTRA_TERMS = ("c_prefill_s", "c_ctx_s")
_COLLINEAR_R2 = 0.98


def _r2_on(x: FloatArray, others: list[FloatArray], w: FloatArray) -> float:
    if x.size > 100_000:
        pick = np.random.default_rng(0).choice(x.size, 100_000, replace=False)
        x, w, others = x[pick], w[pick], [o[pick] for o in others]
    a = np.column_stack([np.ones_like(x), *others]) * np.sqrt(w)[:, None]
    xs = x * np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a, xs, rcond=None)
    resid = xs - a @ coef
    xm = x - np.average(x, weights=w)
    total = float(np.sum(w * xm**2))
    return 1.0 - float(np.sum(resid**2)) / total if total > 0 else 1.0


def _weighted_median(x: FloatArray, w: FloatArray) -> float:
    if x.size > 100_000:
        pick = np.random.default_rng(0).choice(x.size, 100_000, replace=False)
        x, w = x[pick], w[pick]
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cw, 0.5 * cw[-1])])


@dataclass(frozen=True)
class FitData:
    """Validated arrays for fitting: batch, step time, extra terms, groups, weights."""

    batch: FloatArray
    step_s: FloatArray
    prefill: FloatArray
    context: FloatArray  # per sequence, NaN filled with the typical value
    group: IntArray
    weights: FloatArray
    extras: tuple[str, ...]
    typical_context: float
    typical_prefill: float
    dropped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, obs: StepObservations, *, min_samples: int) -> FitData:
        """Validate observations, weight runs equally, and decide which extra terms have evidence."""
        n = len(obs)
        if n == 0:
            raise TelemetryError("no usable step observations (empty selection, or no interval with "
                                 "steady running requests and generated tokens)", path="<telemetry>")
        checks = (("batch", obs.batch), ("step_s", obs.step_s), ("prefill_tokens", obs.prefill_tokens))
        for name, arr in checks:
            if not np.all(np.isfinite(arr)):
                i = int(np.flatnonzero(~np.isfinite(arr))[0])
                raise TelemetryError(f"non-finite {name} at row {i}; expected finite numbers",
                                     path="<telemetry>", line=i + 1, field=name)
            if np.any(arr < 0):
                i = int(np.flatnonzero(arr < 0)[0])
                raise TelemetryError(f"negative {name} {arr[i]!r} at row {i}; expected >= 0",
                                     path="<telemetry>", line=i + 1, field=name)
        if n < min_samples:
            raise TelemetryError(f"only {n} step observation(s); at least {min_samples} are needed to fit",
                                 path="<telemetry>", field="step_s")
        if np.any(obs.step_s <= 0) or np.any(obs.batch <= 0):
            raise TelemetryError("step_s and batch must be > 0", path="<telemetry>", field="step_s")
        _, inverse, counts = np.unique(obs.group, return_inverse=True, return_counts=True)
        w = 1.0 / counts[inverse]
        w = w / w.mean()
        ctx = obs.context_tokens
        finite = np.isfinite(ctx)
        typical_ctx = _weighted_median(ctx[finite], w[finite]) if finite.any() else 0.0
        dropped: dict[str, str] = {}
        extras: list[str] = []
        pre = obs.prefill_tokens
        if obs.source == "samples":
            dropped["c_prefill_s"] = ("sampled counters cannot tell prefill steps from decode steps; "
                                      "prefill cost is amortised into c0_s and c_seq_s")
        elif np.ptp(pre) == 0:
            dropped["c_prefill_s"] = f"no variation in prefill tokens (all {pre[0]:g})"
        elif (r2 := _r2_on(pre, [obs.batch], w)) > _COLLINEAR_R2:
            dropped["c_prefill_s"] = f"prefill tokens collinear with the batch (R² = {r2:.3f})"
        else:
            extras.append("c_prefill_s")
        if finite.mean() < 0.95:
            dropped["c_ctx_s"] = "context tokens per sequence unknown"
        else:
            ctx = np.where(finite, ctx, typical_ctx)
            others = [obs.batch] + ([pre] if extras else [])
            if np.std(ctx) <= 1e-3 * max(abs(typical_ctx), 1.0):
                dropped["c_ctx_s"] = f"context per sequence constant ({typical_ctx:g} tokens)"
            elif (r2 := _r2_on(obs.batch * ctx, others, w)) > _COLLINEAR_R2:
                dropped["c_ctx_s"] = (f"context tokens collinear with the batch (R² = {r2:.3f}); "
                                      "their cost is folded into c_seq_s")
            else:
                extras.append("c_ctx_s")
        ctx = np.where(np.isfinite(ctx), ctx, typical_ctx)
        return cls(obs.batch, obs.step_s, pre, ctx, obs.group, w, tuple(extras), typical_ctx,
                   _weighted_median(pre, w), dropped)

    def extra_matrix(self, batch: FloatArray, context: FloatArray, prefill: FloatArray) -> FloatArray:
        """Columns of the kept extra terms for given inputs."""
        cols = {"c_prefill_s": prefill, "c_ctx_s": batch * context}
        if not self.extras:
            return np.zeros((batch.size, 0))
        return np.column_stack([cols[e] for e in self.extras])

    def take(self, index: IntArray | npt.NDArray[np.bool_]) -> FitData:
        """Rows by index (weights kept as they are)."""
        return replace(self, batch=self.batch[index], step_s=self.step_s[index], prefill=self.prefill[index],
                       context=self.context[index], group=self.group[index], weights=self.weights[index])

    def subsample(self, max_rows: int, rng: np.random.Generator) -> FitData:
        """Return a uniform random subset of at most ``max_rows`` rows."""
        if self.batch.size <= max_rows:
            return self
        return self.take(np.sort(rng.choice(self.batch.size, max_rows, replace=False)))

    def mape(self, pred: FloatArray) -> float:
        """Weighted mean absolute percentage error (runs count equally)."""
        return float(np.average(np.abs(pred - self.step_s) / self.step_s, weights=self.weights))

    def units(self) -> IntArray:
        """Split units: runs when there are at least 4, else batch levels (or 20 quantile bins)."""
        if np.unique(self.group).size >= 4:
            return self.group
        return self.levels()

    def levels(self) -> IntArray:
        """Batch-level code per row: distinct batch values, or 20 quantile bins when there are many."""
        levels = np.unique(self.batch)
        if levels.size <= 64:
            return np.searchsorted(levels, self.batch).astype(np.int64)
        edges = np.unique(np.quantile(self.batch, np.linspace(0, 1, 21)[1:-1]))
        return np.searchsorted(edges, self.batch, side="right").astype(np.int64)

    def _level_medians(self, pred: FloatArray, by_run: bool = False) -> tuple[FloatArray, FloatArray]:
        _, inverse = np.unique(self.group if by_run else self.levels(), return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        cuts = np.flatnonzero(np.diff(inverse[order])) + 1
        y = np.array([np.median(c) for c in np.split(self.step_s[order], cuts)])
        f = np.array([np.median(c) for c in np.split(pred[order], cuts)])
        return y, f

    def mape_levels(self, pred: FloatArray, by_run: bool) -> float:
        """MAPE of the per-run (``by_run``) or per-batch-level median step time vs the median prediction."""
        y, f = self._level_medians(pred, by_run)
        return float(np.mean(np.abs(f - y) / y))

    def r2_binned(self, pred: FloatArray) -> float:
        """R² of the per-batch-level medians of step time against those of the prediction."""
        y, f = self._level_medians(pred)
        total = float(np.sum((y - y.mean()) ** 2))
        return 1.0 - float(np.sum((y - f) ** 2)) / total if total > 0 else 0.0

    def r2(self, pred: FloatArray) -> float:
        """Weighted coefficient of determination."""
        mean = np.average(self.step_s, weights=self.weights)
        total = float(np.sum(self.weights * (self.step_s - mean) ** 2))
        return 1.0 - float(np.sum(self.weights * (self.step_s - pred) ** 2)) / total if total > 0 else 0.0


def split_groups(fd: FitData, fraction: float, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
    """Group-aware train/held-out row indices.

    Whole runs are held out when there are at least 4 runs, else whole batch levels (distinct
    batch values, or 20 quantile bins when there are many).  The units with the smallest and
    largest batch always stay in training.
    """
    unit = fd.units()
    units, inverse = np.unique(unit, return_inverse=True)
    all_rows = np.arange(fd.batch.size)
    if units.size < 3 or fraction <= 0:
        return all_rows, all_rows[:0]
    med = np.array([np.median(fd.batch[inverse == i]) for i in range(units.size)])
    order = np.argsort(med, kind="stable")
    interior = order[1:-1]
    n_hold = int(np.clip(round(fraction * units.size), 1, interior.size))
    held = rng.choice(interior, n_hold, replace=False)
    is_held = np.isin(inverse, held)
    return all_rows[~is_held], all_rows[is_held]
