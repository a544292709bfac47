"""The runtime contract every batch policy serves (DESIGN.md §4).

An engine adapter (our simulator, the vLLM hook, any other scheduler) builds an
:class:`Observation` once per step, calls :meth:`BatchPolicy.decide`, and applies the
returned :class:`BatchLimits`.  Adapters never trust the policy: :func:`sanitize_limits`
turns any return value (or exception) into limits that are safe to apply, falling back to
the last safe limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "WAITING_LIST_LIMIT", "BatchLimits", "BatchPolicy", "Observation", "SanitizedLimits", "sanitize_limits",
]

#: The longest head of the waiting queue an :class:`Observation` lists (``waiting_prompt_tokens``,
#: ``waiting_age_s``, ``waiting_class``).  One constant for the simulator and every engine
#: adapter, so a policy sees the same observation in simulation and in production.
WAITING_LIST_LIMIT = 256


@dataclass(frozen=True, slots=True)
class Observation:
    """What an engine tells a policy once per step.  Units: seconds, tokens, blocks.

    Parameters
    ----------
    t_s
        Engine time now (seconds; any fixed origin).
    num_running, num_waiting
        Requests in the running batch and in the waiting queue.
    kv_blocks_used, kv_blocks_total
        KV-cache blocks in use, and the capacity.
    num_prefill_tokens, num_decode_tokens
        Tokens the last step scheduled for prefill and for decode.
    num_context_tokens
        Context (KV) tokens held by the running requests; 0 when unknown.
    last_step_s
        Duration of the last completed step; 0.0 before the first.
    num_preempted
        Requests preempted in the last step.
    num_finished
        Requests that finished in the last step.
    ttft_s
        Times to first token of requests that got their first token in the last step.
    itl_mean_s
        Mean inter-token gap of the tokens emitted in the last step; 0.0 when none.
    oldest_wait_s
        Age of the oldest waiting request (0.0 when the queue is empty).
    waiting_prompt_tokens
        Prompt lengths of waiting requests in queue order (may be truncated; empty when the
        engine does not expose them).
    waiting_age_s
        Time each listed waiting request has waited so far (seconds since arrival), in the same
        order as :attr:`waiting_prompt_tokens`; empty when the engine does not expose it.
    max_active_seqs, max_batched_tokens
        The limits in force during the last step.
    block_size
        Tokens per KV block.
    waiting_slo_class
        SLO class of each listed waiting request (same order as
        :attr:`waiting_prompt_tokens`); empty when every request has class 0.
    class_ttft_slo_s
        TTFT target of each SLO class (index = class); empty when the engine has one SLO.
    """

    t_s: float
    num_running: int
    num_waiting: int
    kv_blocks_used: int
    kv_blocks_total: int
    num_prefill_tokens: int = 0
    num_decode_tokens: int = 0
    num_context_tokens: int = 0
    last_step_s: float = 0.0
    num_preempted: int = 0
    num_finished: int = 0
    ttft_s: tuple[float, ...] = ()
    itl_mean_s: float = 0.0
    oldest_wait_s: float = 0.0
    waiting_prompt_tokens: tuple[int, ...] = ()
    waiting_age_s: tuple[float, ...] = ()
    max_active_seqs: int = 0
    max_batched_tokens: int = 0
    block_size: int = 16
    waiting_slo_class: tuple[int, ...] = ()
    class_ttft_slo_s: tuple[float, ...] = ()

    @property
    def kv_usage(self) -> float:
        """Fraction of KV blocks in use (0 when the capacity is unknown)."""
        return self.kv_blocks_used / self.kv_blocks_total if self.kv_blocks_total > 0 else 0.0


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """What a policy returns: the limits to apply from the next step on.

    Parameters
    ----------
    max_active_seqs
        Admission cap: no request is admitted while this many are running.  Lowering it never
        evicts running requests.
    max_batched_tokens
        Per-step token budget (chunked prefill); ``None`` keeps the engine's current value.
    admission_order
        Indices into :attr:`Observation.waiting_prompt_tokens` giving the order in which to
        admit waiting requests; empty means first-come first-served.
    flags
        Status flags for telemetry, e.g. ``{"infeasible"}`` when the policy judges that the
        SLOs cannot all be met at the current load.
    reject
        Load shedding: indices into :attr:`Observation.waiting_prompt_tokens` of waiting
        requests to reject *now* (the engine answers them with an error, as HTTP 429/503,
        and frees them); empty (the default) rejects nothing, so requests wait -- bounded by
        their clients' timeouts.  Applied once, at the step the limits are returned.
    """

    max_active_seqs: int
    max_batched_tokens: int | None = None
    admission_order: tuple[int, ...] = ()
    flags: frozenset[str] = field(default_factory=frozenset)
    reject: tuple[int, ...] = ()


@runtime_checkable
class BatchPolicy(Protocol):
    """A runtime batch-size policy: deterministic given its inputs, cheap (microseconds)."""

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the limits to apply, given this step's observation."""
        ...

    def reset(self) -> None:
        """Forget all state, as if newly constructed."""
        ...


