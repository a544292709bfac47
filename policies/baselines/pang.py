"""Pang, Li and Wang (2025), arXiv 2503.05248: memory-aware and SLA-constrained dynamic batching.

Three kinds are registered:

``pang-a1``
    Algorithm 1, the memory-aware rule, exactly as the official README's vLLM patch
    (SEEDS.md §1.3): when both queues are non-empty, ``b = floor(total_blocks * memory_factor /
    (used_blocks / running))``, floored at the running count, then clamped into
    ``[batch_size_lower, batch_size_upper]`` (the upper bound wins).  Otherwise hold.
``pang-a2``
    Algorithm 2, SLA feedback by interval halving (SEEDS.md §1.4, reconstructed from Daft,
    SGLang PRs and TravisLeeTS; their implementation slips are avoided).
``pang-a1a2``
    Both, composed as ``min(b_mem, b_SLA)`` and floored at the running count (SEEDS.md §5.2).

Signals the contract does not carry, and their substitutes:

* ``τ̄`` (recent decode latency) is the mean over the last ``window`` steps of
  ``Observation.itl_mean_s`` (``signal="itl"``, the default; steps with no emitted token are
  skipped) or of ``Observation.last_step_s`` (``signal="step"``).
* ``b̄`` is the mean of ``Observation.num_running`` over the same steps, and ``N^d_{t-1}`` is
  ``Observation.num_running``.

Examples
--------
>>> from controlkit.contract import Observation
>>> a1 = MemoryAwarePolicy(MemoryAwareParams(memory_factor=0.9), PolicyContext(max_num_seqs=256))
>>> a1.decide(Observation(0.0, num_running=10, num_waiting=5, kv_blocks_used=200,
...                       kv_blocks_total=1000)).max_active_seqs
45
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.baselines._params import check_params, clamp, param, parse_params, resolve_cap
from policies.registry import PolicyContext, register

__all__ = [
    "CombinedParams",
    "CombinedPolicy",
    "MemoryAwareParams",
    "MemoryAwarePolicy",
    "SlaFeedbackParams",
    "SlaFeedbackPolicy",
]


@dataclass(frozen=True, slots=True)
class MemoryAwareParams:
    """Hyper-parameters of Pang Algorithm 1 (names as in the official README)."""

    KIND: ClassVar[str] = "pang-a1"
    memory_factor: float = param(0.95, kind="float", lo=0.01, hi=1.0, doc="share of KV blocks to fill")
    batch_size_lower: int = param(1, kind="int", lo=1, hi=1_000_000, doc="lower clamp of the cap")
    batch_size_upper: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="upper clamp of the cap (default: engine max_num_seqs)"
    )
    initial_max_num_seqs: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="cap before the first update (default: batch_size_upper)"
    )

    def __post_init__(self) -> None:
        check_params(self)
        if self.batch_size_upper is not None and self.batch_size_lower > self.batch_size_upper:
            raise PolicyError(
                f"pang-a1: batch_size_lower={self.batch_size_lower} must be <= "
                f"batch_size_upper={self.batch_size_upper}"
            )


class MemoryAwarePolicy:
    """Pang et al. Algorithm 1: fill ``memory_factor`` of the KV blocks at the current blocks/seq.

    Deviation from the README: when ``kv_blocks_used == 0`` while requests run (impossible in
    vLLM, where the README would divide by zero) the cap is held.  ``max_batched_tokens`` is
    never changed, as in the paper.

    Parameters
    ----------
    params
        Checked hyper-parameters.
    ctx
        Engine context; gives the default upper clamp and the KV capacity if the observation
        lacks it.
    """

    def __init__(self, params: MemoryAwareParams, ctx: PolicyContext) -> None:
        self.params = params
        self._ctx = ctx
        self.upper = resolve_cap("pang-a1", "batch_size_upper", params.batch_size_upper, ctx.max_num_seqs)
        if params.batch_size_lower > self.upper:
            raise PolicyError(
                f"pang-a1: batch_size_lower={params.batch_size_lower} is above the upper clamp {self.upper}"
            )
        self.lower = params.batch_size_lower
        init = params.initial_max_num_seqs if params.initial_max_num_seqs is not None else self.upper
        self._initial = clamp(init, 1, ctx.max_num_seqs)
        self._prev = self._initial

    def memory_cap(self, observation: Observation) -> int:
        """Update and return ``b_mem`` (the README's ``prev_max_num_seqs``)."""
        o = observation
        total = o.kv_blocks_total if o.kv_blocks_total > 0 else self._ctx.kv_blocks_total
        if o.num_waiting > 0 and o.num_running > 0 and o.kv_blocks_used > 0 and total > 0:
            blocks_per_seq = o.kv_blocks_used / o.num_running
            new = math.floor(total * self.params.memory_factor / blocks_per_seq)
            new = max(new, o.num_running)
            self._prev = min(max(new, self.lower), self.upper)
        return self._prev

    def decide(self, observation: Observation) -> BatchLimits:
        """Return ``max_active_seqs = b_mem`` (token budget unchanged)."""
        return BatchLimits(clamp(self.memory_cap(observation), 1, self._ctx.max_num_seqs))

    def reset(self) -> None:
        """Return to the initial cap."""
        self._prev = self._initial


@dataclass(frozen=True, slots=True)
class SlaFeedbackParams:
    """Hyper-parameters of Pang Algorithm 2 (defaults from the SGLang port, SEEDS.md §1.4)."""

    KIND: ClassVar[str] = "pang-a2"
    sla_s: float = param(0.05, kind="float", lo=1e-6, hi=1e3, doc="D_SLA, target decode latency (s)")
    eps_s: float = param(0.01, kind="float", lo=0.0, hi=1e3, doc="ε_D, dead band around D_SLA (s)")
    alpha: int = param(20, kind="int", lo=1, hi=1_000_000, doc="α, minimum search-interval width")
    delta: int = param(5, kind="int", lo=0, hi=1_000_000, doc="δ, corrective step of the free edge")
    b_min: int = param(1, kind="int", lo=1, hi=1_000_000, doc="B_min, hard lower bound")
    b_max: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="B_max, hard upper bound (default: engine max_num_seqs)"
    )
    initial_low: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="initial b_low (default B_min)"
    )
    initial_high: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="initial b_high (default B_max)"
    )
    window: int = param(16, kind="int", lo=1, hi=100_000, doc="steps averaged into τ̄ and b̄")
    signal: str = param("itl", kind="str", choices=("itl", "step"), doc="τ source: itl_mean_s or last_step_s")

    def __post_init__(self) -> None:
        check_params(self)


