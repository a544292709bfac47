"""What a simulation run measured: the SLO, per-request outcomes and summary metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from identification.errors import ControlkitError
from identification.records import STEP_COLUMNS, STEP_OPTIONAL_COLUMNS

__all__ = [
    "FINISHED",
    "PENDING",
    "REJECTED",
    "SLO",
    "TIMED_OUT",
    "RequestOutcomes",
    "SimMetrics",
    "SimResult",
    "compute_metrics",
    "default_slo",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

#: Request end states (:attr:`RequestOutcomes.status`).
PENDING, FINISHED, REJECTED, TIMED_OUT = 0, 1, 2, 3

#: Column order of the step tuples the engine records.
STEP_RECORD_COLUMNS: tuple[str, ...] = (*STEP_COLUMNS, *STEP_OPTIONAL_COLUMNS)


@dataclass(frozen=True, slots=True)
class SLO:
    """Service-level objectives per request (seconds).

    Parameters
    ----------
    ttft_s
        Time to first token must be <= this.
    tpot_s
        Mean time per output token after the first, ``(finish - first_token) / (output - 1)``,
        must be <= this.
    timeout_s
        Client timeout: a request still without its first token this long after it arrived is
        aborted by its client (``None``: clients wait for ever).  Bounded waiting.
    name
        A label for the class (a tenant or priority), for reports.
    """

    ttft_s: float
    tpot_s: float
    timeout_s: float | None = None
    name: str = ""

    def __post_init__(self) -> None:
        if not (
            self.ttft_s > 0 and self.tpot_s > 0 and math.isfinite(self.ttft_s) and math.isfinite(self.tpot_s)
        ):
            raise ControlkitError(
                f"SLO needs finite ttft_s > 0 and tpot_s > 0, got {self.ttft_s}, {self.tpot_s}"
            )
        if self.timeout_s is not None and not (self.timeout_s > 0 and math.isfinite(self.timeout_s)):
            raise ControlkitError(f"SLO timeout_s must be finite and > 0 (or None), got {self.timeout_s}")


def default_slo(batch1_step_s: float) -> SLO:
    """Return the default SLO of a plant: TPOT <= 5x and TTFT <= 100x its batch-1 step time.

    Examples
    --------
    >>> default_slo(0.010)
    SLO(ttft_s=1.0, tpot_s=0.05, timeout_s=None, name='')
    """
    return SLO(ttft_s=round(100.0 * batch1_step_s, 9), tpot_s=round(5.0 * batch1_step_s, 9))


@dataclass(frozen=True)
class RequestOutcomes:
    """Per-request outcomes, aligned with the (clipped) workload; NaN where not reached.

    Attributes
    ----------
    arrival_s, first_token_s, finish_s
        Times (seconds); ``first_token_s``/``finish_s`` are NaN for unfinished requests.
    prompt_tokens, output_tokens
        Lengths after clipping to ``max_model_len``.
    num_preemptions
        Times each request was preempted.
    status
        How each request ended: :data:`PENDING` (still in the engine at the end),
        :data:`FINISHED`, :data:`REJECTED` (shed, or too large ever to fit) or
        :data:`TIMED_OUT` (its client gave up); ``None``: finished or pending only.
    end_s
        When it ended (finish, rejection or abort; NaN while pending).
    slo_class
        Its SLO class (index into the SLOs of the run); ``None``: all class 0.
    """

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    num_preemptions: IntArray
    status: IntArray | None = None
    end_s: FloatArray | None = None
    slo_class: IntArray | None = None

    @property
    def statuses(self) -> IntArray:
        """:attr:`status`, derived from ``finish_s`` when the engine did not record it."""
        if self.status is not None:
            return self.status
        return np.where(np.isnan(self.finish_s), PENDING, FINISHED).astype(np.int64)

    @property
    def ttft_s(self) -> FloatArray:
        """Time to first token per request (NaN when none)."""
        return self.first_token_s - self.arrival_s

    @property
    def tpot_s(self) -> FloatArray:
        """Mean time per output token after the first (0 for one-token outputs; NaN if unfinished)."""
        denom = np.maximum(self.output_tokens - 1, 1).astype(float)
        tpot = (self.finish_s - self.first_token_s) / denom
        return np.where(self.output_tokens > 1, tpot, np.where(np.isnan(self.finish_s), np.nan, 0.0))

    @property
    def finished(self) -> npt.NDArray[np.bool_]:
        """Which requests finished."""
        return ~np.isnan(self.finish_s)

    def frame(self) -> pd.DataFrame:
        """Return the outcomes as a frame with the request-record columns."""
        return pd.DataFrame(
            {
                "arrival_s": self.arrival_s,
                "first_token_s": self.first_token_s,
                "finish_s": self.finish_s,
                "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens,
                "num_preemptions": self.num_preemptions,
            }
        )


@dataclass(frozen=True, slots=True)
class SimMetrics:
    """Summary of one run.  Times in seconds, throughput in output tokens per second."""

    throughput_tok_s: float
    goodput_req_s: float
    slo_attainment: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    e2e_p50_s: float
    e2e_p99_s: float
    num_requests: int
    num_finished: int
    num_unfinished: int
    num_rejected: int
    num_clipped: int
    num_preemptions: int
    kv_usage_mean: float
    kv_usage_p99: float
    policy_faults: int
    infeasible_steps: int
    extrapolated_steps: int
    num_steps: int
    sim_time_s: float
    slo_ttft_s: float
    slo_tpot_s: float
    first_fault: str = ""
    num_shed: int = 0
    num_timed_out: int = 0
    rejection_rate: float = 0.0
    timeout_rate: float = 0.0
    ttft_all_p99_s: float = math.nan
    window_s: float = math.nan
    num_window_requests: int = 0
    class_attainment: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN becomes None)."""
        out: dict[str, Any] = {"schema": "controlkit.simmetrics/1"}
        for key, value in asdict(self).items():
            out[key] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


