"""WorkloadModel: request length distributions and arrival-rate statistics.

From request records or traces (``Telemetry.requests``) it keeps the empirical quantile
functions of prompt and output lengths (and their means), the mean arrival rate and the
burstiness of arrivals: the squared coefficient of variation of inter-arrival times (CV² = 1
for Poisson; > 1 bursty), with the moment-matched Gamma shape ``1 / CV²``.

From sampled counters alone (no request records) only the mean lengths are observable:
``prompt_tokens_total / request_success_total`` and ``generation_tokens_total /
request_success_total`` over each run; arrival statistics are then unknown (``None``) and
:meth:`WorkloadModel.sample` draws geometric lengths with those means (``length_model_`` says so).

Examples
--------
>>> import pandas as pd
>>> from identification.records import Telemetry
>>> req = pd.DataFrame({"arrival_s": [0.0, 1.0, 2.0, 3.0], "prompt_tokens": [10, 20, 30, 40],
...     "output_tokens": [5, 5, 5, 5], "run": "a"})
>>> w = WorkloadModel().fit(Telemetry(requests=req))
>>> w.prompt_tokens_mean_, w.arrival_rate_per_s_, w.interarrival_cv2_
(25.0, 1.0, 0.0)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from identification.errors import NotFittedError, TelemetryError
from identification.records import RUN_COLUMN, Telemetry
from identification.robust import ArgumentError, check_hyperparameters

__all__ = ["WorkloadModel", "WorkloadParams"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class WorkloadParams:
    """Hyper-parameters of :class:`WorkloadModel`."""

    n_quantiles: int = field(default=101, metadata={"bounds": (3, 10_001)})


def _lengths(frame: pd.DataFrame, name: str) -> FloatArray:
    if name not in frame.columns:
        raise TelemetryError(f"request records lack {name!r}; expected prompt_tokens and output_tokens",
                             field=name)
    v = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(v) | (v < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TelemetryError(f"{name} must be a finite count >= 0, got {v[i]!r} at row {i}",
                             line=i + 2, field=name)
    return v


class WorkloadModel:
    """Length distributions and arrival statistics of a workload.

    Attributes
    ----------
    source_ : str
        ``"requests"`` or ``"samples"``.
    length_model_ : str
        ``"empirical"`` or ``"geometric (means only)"``.
    n_requests_ : int
    prompt_tokens_mean_, output_tokens_mean_ : float
    prompt_tokens_quantiles_, output_tokens_quantiles_ : list of float or None
        Values at probabilities ``linspace(0, 1, n_quantiles)``.
    arrival_rate_per_s_, interarrival_cv2_, gamma_shape_ : float or None
    """

    def __init__(self, **params: Any) -> None:
        self.params = WorkloadParams(**params)
        check_hyperparameters(self.params)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a dict."""
        return asdict(self.params)

    def fit(self, telemetry: Telemetry) -> WorkloadModel:
        """Fit from request records, else from sampled counters; returns ``self``.

        Raises
        ------
        TelemetryError
            Neither request records nor the prompt/generation/success counters are present.
        """
        self.arrival_rate_per_s_: float | None = None
        self.interarrival_cv2_: float | None = None
        self.gamma_shape_: float | None = None
        self.prompt_tokens_quantiles_: list[float] | None = None
        self.output_tokens_quantiles_: list[float] | None = None
        if len(telemetry.requests) > 0:
            self._fit_requests(telemetry.requests)
        elif len(telemetry.samples) > 0 and {"request_success_total", "prompt_tokens_total",
                                             "generation_tokens_total"} <= set(telemetry.samples.columns):
            self._fit_counters(telemetry.samples)
        else:
            raise TelemetryError("no request records and no prompt/generation/success counters to fit a "
                                 "workload from", field="requests")
        return self

    def _fit_requests(self, req: pd.DataFrame) -> None:
        prompt, output = _lengths(req, "prompt_tokens"), _lengths(req, "output_tokens")
        probs = np.linspace(0.0, 1.0, self.params.n_quantiles)
        self.source_, self.length_model_, self.n_requests_ = "requests", "empirical", int(prompt.size)
        self.prompt_tokens_mean_, self.output_tokens_mean_ = float(prompt.mean()), float(output.mean())
        self.prompt_tokens_quantiles_ = np.quantile(prompt, probs).tolist()
        self.output_tokens_quantiles_ = np.quantile(output, probs).tolist()
        if "arrival_s" not in req.columns:
            return
        arrival = pd.to_numeric(req["arrival_s"], errors="coerce")
        run = req[RUN_COLUMN] if RUN_COLUMN in req.columns else pd.Series(0, index=req.index)
        gaps: list[FloatArray] = []
        span = 0.0
        count = 0
        for _, a in arrival.groupby(run, sort=False):
            v = np.sort(a.dropna().to_numpy(dtype=np.float64))
            if v.size >= 2:
                gaps.append(np.diff(v))
                span += float(v[-1] - v[0])
                count += v.size - 1
        if not gaps or span <= 0:
            return
        g = np.concatenate(gaps)
        mean = float(g.mean())
        self.arrival_rate_per_s_ = count / span
        self.interarrival_cv2_ = float(g.var() / mean**2)
        self.gamma_shape_ = 1.0 / self.interarrival_cv2_ if self.interarrival_cv2_ > 0 else None

    def _fit_counters(self, s: pd.DataFrame) -> None:
        run = s[RUN_COLUMN] if RUN_COLUMN in s.columns else pd.Series(0, index=s.index)
        totals = {}
        for name in ("request_success_total", "prompt_tokens_total", "generation_tokens_total"):
            v = pd.to_numeric(s[name], errors="coerce")
            d = v.groupby(run, sort=False).diff()
            totals[name] = float(d[d > 0].sum())  # never across runs or resets
        done = totals["request_success_total"]
        if done <= 0:
            raise TelemetryError("no request finished in the sampled counters; cannot estimate lengths",
                                 field="request_success_total")
        self.source_, self.length_model_, self.n_requests_ = "samples", "geometric (means only)", int(done)
        self.prompt_tokens_mean_ = totals["prompt_tokens_total"] / done
        self.output_tokens_mean_ = totals["generation_tokens_total"] / done

    def _check(self) -> None:
        if not hasattr(self, "source_"):
            raise NotFittedError("this WorkloadModel is not fitted yet; call fit(telemetry) first")

    def sample(self, n: int, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
        """Draw ``n`` (prompt_tokens, output_tokens) pairs (independent marginals), each >= 1.

        Examples
        --------
        >>> import pandas as pd
        >>> from identification.records import Telemetry
        >>> req = pd.DataFrame({"prompt_tokens": [100] * 4, "output_tokens": [7] * 4})
        >>> p, o = WorkloadModel().fit(Telemetry(requests=req)).sample(3, np.random.default_rng(0))
        >>> p.tolist(), o.tolist()
        ([100, 100, 100], [7, 7, 7])
        """
        self._check()
        if n < 0:
            raise ArgumentError(f"n={n!r} must be >= 0")
        if self.prompt_tokens_quantiles_ is not None and self.output_tokens_quantiles_ is not None:
            probs = np.linspace(0.0, 1.0, len(self.prompt_tokens_quantiles_))
            p = np.interp(rng.random(n), probs, self.prompt_tokens_quantiles_)
            o = np.interp(rng.random(n), probs, self.output_tokens_quantiles_)
        else:
            p = rng.geometric(1.0 / max(self.prompt_tokens_mean_, 1.0), n).astype(np.float64)
            o = rng.geometric(1.0 / max(self.output_tokens_mean_, 1.0), n).astype(np.float64)
        return (np.maximum(np.rint(p), 1).astype(np.int64), np.maximum(np.rint(o), 1).astype(np.int64))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the hyper-parameters and the fitted state."""
        self._check()
        keys = ("source", "length_model", "n_requests", "prompt_tokens_mean", "output_tokens_mean",
                "prompt_tokens_quantiles", "output_tokens_quantiles", "arrival_rate_per_s",
                "interarrival_cv2", "gamma_shape")
        return {"params": self.get_params(), **{k: getattr(self, k + "_") for k in keys}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> WorkloadModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        m = cls(**d["params"])

        def opt(key: str) -> float | None:
            return None if d[key] is None else float(d[key])

        m.source_, m.length_model_ = str(d["source"]), str(d["length_model"])
        m.n_requests_ = int(d["n_requests"])
        m.prompt_tokens_mean_ = float(d["prompt_tokens_mean"])
        m.output_tokens_mean_ = float(d["output_tokens_mean"])
        pq, oq = d["prompt_tokens_quantiles"], d["output_tokens_quantiles"]
        m.prompt_tokens_quantiles_ = None if pq is None else [float(x) for x in pq]
        m.output_tokens_quantiles_ = None if oq is None else [float(x) for x in oq]
        m.arrival_rate_per_s_ = opt("arrival_rate_per_s")
        m.interarrival_cv2_ = opt("interarrival_cv2")
        m.gamma_shape_ = opt("gamma_shape")
        return m