class SlaFeedbackPolicy:
    """Pang et al. Algorithm 2: keep the decode latency in ``[D_SLA − ε_D, D_SLA + ε_D]``.

    Per step with a new latency sample (means over the last ``window`` samples: ``τ̄``, ``b̄``):

    * ``τ̄ > D_SLA + ε_D``: ``high = max(b̄, low' + α)``, ``low = max(low' − δ, B_min)``;
    * ``τ̄ < D_SLA − ε_D``: ``low = min(b̄, high' − α)``, ``high = min(high' + δ, B_max)``;
    * otherwise: ``high = min(b̄ + ⌊α/2⌋, B_max)``, ``low = max(b̄ − ⌊α/2⌋, B_min)``;

    (primes are the previous values), then ``b = ⌊(low + high)/2⌋``,
    ``b = min(max(b, N^d), B_max)``.

    Choices where the sources are silent (SEEDS.md §1.7): the interval is kept in real numbers
    (``b̄`` is a mean); before the first sample the cap is the midpoint of the initial
    interval; a step without a new sample holds the interval; the final clamp also applies
    ``B_min`` (the hard bounds of the paper).
    """

    def __init__(self, params: SlaFeedbackParams, ctx: PolicyContext, *, kind: str = "pang-a2") -> None:
        self.params = params
        self._ctx = ctx
        self.b_max = resolve_cap(kind, "b_max", params.b_max, ctx.max_num_seqs)
        self.b_min = params.b_min
        if self.b_min > self.b_max:
            raise PolicyError(f"{kind}: b_min={self.b_min} is above b_max={self.b_max}")
        lo = params.initial_low if params.initial_low is not None else self.b_min
        hi = params.initial_high if params.initial_high is not None else self.b_max
        if not (self.b_min <= lo <= hi <= self.b_max):
            raise PolicyError(
                f"{kind}: initial interval [{lo}, {hi}] must satisfy b_min={self.b_min} <= initial_low "
                f"<= initial_high <= b_max={self.b_max}"
            )
        self._init_interval = (float(lo), float(hi))
        self.reset()

    def reset(self) -> None:
        """Forget the latency history and return to the initial interval."""
        self.low, self.high = self._init_interval
        self._tau: deque[float] = deque(maxlen=self.params.window)
        self._b: deque[int] = deque(maxlen=self.params.window)

    def _sample(self, o: Observation) -> float:
        return o.itl_mean_s if self.params.signal == "itl" else o.last_step_s

    def sla_cap(self, observation: Observation) -> int:
        """Update the search interval with this observation and return ``b_SLA`` (before the floor)."""
        p = self.params
        tau = self._sample(observation)
        if tau > 0.0 and math.isfinite(tau):
            self._tau.append(tau)
            self._b.append(observation.num_running)
            tau_bar = sum(self._tau) / len(self._tau)
            b_bar = sum(self._b) / len(self._b)
            low, high = self.low, self.high
            if tau_bar > p.sla_s + p.eps_s:
                self.high = max(b_bar, low + p.alpha)
                self.low = max(low - p.delta, self.b_min)
            elif tau_bar < p.sla_s - p.eps_s:
                self.low = min(b_bar, high - p.alpha)
                self.high = min(high + p.delta, self.b_max)
            else:
                half = p.alpha // 2
                self.high = min(b_bar + half, self.b_max)
                self.low = max(b_bar - half, self.b_min)
        return math.floor((self.low + self.high) / 2)

    def decide(self, observation: Observation) -> BatchLimits:
        """Return ``max_active_seqs = min(max(b_t, N^d), B_max)``, at least ``B_min``."""
        b = self.sla_cap(observation)
        b = min(max(b, observation.num_running), self.b_max)
        return BatchLimits(clamp(max(b, self.b_min), 1, self._ctx.max_num_seqs))