@dataclass(frozen=True)
class SimResult:
    """Everything one :func:`~controlkit.sim.simulate` run produced.

    Attributes
    ----------
    metrics
        The summary.
    requests
        Per-request outcomes.
    plant_name, workload_name
        What was simulated.
    steps
        Per-step records when ``record_steps=True`` (columns: step-record schema), else empty.
    fault_messages
        The first few distinct policy faults, for diagnosis.
    """

    metrics: SimMetrics
    requests: RequestOutcomes
    plant_name: str
    workload_name: str
    steps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=list(STEP_RECORD_COLUMNS)))
    fault_messages: tuple[str, ...] = ()


def _pct(values: FloatArray, q: float) -> float:
    return float(np.percentile(values, q)) if len(values) else math.nan


def _targets(req: RequestOutcomes, slo: SLO | Sequence[SLO]) -> tuple[FloatArray, FloatArray, int]:
    """Per-request TTFT and TPOT targets from the run's SLO classes, and the class count."""
    classes = (slo,) if isinstance(slo, SLO) else tuple(slo)
    if req.slo_class is None or len(classes) == 1:
        n = len(req.arrival_s)
        return np.full(n, classes[0].ttft_s), np.full(n, classes[0].tpot_s), len(classes)
    ttft = np.asarray([c.ttft_s for c in classes])
    tpot = np.asarray([c.tpot_s for c in classes])
    return ttft[req.slo_class], tpot[req.slo_class], len(classes)


