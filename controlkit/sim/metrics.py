"""What a simulation run measured: the SLO, per-request outcomes and summary metrics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from identification.errors import ControlkitError
from identification.records import STEP_COLUMNS, STEP_OPTIONAL_COLUMNS

__all__ = ["SLO", "RequestOutcomes", "SimMetrics", "SimResult", "compute_metrics", "default_slo"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

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
    """

    ttft_s: float
    tpot_s: float

    def __post_init__(self) -> None:
        if not (
            self.ttft_s > 0 and self.tpot_s > 0 and math.isfinite(self.ttft_s) and math.isfinite(self.tpot_s)
        ):
            raise ControlkitError(
                f"SLO needs finite ttft_s > 0 and tpot_s > 0, got {self.ttft_s}, {self.tpot_s}"
            )


def default_slo(batch1_step_s: float) -> SLO:
    """Return the default SLO of a plant: TPOT <= 5x and TTFT <= 100x its batch-1 step time.

    Examples
    --------
    >>> default_slo(0.010)
    SLO(ttft_s=1.0, tpot_s=0.05)
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
    """

    arrival_s: FloatArray
    first_token_s: FloatArray
    finish_s: FloatArray
    prompt_tokens: IntArray
    output_tokens: IntArray
    num_preemptions: IntArray

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


def compute_metrics(
    req: RequestOutcomes,
    slo: SLO,
    *,
    sim_time_s: float,
    kv_used: list[int],
    kv_dt_s: list[float],
    kv_blocks_total: int,
    counters: dict[str, int],
    first_fault: str = "",
) -> SimMetrics:
    """Summarise per-request outcomes and per-step KV use into :class:`SimMetrics`."""
    fin = req.finished
    n = len(req.arrival_s)
    ttft = req.ttft_s[fin]
    tpot = req.tpot_s[fin]
    e2e = (req.finish_s - req.arrival_s)[fin]
    ok = fin & (req.ttft_s <= slo.ttft_s) & (req.tpot_s <= slo.tpot_s)
    n_ok = int(np.count_nonzero(ok))
    out_tokens = int(req.output_tokens[fin].sum())
    if kv_used:
        usage = np.asarray(kv_used, dtype=float) / max(1, kv_blocks_total)
        dts = np.asarray(kv_dt_s, dtype=float)
        kv_mean = float((usage * dts).sum() / dts.sum()) if dts.sum() > 0 else float(usage.mean())
        kv_p99 = float(np.percentile(usage, 99))
    else:
        kv_mean = kv_p99 = 0.0
    dur = sim_time_s if sim_time_s > 0 else math.nan
    return SimMetrics(
        throughput_tok_s=out_tokens / dur if n else 0.0,
        goodput_req_s=n_ok / dur if n else 0.0,
        slo_attainment=n_ok / n if n else 1.0,
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
        slo_ttft_s=slo.ttft_s,
        slo_tpot_s=slo.tpot_s,
        first_fault=first_fault,
    )