@dataclass(frozen=True, slots=True)
class SanitizedLimits:
    """The outcome of :func:`sanitize_limits`: the limits to apply and, if any, the fault."""

    limits: BatchLimits
    fault: str = ""


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    try:
        import numpy as np

        if isinstance(value, np.integer):
            return int(value)
        if isinstance(value, np.floating) and math.isfinite(float(value)) and float(value) == int(value):
            return int(value)
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    return None


def sanitize_limits(
    raw: object,
    *,
    last_safe: BatchLimits,
    max_seqs_ceiling: int,
    min_batched_tokens: int = 1,
    max_batched_tokens_ceiling: int | None = None,
    num_waiting: int | None = None,
) -> SanitizedLimits:
    """Validate a policy's return value and clamp it into the engine's range.

    Anything that is not a :class:`BatchLimits` with finite integer fields is a *fault*: the
    result is ``last_safe`` and ``fault`` says what was wrong.  Values that are merely out of
    range (a cap above the ceiling, a budget below the minimum) are clamped and are not
    faults, except values that are absurd (negative, or over 1000x the ceiling), which are.

    Parameters
    ----------
    raw
        What the policy returned.
    last_safe
        The limits to fall back to on a fault.
    max_seqs_ceiling
        The engine's ceiling for the admission cap (the value it started with).
    min_batched_tokens, max_batched_tokens_ceiling
        The engine's valid range for the token budget.
    num_waiting
        Length of the waiting queue, to validate ``admission_order`` indices (None: unchecked).

    Examples
    --------
    >>> safe = BatchLimits(8)
    >>> sanitize_limits(BatchLimits(500), last_safe=safe, max_seqs_ceiling=256).limits.max_active_seqs
    256
    >>> sanitize_limits(float("nan"), last_safe=safe, max_seqs_ceiling=256).fault
    'policy returned float, expected BatchLimits'
    """
    if not isinstance(raw, BatchLimits):
        return SanitizedLimits(last_safe, f"policy returned {type(raw).__name__}, expected BatchLimits")
    cap = _as_int(raw.max_active_seqs)
    if cap is None:
        return SanitizedLimits(last_safe, f"max_active_seqs={raw.max_active_seqs!r} is not a finite integer")
    if cap < 0 or cap > 1000 * max(1, max_seqs_ceiling):
        return SanitizedLimits(
            last_safe, f"max_active_seqs={cap} is outside the sane range [0, {1000 * max(1, max_seqs_ceiling)}]"
        )
    cap = max(1, min(cap, max_seqs_ceiling))
    tokens: int | None = None
    if raw.max_batched_tokens is not None:
        tokens = _as_int(raw.max_batched_tokens)
        if tokens is None:
            return SanitizedLimits(
                last_safe, f"max_batched_tokens={raw.max_batched_tokens!r} is not a finite integer"
            )
        upper = max_batched_tokens_ceiling if max_batched_tokens_ceiling is not None else tokens
        if tokens < 0 or tokens > 1000 * max(1, upper):
            return SanitizedLimits(last_safe, f"max_batched_tokens={tokens} is outside the sane range")
        tokens = max(min_batched_tokens, tokens)
        if max_batched_tokens_ceiling is not None:
            tokens = min(tokens, max_batched_tokens_ceiling)
    order = _indices(raw.admission_order, num_waiting)
    if order is None:
        return SanitizedLimits(last_safe, "admission_order holds an index outside the waiting queue")
    reject = _indices(raw.reject, num_waiting)
    if reject is None:
        return SanitizedLimits(last_safe, "reject holds an index outside the waiting queue")
    return SanitizedLimits(BatchLimits(cap, tokens, order, frozenset(raw.flags), tuple(dict.fromkeys(reject))))


def _indices(values: tuple[int, ...], num_waiting: int | None) -> tuple[int, ...] | None:
    """Integer indices into the waiting list, or ``None`` when one is not a valid index."""
    if not values:
        return ()
    out: list[int] = []
    for v in values:
        i = _as_int(v)
        if i is None or i < 0 or (num_waiting is not None and i >= num_waiting):
            return None
        out.append(i)
    return tuple(out)