def compute_metrics(
    req: RequestOutcomes,
    slo: SLO | Sequence[SLO],
    *,
    sim_time_s: float,
    kv_used: list[int],
    kv_dt_s: list[float],
    kv_blocks_total: int,
    counters: dict[str, int],
    first_fault: str = "",
    window_s: tuple[float, float] | None = None,
) -> SimMetrics:
    """Summarise per-request outcomes and per-step KV use into :class:`SimMetrics`.

    A request is *good* when it finished meeting both targets of its SLO class; a rejected
    or timed-out request never is.  Without ``window_s`` goodput is good requests over the
    run's simulated time and attainment good requests over all requests.  With a measurement
    window ``(start, end)`` (the benchmark protocol): goodput is the good requests that
    *finished inside* the window divided by its length (a fixed denominator, whatever a
    policy's drain time), and attainment, rejection rate, timeout rate, the per-class
    attainment and the all-request TTFT p99 are taken over the requests that *arrived*
    inside it.  The all-request TTFT is the time to the first response of any kind: first
    token, rejection or abort (still pending at the end: the time waited so far).
    """
    fin = req.finished
    n = len(req.arrival_s)
    status = req.statuses
    ttft_target, tpot_target, n_classes = _targets(req, slo)
    ttft = req.ttft_s[fin]
    tpot = req.tpot_s[fin]
    e2e = (req.finish_s - req.arrival_s)[fin]
    good = fin & (req.ttft_s <= ttft_target) & (req.tpot_s <= tpot_target)
    out_tokens = int(req.output_tokens[fin].sum())
    if kv_used:
        usage = np.asarray(kv_used, dtype=float) / max(1, kv_blocks_total)
        dts = np.asarray(kv_dt_s, dtype=float)
        kv_mean = float((usage * dts).sum() / dts.sum()) if dts.sum() > 0 else float(usage.mean())
        kv_p99 = float(np.percentile(usage, 99))
    else:
        kv_mean = kv_p99 = 0.0
    if window_s is None:
        w0, w1 = 0.0, float(sim_time_s)
        arrived = np.ones(n, dtype=bool)
        good_in = good
    else:
        w0, w1 = float(window_s[0]), float(window_s[1])
        if not w1 > w0:
            raise ControlkitError(f"measurement window must have end > start, got {window_s}")
        arrived = (req.arrival_s >= w0) & (req.arrival_s < w1)
        good_in = good & (req.finish_s >= w0) & (req.finish_s <= w1)
    dur = (w1 - w0) if w1 > w0 else math.nan
    n_win = int(np.count_nonzero(arrived))
    end = req.end_s if req.end_s is not None else req.finish_s
    first_response = np.where(np.isnan(req.first_token_s), end, req.first_token_s)
    first_response = np.where(np.isnan(first_response), sim_time_s, first_response) - req.arrival_s
    cls = req.slo_class if req.slo_class is not None else np.zeros(n, dtype=np.int64)
    class_att: tuple[float, ...] = ()
    if n_classes > 1:
        class_att = tuple(
            int(np.count_nonzero(good & arrived & (cls == k))) / max(1, int(np.count_nonzero(arrived & (cls == k))))
            for k in range(n_classes)
        )

    def rate(mask: npt.NDArray[np.bool_]) -> float:
        return float(np.count_nonzero(mask & arrived) / n_win) if n_win else 0.0

    return SimMetrics(
        throughput_tok_s=out_tokens / (sim_time_s if sim_time_s > 0 else math.nan) if n else 0.0,
        goodput_req_s=int(np.count_nonzero(good_in)) / dur if n else 0.0,
        slo_attainment=rate(good) if n_win else 1.0,
        ttft_p50_s=_pct(ttft, 50),
        ttft_p90_s=_pct(ttft, 90),
        ttft_p99_s=_pct(ttft, 99),
        tpot_p50_s=_pct(tpot, 50),
        tpot_p90_s=_pct(tpot, 90),
        tpot_p99_s=_pct(tpot, 99),
        e2e_p50_s=_pct(e2e, 50),
        e2e_p99_s=_pct(e2e, 99),
        num_requests=n,
        num_finished=int(np.count_nonzero(fin)),
        num_unfinished=int(n - np.count_nonzero(fin)),
        num_rejected=counters.get("rejected", 0),
        num_clipped=counters.get("clipped", 0),
        num_preemptions=int(req.num_preemptions.sum()),
        kv_usage_mean=kv_mean,
        kv_usage_p99=kv_p99,
        policy_faults=counters.get("faults", 0),
        infeasible_steps=counters.get("infeasible", 0),
        extrapolated_steps=counters.get("extrapolated", 0),
        num_steps=counters.get("steps", 0),
        sim_time_s=float(sim_time_s),
        slo_ttft_s=_first(slo).ttft_s,
        slo_tpot_s=_first(slo).tpot_s,
        first_fault=first_fault,
        num_shed=counters.get("shed", 0),
        num_timed_out=counters.get("timed_out", 0),
        rejection_rate=rate(status == REJECTED),
        timeout_rate=rate(status == TIMED_OUT),
        ttft_all_p99_s=_pct(first_response[arrived], 99),
        window_s=float(dur),
        num_window_requests=n_win,
        class_attainment=class_att,
    )


def _first(slo: SLO | Sequence[SLO]) -> SLO:
    return slo if isinstance(slo, SLO) else next(iter(slo))