@dataclass(frozen=True, slots=True)
class CombinedParams(SlaFeedbackParams):
    """Hyper-parameters of ``pang-a1a2``: those of Algorithm 2 plus ``memory_factor``.

    Algorithm 1's clamps are Algorithm 2's hard bounds (``b_min``, ``b_max``).
    """

    KIND: ClassVar[str] = "pang-a1a2"
    memory_factor: float = param(0.95, kind="float", lo=0.01, hi=1.0, doc="share of KV blocks to fill")


class CombinedPolicy:
    """Pang Algorithms 1 and 2 together: ``b = max(min(b_mem, b_SLA), N^d)``, within the bounds.

    The paper presents the two as separate variants; the composition is TravisLeeTS's and the
    one SEEDS.md §5.2 recommends.  Both inner policies update their state at every step.
    """

    def __init__(self, params: CombinedParams, ctx: PolicyContext) -> None:
        self.params = params
        self._ctx = ctx
        self.sla = SlaFeedbackPolicy(params, ctx, kind="pang-a1a2")
        self.memory = MemoryAwarePolicy(
            MemoryAwareParams(
                memory_factor=params.memory_factor,
                batch_size_lower=params.b_min,
                batch_size_upper=self.sla.b_max,
            ),
            ctx,
        )

    def decide(self, observation: Observation) -> BatchLimits:
        """Return ``min(max(min(b_mem, b_SLA), N^d), B_max)``, at least ``B_min``."""
        b_mem = self.memory.memory_cap(observation)
        b_sla = self.sla.sla_cap(observation)
        b = min(max(min(b_mem, b_sla), observation.num_running), self.sla.b_max)
        return BatchLimits(clamp(max(b, self.sla.b_min), 1, self._ctx.max_num_seqs))

    def reset(self) -> None:
        """Reset both algorithms."""
        self.memory.reset()
        self.sla.reset()


def _a1(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return MemoryAwarePolicy(parse_params(MemoryAwareParams, pf.params), ctx)


def _a2(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return SlaFeedbackPolicy(parse_params(SlaFeedbackParams, pf.params), ctx)


def _a1a2(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return CombinedPolicy(parse_params(CombinedParams, pf.params), ctx)


register("pang-a1", _a1)
register("pang-a2", _a2)
register("pang-a1a2", _a1a2)
