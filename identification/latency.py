"""LatencyModel: engine step time as a function of the batch, context and prefill tokens.

Two forms, both linear in their cost coefficients (seconds):

* **affine** (BLIS/Vidur style)::

      step_s = c0_s + c_seq_s·b + c_prefill_s·prefill_tokens + c_ctx_s·b·context_tokens

* **knee** (memory-bound, then compute-bound; continuous, piecewise linear in ``b``)::

      step_s = c0_s + c_seq_s·min(b, knee) + c_seq_above_s·max(b − knee, 0) + (same extra terms)

Terms without evidence in the data (no variation, collinear with the batch, or amortised by
the counter derivation) are fixed at 0 and listed in ``dropped_terms_`` with the reason.
The form is chosen by held-out error on a group-aware split (whole runs, else whole batch
levels, are held out; the smallest and largest levels always stay in training so the held-out
error is interpolation error).  The final coefficients are refitted on all the data with a
robust loss; intervals come from the sandwich covariance (cluster-robust over runs when there
are enough runs) or, with ``n_bootstrap > 0``, from a (subsampled) bootstrap.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> b = rng.integers(1, 64, 500).astype(float)
>>> obs = {"batch": b, "step_s": 0.01 + 2e-4 * b + rng.normal(0, 2e-4, b.size)}
>>> m = LatencyModel(form="affine").fit(obs)
>>> round(m.slope_ * 1e4, 1)
2.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from identification.derive import StepObservations, derive_observations
from identification.errors import ExtrapolationWarning, FitQualityWarning, NotFittedError, TelemetryError
from identification.fitdata import FitData, split_groups
from identification.latency_forms import FormFit, fit_form, observations_from_mapping
from identification.model_form import autocorrelation_time, local_slopes
from identification.records import Telemetry
from identification.robust import ArgumentError, check_hyperparameters

__all__ = ["LatencyModel", "LatencyParams"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class LatencyParams:
    """Hyper-parameters of :class:`LatencyModel`, each with its default and bounds."""

    form: str = field(default="auto", metadata={"choices": ("auto", "affine", "knee")})
    loss: str = field(default="huber", metadata={"choices": ("huber", "soft_l1", "linear")})
    threshold: float = field(default=1.345, metadata={"bounds": (0.1, 100.0)})
    n_bootstrap: int = field(default=0, metadata={"bounds": (0, 10_000)})
    confidence: float = field(default=0.95, metadata={"bounds": (0.5, 0.999)})
    holdout_fraction: float = field(default=0.25, metadata={"bounds": (0.0, 0.9)})
    seed: int = field(default=0, metadata={"bounds": (0, 2**32 - 1)})
    parsimony: float = field(default=0.05, metadata={"bounds": (0.0, 1.0)})
    max_select_rows: int = field(default=10_000, metadata={"bounds": (1_000, 10**9)})
    max_fit_rows: int = field(default=50_000, metadata={"bounds": (1_000, 10**9)})
    max_bootstrap_rows: int = field(default=20_000, metadata={"bounds": (100, 10**9)})
    min_samples: int = field(default=8, metadata={"bounds": (3, 10**9)})
    model_form: bool = field(default=True, metadata={"choices": (True, False)})


_FITTED = ("form_", "coef_")


class LatencyModel:
    """Step time vs batch (and context, prefill tokens), with intervals and validity range.

    Parameters
    ----------
    **params
        Any field of :class:`LatencyParams`: ``form`` (``"auto"``, ``"affine"``, ``"knee"``),
        ``loss`` (``"huber"``, ``"soft_l1"``, ``"linear"``), ``threshold`` (robust threshold in
        residual-scale units), ``n_bootstrap`` (0 = sandwich covariance), ``confidence``,
        ``holdout_fraction``, ``seed``, ``parsimony`` (the knee must beat the affine held-out
        MAPE by this relative margin), ``max_select_rows`` (form selection runs on a random
        subsample of at most this many rows), ``max_fit_rows`` (the final fit and its intervals
        use at most this many rows: intervals from a subsample are conservative),
        ``max_bootstrap_rows``, ``min_samples``.

    Attributes
    ----------
    form_ : str
        The chosen form.
    coef_ : dict[str, float]
        Cost coefficients in seconds (per sequence, per token).
    coef_interval_ : dict[str, tuple[float, float]]
        Their ``confidence`` intervals.
    knee_batch_ : float or None
        Batch at the knee (knee form).
    slope_, slope_interval_
        d step_s / d batch at typical context (s/seq); the interval covers every segment's slope
        inside ``batch_range_`` (``slope_interval_parameter_``: parameter error only) and, with
        ``model_form=True`` (default), every local slope between batch bins the data resolve
        (``slope_interval_model_form_``, ``local_slopes_``: model-form error, the curvature the
        fitted form does not have; :mod:`identification.model_form`).
    mape_holdout_, mape_holdout_levels_
        Held-out MAPE of the chosen form: over held-out rows (runs weighted equally), and over
        the medians of the held-out runs (or batch levels): model error without per-step noise.
    r2_
        R² of the per-batch-level medians of step time against the prediction (levels: the
        distinct batch sizes, or 20 quantile bins of the batch when there are many);
        ``r2_rows_`` is the row-level (weighted) R², which heavy-tailed per-interval noise lowers.
    intercept_s_, batch_range_, typical_context_tokens_, residual_scale_s_, mape_holdout_,
    n_samples_fit_, dropped_terms_, interval_method_
        Fit summary and validity.
    """

    def __init__(self, **params: Any) -> None:
        self.params = LatencyParams(**params)
        check_hyperparameters(self.params)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a dict (scikit-learn style)."""
        return asdict(self.params)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.get_params().items() if v != getattr(LatencyParams(), k)}
        return f"LatencyModel({', '.join(f'{k}={v!r}' for k, v in changed.items())})"

    # ------------------------------------------------------------------ fit
    def fit(self, data: Telemetry | StepObservations | Mapping[str, Any]) -> LatencyModel:
        """Fit the model; returns ``self``.

        Parameters
        ----------
        data
            :class:`Telemetry` (step records or sampled counters), :class:`StepObservations`,
            or a mapping of arrays with ``batch`` and ``step_s`` (optionally ``prefill_tokens``,
            ``context_tokens`` per sequence, ``group``).

        Raises
        ------
        TelemetryError
            Empty data, non-finite or negative values, or fewer than ``min_samples`` steps.
        """
        p = self.params
        obs = _as_observations(data)
        obs = obs.take(~(obs.num_preempted > 0)) if len(obs) else obs
        fd = FitData.build(obs, min_samples=p.min_samples)
        rng = np.random.default_rng(p.seed)
        forms = ["affine", "knee"] if p.form == "auto" else [p.form]
        if "knee" in forms and np.unique(fd.batch).size < 5:
            if p.form == "knee":
                raise TelemetryError(
                    f"the knee form needs at least 5 distinct batch sizes; the data has "
                    f"{np.unique(fd.batch).size}", path="<telemetry>", field="num_running")
            forms = ["affine"]
        scores: dict[str, float] = {}
        level_scores: dict[str, float] = {}
        by_run = bool(np.unique(fd.group).size >= 4)
        sel = fd.subsample(p.max_select_rows, rng)
        sel_train, sel_hold = split_groups(sel, p.holdout_fraction, np.random.default_rng(p.seed))
        for form in forms:
            if sel_hold.size:
                part = fit_form(form, sel.take(sel_train), p.loss, p.threshold, covariance=False)
                held = sel.take(sel_hold)
                scores[form] = held.mape(part.predict(held))
                level_scores[form] = held.mape_levels(part.predict(held), by_run)
            else:
                part = fit_form(form, sel, p.loss, p.threshold, covariance=False)
                scores[form] = sel.mape(part.predict(sel))
                level_scores[form] = sel.mape_levels(part.predict(sel), by_run)
        chosen = forms[0]
        if len(forms) == 2 and scores["knee"] < (1.0 - p.parsimony) * scores["affine"]:
            chosen = "knee"
        final = fit_form(chosen, fd.subsample(p.max_fit_rows, rng), p.loss, p.threshold, covariance=True)
        if p.n_bootstrap > 0:
            final = final.with_bootstrap(fd, p.n_bootstrap, p.max_bootstrap_rows, rng, p.loss, p.threshold)
        self._set_fitted(final, fd, scores, sel_hold.size > 0)
        self.mape_holdout_levels_ = level_scores[chosen] if sel_hold.size > 0 else float("nan")
        self._warn_if_doubtful(final)
        return self

    def _set_fitted(self, fit: FormFit, fd: FitData, scores: dict[str, float], held_out: bool) -> None:
        conf = self.params.confidence
        self.form_ = fit.form
        self.coef_ = fit.coefficients()
        self.coef_interval_ = fit.coefficient_intervals(conf)
        self.knee_batch_ = fit.knee()
        self.batch_range_ = (float(fd.batch.min()), float(fd.batch.max()))
        self.typical_context_tokens_ = fd.typical_context
        self.typical_prefill_tokens_ = fd.typical_prefill
        # row-level intervals treat steps as independent; a run's steps are not (windowed noise,
        # pauses, slow context drift): widen by sqrt(tau), the effective-sample-size correction
        self.autocorrelation_time_ = autocorrelation_time(fd.step_s - fit.predict(fd))
        inflate = math.sqrt(self.autocorrelation_time_) if "row" in fit.method else 1.0
        self.slope_interval_parameter_ = fit.slope_interval(conf, self.batch_range_, fd.typical_context, inflate)
        ls = local_slopes(fd, fit, conf) if self.params.model_form else None
        self.slope_interval_model_form_ = None if ls is None else ls.interval
        self.local_slopes_ = ls
        self.slope_interval_ = self.slope_interval_parameter_
        if ls is not None:  # model-form error: every local slope the data show (identification/model_form.py)
            lo, hi = self.slope_interval_parameter_
            self.slope_interval_ = (min(lo, ls.interval[0]), max(hi, ls.interval[1]))
        lo, hi = self.batch_range_
        f_lo, f_hi = fit.curve(np.array([lo, hi]), fd.typical_context)
        self.slope_ = float((f_hi - f_lo) / (hi - lo)) if hi > lo else fit.slope_interval(
            0.0, self.batch_range_, fd.typical_context)[0]
        self.intercept_s_ = float(self.coef_["c0_s"])
        pred = fit.predict(fd)
        self.residual_scale_s_ = fit.residual_scale(fd)
        self.r2_ = fd.r2_binned(pred)
        self.r2_rows_ = fd.r2(pred)
        self.mape_fit_ = fd.mape(pred)
        self.mape_holdout_ = scores[fit.form] if held_out else float("nan")
        self.form_scores_ = dict(scores)
        self.n_samples_fit_ = min(len(fd.batch), self.params.max_fit_rows)
        self.n_samples_seen_ = len(fd.batch)
        self.n_groups_fit_ = int(np.unique(fd.group).size)
        self.dropped_terms_ = dict(fd.dropped)
        self.interval_method_ = fit.method
        self._fit = fit

    def _warn_if_doubtful(self, fit: FormFit) -> None:
        reasons = []
        n_params = len(fit.theta)
        if self.n_samples_fit_ < 5 * n_params:
            reasons.append(f"only {self.n_samples_fit_} steps for {n_params} parameters")
        if self.r2_ < 0.5:
            reasons.append(f"R² = {self.r2_:.2f} < 0.5")
        if self.slope_interval_[0] <= 0:
            reasons.append(f"slope interval {self.slope_interval_} does not exclude 0 or below")
        if self.mape_holdout_ > 0.25:
            reasons.append(f"held-out MAPE {self.mape_holdout_:.1%} > 25%")
        if fit.singular:
            reasons.append("the coefficients are not identifiable (singular information matrix)")
        if reasons:
            warnings.warn("doubtful latency fit: " + "; ".join(reasons), FitQualityWarning, stacklevel=3)

    # -------------------------------------------------------------- predict
    def _check_fitted(self) -> FormFit:
        if not hasattr(self, "_fit"):
            raise NotFittedError("this LatencyModel is not fitted yet; call fit(telemetry) first")
        return self._fit

    def predict_step_s(
        self,
        batch: npt.ArrayLike,
        context_tokens: npt.ArrayLike | None = None,
        prefill_tokens: npt.ArrayLike = 0,
    ) -> Any:
        """Predicted step time in seconds (vectorised; scalars in give a float out).

        Parameters
        ----------
        batch
            Sequences in the batch.
        context_tokens
            Context tokens per sequence; ``None`` means the typical context seen in the fit.
        prefill_tokens
            Prefill tokens in the step.

        Warns
        -----
        ExtrapolationWarning
            A batch outside ``batch_range_``.
        """
        fit = self._check_fitted()
        b = np.asarray(batch, dtype=np.float64)
        ctx = np.asarray(self.typical_context_tokens_ if context_tokens is None else context_tokens, float)
        pre = np.asarray(prefill_tokens, dtype=np.float64)
        if np.any(b < 0) or np.any(ctx < 0) or np.any(pre < 0) or not np.all(np.isfinite(b)):
            raise ArgumentError("batch, context_tokens and prefill_tokens must be finite and >= 0")
        lo, hi = self.batch_range_
        if np.any(b < lo * (1 - 1e-9)) or np.any(b > hi * (1 + 1e-9)):
            warnings.warn(
                f"batch outside the fitted range [{lo:g}, {hi:g}]: extrapolating",
                ExtrapolationWarning, stacklevel=2,
            )
        out = fit.evaluate(*np.broadcast_arrays(b, ctx, pre))
        return float(out) if out.ndim == 0 else out

    # ------------------------------------------------------------ serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the hyper-parameters and the fitted state."""
        fit = self._check_fitted()
        return {
            "params": self.get_params(),
            "form": self.form_,
            "fit": fit.to_dict(),
            "coef": self.coef_,
            "coef_interval": {k: list(v) for k, v in self.coef_interval_.items()},
            "knee_batch": self.knee_batch_,
            "slope_s_per_seq": self.slope_,
            "slope_interval_s_per_seq": list(self.slope_interval_),
            "slope_interval_parameter_s_per_seq": list(self.slope_interval_parameter_),
            "slope_interval_model_form_s_per_seq": (
                None if self.slope_interval_model_form_ is None else list(self.slope_interval_model_form_)
            ),
            "intercept_s": self.intercept_s_,
            "batch_range": list(self.batch_range_),
            "typical_context_tokens": self.typical_context_tokens_,
            "typical_prefill_tokens": self.typical_prefill_tokens_,
            "residual_scale_s": self.residual_scale_s_,
            "r2": self.r2_,
            "r2_rows": self.r2_rows_,
            "mape_fit": self.mape_fit_,
            "mape_holdout": None if np.isnan(self.mape_holdout_) else self.mape_holdout_,
            "mape_holdout_levels": None if np.isnan(self.mape_holdout_levels_) else self.mape_holdout_levels_,
            "form_scores": self.form_scores_,
            "n_samples_fit": self.n_samples_fit_,
            "n_samples_seen": self.n_samples_seen_,
            "n_groups_fit": self.n_groups_fit_,
            "dropped_terms": self.dropped_terms_,
            "interval_method": self.interval_method_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LatencyModel:
        """Rebuild a fitted model from :meth:`to_dict` output (KeyError/TypeError on bad input)."""
        m = cls(**d["params"])
        fit = FormFit.from_dict(d["fit"])
        m.form_ = str(d["form"])
        m.coef_ = {str(k): float(v) for k, v in d["coef"].items()}
        m.coef_interval_ = {str(k): (float(v[0]), float(v[1])) for k, v in d["coef_interval"].items()}
        m.knee_batch_ = None if d["knee_batch"] is None else float(d["knee_batch"])
        m.slope_ = float(d["slope_s_per_seq"])
        lo, hi = d["slope_interval_s_per_seq"]
        m.slope_interval_ = (float(lo), float(hi))
        par = d.get("slope_interval_parameter_s_per_seq") or (lo, hi)  # older files: one interval
        m.slope_interval_parameter_ = (float(par[0]), float(par[1]))
        mf = d.get("slope_interval_model_form_s_per_seq")
        m.slope_interval_model_form_ = None if mf is None else (float(mf[0]), float(mf[1]))
        m.local_slopes_ = None
        m.intercept_s_ = float(d["intercept_s"])
        b_lo, b_hi = d["batch_range"]
        m.batch_range_ = (float(b_lo), float(b_hi))
        m.typical_context_tokens_ = float(d["typical_context_tokens"])
        m.typical_prefill_tokens_ = float(d["typical_prefill_tokens"])
        m.residual_scale_s_ = float(d["residual_scale_s"])
        m.r2_ = float(d["r2"])
        m.r2_rows_ = float(d["r2_rows"])
        m.mape_fit_ = float(d["mape_fit"])
        m.mape_holdout_ = float("nan") if d["mape_holdout"] is None else float(d["mape_holdout"])
        levels = d["mape_holdout_levels"]
        m.mape_holdout_levels_ = float("nan") if levels is None else float(levels)
        m.form_scores_ = {str(k): float(v) for k, v in d["form_scores"].items()}
        m.n_samples_fit_ = int(d["n_samples_fit"])
        m.n_samples_seen_ = int(d["n_samples_seen"])
        m.n_groups_fit_ = int(d["n_groups_fit"])
        m.dropped_terms_ = {str(k): str(v) for k, v in d["dropped_terms"].items()}
        m.interval_method_ = str(d["interval_method"])
        m._fit = fit
        return m


def _as_observations(data: Telemetry | StepObservations | Mapping[str, Any]) -> StepObservations:
    if isinstance(data, StepObservations):
        return data
    if isinstance(data, Telemetry):
        return derive_observations(data)
    if isinstance(data, Mapping):
        return observations_from_mapping(data)
    raise ArgumentError(
        f"cannot fit a LatencyModel on {type(data).__name__}; give Telemetry, StepObservations "
        "or a mapping with 'batch' and 'step_s' arrays"
    )
