"""The constrained steady-state optimum: the batch and token budget that maximise goodput.

TPOT is a per-request mean, and prefill work is conserved however it is chunked: a batch of
``b`` completes (and admits) ``b / L_out`` requests per step, whose prompts cost
``prefill_s_per_token * P`` each.  The mean step is therefore affine in ``b`` with the
effective slope ``k_eff = k_conf + prefill_s_per_token * P / L_out`` (``k_conf = k_max`` at
the default ``confidence="upper"``).  Throughput ``b / y(b)`` and the service capacity grow
with ``b``, so goodput is maximised by the *largest* batch that meets the constraints:

* TPOT: ``intercept + k_eff * b <= tpot_slo``;
* KV: ``b * blocks_per_seq <= capacity * (1 - headroom)``;
* actuator range ``[b_min, b_max]``.

The token budget is sized for TTFT, not TPOT (:func:`token_budget`).  TTFT is then predicted
from the workload (M/M/1-style wait at service rate ``b / (y L_out)`` plus the prefill steps)
and reported; when it exceeds the TTFT SLO the load is infeasible at this point
(``docs/theory.md`` §6).

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

__all__ = [
    "MIN_TOKEN_BUDGET",
    "OperatingPoint",
    "operating_point",
    "prefill_load_s_per_seq",
    "step_bound_s",
    "token_budget",
    "ttft_max_rate_per_s",
]

#: Smallest per-step token budget the designs use (vLLM's default for online serving).
MIN_TOKEN_BUDGET = 2048


def prefill_load_s_per_seq(plant: DesignPlant) -> float:
    """Mean prefill seconds per step per running sequence at saturation: ``c_p * P / L_out``.

    A running batch of ``b`` completes ``b / L_out`` requests per step, and admits as many, whose
    prompts (``P`` tokens each) cost ``c_p`` seconds per token however they are chunked.
    """
    if plant.output_tokens_mean <= 0 or plant.prompt_tokens_mean <= 0:
        return 0.0
    return plant.prefill_s_per_token * plant.prompt_tokens_mean / plant.output_tokens_mean


def step_bound_s(plant: DesignPlant, batch: int, budget: int, *, confidence: str = "upper") -> float:
    """Longest step a token budget allows with at most ``batch`` running sequences.

    A step with ``n <= batch`` decodes fills the rest of the budget with prefill:
    ``a + k n + c_p (budget - n)``, largest at ``n = batch`` when a decode costs more than a
    prefill token (``k >= c_p``, every plant measured so far), else at ``n = 0``.

    Examples
    --------
    >>> from controlkit.plant import DesignPlant
    >>> p = DesignPlant.example(prefill_s_per_token=5e-5)
    >>> round(step_bound_s(p, 100, 600), 6)
    0.06
    """
    k = plant.k_max if confidence == "upper" else plant.k_nom
    c_p = plant.prefill_s_per_token
    n = max(min(batch, budget), 0)
    return plant.intercept_s + max(k * n + c_p * (budget - n), c_p * budget)


def token_budget(
    plant: DesignPlant,
    batch: int,
    *,
    max_tokens_ceiling: int = 16384,
    step_cap_s: float | None = None,
    confidence: str = "upper",
) -> int:
    """Return the per-step token budget: room for the decodes plus a typical prompt in one step.

    The TPOT SLO is on each request's *mean* inter-token time, and chunking conserves prefill
    work, so a small budget barely lowers mean TPOT while it multiplies TTFT (a prompt takes
    ``P / (budget - b)`` steps) and caps the admission rate.  The budget is therefore
    ``b + max(MIN_TOKEN_BUDGET, 2 P)``, clipped to ``max_tokens_ceiling``; only a per-step
    latency cap ``step_cap_s`` (an ITL constraint) lowers it, to the largest budget whose
    :func:`step_bound_s` is within the cap, ``b + (step_cap_s - y_up(b)) / c_p`` when
    ``k >= c_p`` (at least ``b + 1``).

    Examples
    --------
    >>> from controlkit.plant import DesignPlant
    >>> p = DesignPlant(sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4,
    ...                 b_min=1, b_max=512, kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600,
    ...                 prompt_tokens_mean=1500, prefill_s_per_token=5e-5)
    >>> token_budget(p, 100), token_budget(p, 100, step_cap_s=0.06)
    (3100, 600)
    """
    budget = batch + max(MIN_TOKEN_BUDGET, math.ceil(2.0 * plant.prompt_tokens_mean))
    c_p = plant.prefill_s_per_token
    if step_cap_s is not None and c_p > 0:
        k = plant.k_max if confidence == "upper" else plant.k_nom
        # the longest step is at n = batch decodes when k >= c_p, else at n = 0 (all prefill)
        room = (
            (step_cap_s - plant.intercept_s - k * batch) / c_p
            if k >= c_p
            else (step_cap_s - plant.intercept_s) / c_p - batch
        )
        budget = min(budget, batch + max(math.floor(max(room, 0.0) + 1e-9), 1))
    return int(min(budget, max(max_tokens_ceiling, batch + 1)))


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
    step_cap_s: float | None = None,
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
    # steady state at saturation: each step admits b / L_out requests on average, so the mean
    # step carries c_p * P * b / L_out seconds of prefill -- whatever the chunking (prefill work
    # is conserved) -- and the mean step time is affine in b with the effective slope k_eff
    k_eff = k + prefill_load_s_per_seq(plant)
    b_tpot = math.floor((tpot_slo_s - plant.intercept_s) / k_eff + 1e-9)
    cands = {"tpot_slo": b_tpot, "kv_capacity": plant.memory_max_batch, "b_max": plant.b_max}
    binding = min(cands, key=lambda name: cands[name])
    b = max(plant.b_min, min(cands.values()))
    y = plant.intercept_s + k_eff * b
    budget = token_budget(plant, b, max_tokens_ceiling=max_tokens_ceiling, step_cap_s=step_cap_s, confidence=confidence)
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


def ttft_max_rate_per_s(plant: DesignPlant, op: OperatingPoint, ttft_slo_s: float) -> float:
    """Largest arrival rate (requests/s) at which the operating point's predicted TTFT meets the SLO.

    The same queueing prediction as :func:`operating_point`: service rate ``mu = b / (y L_out)``
    requests/s, waiting ``(1/mu) rho / (1 - rho)`` plus the prompt's prefill steps ``n_p y``.  With
    ``W = ttft_slo - n_p y`` the condition ``(1/mu) rho / (1 - rho) <= W`` gives
    ``rho <= mu W / (1 + mu W)``, i.e. ``lambda_max = mu * mu W / (1 + mu W)``; 0 when even an idle
    engine misses the SLO (``W <= 0``) or the output length is unknown.

    Examples
    --------
    >>> from controlkit.plant import DesignPlant
    >>> p = DesignPlant(sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4,
    ...                 b_min=1, b_max=512, kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600,
    ...                 prompt_tokens_mean=200, output_tokens_mean=200)
    >>> op = operating_point(p, tpot_slo_s=0.05)
    >>> round(ttft_max_rate_per_s(p, op, ttft_slo_s=2.0), 2)
    19.5
    """
    l_out = plant.output_tokens_mean
    if l_out <= 0 or op.batch <= 0 or op.step_upper_s <= 0:
        return 0.0
    y = op.step_upper_s
    mu = op.batch / (y * l_out)
    room = max(op.max_batched_tokens - op.batch, 1)
    prefill_steps = math.ceil(plant.prompt_tokens_mean / room) if plant.prompt_tokens_mean else 1
    w = ttft_slo_s - prefill_steps * y
    if w <= 0:
        return 0.0
    return mu * (mu * w) / (1.0 + mu * w)
