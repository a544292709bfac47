"""The constrained steady-state optimum: the batch and token budget that maximise goodput.

Throughput ``b / y(b)`` grows with the batch ``b`` for an affine step time, and so does the
service capacity, so goodput is maximised by the *largest* batch that meets the constraints:

* TPOT: ``y_up(b) = intercept + k_conf * b <= tpot_slo`` with ``k_conf = k_max`` at the default
  ``confidence="upper"`` (the point holds for every slope in the identified interval);
* KV: ``b * blocks_per_seq <= capacity * (1 - headroom)``;
* actuator range ``[b_min, b_max]``.

The batch leaves room for one prefill chunk per step (``prefill_chunk_tokens``, default
``min(prompt mean, 512)``) at the TPOT SLO, so admission never starves.  The token budget
lets a step carry prefill up to the TPOT SLO:
``max_batched_tokens = b + floor((tpot_slo - y_up(b)) / prefill_s_per_token)``.  TTFT is then
predicted from the workload (M/M/1-style wait at service rate ``b / (y L_out)`` plus the
prefill steps) and reported; when it exceeds the TTFT SLO the load is infeasible at this point.

Examples
--------
>>> from controlkit.plant import DesignPlant
>>> p = DesignPlant(sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4,
...                 b_min=1, b_max=512, kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600)
>>> operating_point(p, tpot_slo_s=0.05).batch
200
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from controlkit.plant import DesignPlant
from identification.errors import InfeasibleSpecError

__all__ = ["OperatingPoint", "operating_point"]


@dataclass(frozen=True, slots=True)
class OperatingPoint:
    """The steady-state optimum and what binds it."""

    batch: int
    max_batched_tokens: int
    step_upper_s: float
    throughput_tok_s: float
    ttft_pred_s: float
    goodput_req_s: float
    binding: str
    ttft_feasible: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form (infinite TTFT as a string)."""
        d = asdict(self)
        if not math.isfinite(self.ttft_pred_s):
            d["ttft_pred_s"] = "inf"
        return d


def operating_point(
    plant: DesignPlant,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    *,
    confidence: str = "upper",
    max_tokens_ceiling: int = 16384,
    prefill_chunk_tokens: int | None = None,
) -> OperatingPoint:
    """Return the goodput-maximising steady state (see module docstring).

    Raises
    ------
    InfeasibleSpecError
        The TPOT SLO is below the step time at ``b_min`` (nothing can meet it), or the KV
        cache cannot hold ``b_min`` sequences.
    """
    if confidence not in ("upper", "nominal"):
        raise InfeasibleSpecError(f"confidence={confidence!r}: expected 'upper' or 'nominal'")
    if not (math.isfinite(tpot_slo_s) and tpot_slo_s > 0):
        raise InfeasibleSpecError(f"TPOT SLO {tpot_slo_s!r} s: expected a finite number of seconds > 0")
    k = plant.k_max if confidence == "upper" else plant.k_nom
    y_min = plant.intercept_s + k * plant.b_min
    if tpot_slo_s < y_min:
        raise InfeasibleSpecError(
            f"TPOT SLO {tpot_slo_s:.4g} s is below the step time at batch {plant.b_min}, {y_min:.4g} s "
            f"({confidence} slope {k:.3g} s/seq): no batch size can meet it; the minimum achievable TPOT "
            f"is {y_min:.4g} s - raise the SLO, or use a faster GPU or a smaller model"
        )
    if plant.memory_max_batch < plant.b_min:
        raise InfeasibleSpecError(
            f"KV capacity {plant.kv_capacity_blocks} blocks holds {plant.memory_max_batch} sequences of "
            f"{plant.tokens_per_seq:.0f} tokens with {plant.kv_headroom:g} headroom, "
            f"below b_min={plant.b_min}"
        )
    chunk = (
        prefill_chunk_tokens
        if prefill_chunk_tokens is not None
        else int(min(plant.prompt_tokens_mean, 512) if plant.prompt_tokens_mean > 0 else 256)
    )
    reserve = plant.prefill_s_per_token * chunk  # room for one prefill chunk per step
    b_tpot = math.floor((tpot_slo_s - plant.intercept_s - reserve) / k + 1e-9)
    if b_tpot < plant.b_min:
        b_tpot = math.floor((tpot_slo_s - plant.intercept_s) / k + 1e-9)
    cands = {"tpot_slo": b_tpot, "kv_capacity": plant.memory_max_batch, "b_max": plant.b_max}
    binding = min(cands, key=lambda name: cands[name])
    b = max(plant.b_min, min(cands.values()))
    y = plant.intercept_s + k * b
    if plant.prefill_s_per_token > 0:
        extra = math.floor(max(0.0, tpot_slo_s - y) / plant.prefill_s_per_token)
    else:
        extra = max_tokens_ceiling
    budget = int(min(max(b + extra, b, 1), max(max_tokens_ceiling, b)))
    thr = b / y
    ttft, goodput = math.nan, math.nan
    lam, l_out = plant.arrival_rate_per_s, plant.output_tokens_mean
    if lam > 0 and l_out > 0:
        mu = b / (y * l_out)
        rho = lam / mu
        prefill_steps = (
            math.ceil(plant.prompt_tokens_mean / max(budget - b, 1)) if plant.prompt_tokens_mean else 1
        )
        ttft = (1.0 / mu) * rho / (1.0 - rho) + prefill_steps * y if rho < 1 else math.inf
        goodput = min(lam, mu)
    feasible = ttft_slo_s is None or not math.isfinite(ttft) or ttft <= ttft_slo_s
    if ttft_slo_s is not None and math.isinf(ttft):
        feasible = False
    return OperatingPoint(int(b), budget, y, thr, ttft, goodput, binding, feasible)
