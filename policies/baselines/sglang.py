"""SGLang's ``new_token_ratio`` admission: reserve a decaying share of each request's future tokens.

Source: sgl-project/sglang, ``managers/scheduler.py`` (``update_running_batch``),
``managers/schedule_policy.py`` (``PrefillAdder``), ``managers/schedule_batch.py``
(``retract_decode``) and the ``NewTokenRatioTracker`` (read 2025 versions).  Defaults:
``init = min(0.7 · schedule_conservativeness, 1)``, ``min = init · 0.14``,
``decay = (init − min) / 600`` per decode step, ``retract_decode_steps = 20``.

Rule, per step:

* a decode step without retraction decays the ratio: ``r ← max(r − decay, min)``;
* a retraction (preemption) re-estimates it from the surviving batch:
  ``r ← min(1, (Σ decoded + retract_decode_steps · n) / (Σ max_new_tokens + 1))``;
* an idle engine (nothing running or waiting) resets ``r ← init``;
* admission (``PrefillAdder``): the free KV tokens minus the running requests' reservation
  ``Σ min(max_new − decoded, clip) · r`` is the budget; waiting requests in queue order are
  admitted while ``prompt + min(max_new, clip) · r`` fits, stopping at the first that does not.

The contract's output is a cap, so the policy returns ``num_running + admitted``, clamped to
``[1, max_num_seqs]``.

Substitutes for signals the contract lacks:

* per-request ``max_new_tokens`` is the parameter ``max_new_tokens`` (one value for all);
* tokens decoded so far per running request is estimated as
  ``max(0, context_tokens / running − mean waiting prompt)`` (context tokens from
  ``num_context_tokens``, else ``kv_blocks_used · block_size``);
* waiting requests beyond the listed ``waiting_prompt_tokens`` (or new arrivals) are assumed to
  have the mean listed prompt length (``fallback_prompt_tokens`` when none is listed).

Examples
--------
>>> from controlkit.contract import Observation
>>> policy = NewTokenRatioPolicy(NewTokenRatioParams(max_new_tokens=100), PolicyContext())
>>> policy.ratio
0.7
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from policies.baselines._params import check_params, clamp, param, parse_params
from policies.registry import PolicyContext, register

__all__ = ["NewTokenRatioParams", "NewTokenRatioPolicy"]


@dataclass(frozen=True, slots=True)
class NewTokenRatioParams:
    """Hyper-parameters of the SGLang-style admission (defaults are SGLang's)."""

    KIND: ClassVar[str] = "sglang-ratio"
    init_new_token_ratio: float = param(
        0.7, kind="float", lo=0.0, hi=1.0, doc="initial ratio (before conservativeness)"
    )
    min_new_token_ratio_factor: float = param(
        0.14, kind="float", lo=0.0, hi=1.0, doc="min ratio = init · factor"
    )
    decay_steps: int = param(
        600, kind="int", lo=1, hi=10_000_000, doc="decode steps to decay from init to min"
    )
    retract_decode_steps: int = param(
        20, kind="int", lo=0, hi=100_000, doc="tokens reserved per request after retract"
    )
    schedule_conservativeness: float = param(
        1.0, kind="float", lo=0.0, hi=100.0, doc="multiplies the initial ratio"
    )
    max_new_tokens: int = param(
        1024, kind="int", lo=1, hi=10_000_000, doc="assumed max_new_tokens of every request"
    )
    clip_max_new_tokens: int = param(
        4096, kind="int", lo=1, hi=10_000_000, doc="clip of the estimate (SGLang env)"
    )
    fallback_prompt_tokens: int = param(
        512, kind="int", lo=1, hi=10_000_000, doc="prompt length when unknown"
    )

    def __post_init__(self) -> None:
        check_params(self)


class NewTokenRatioPolicy:
    """SGLang's new-token-ratio admission control as an admission cap (see module docstring)."""

    def __init__(self, params: NewTokenRatioParams, ctx: PolicyContext) -> None:
        self.params = params
        self._ctx = ctx
        self.init_ratio = min(params.init_new_token_ratio * params.schedule_conservativeness, 1.0)
        self.min_ratio = min(self.init_ratio * params.min_new_token_ratio_factor, 1.0)
        self.decay = (self.init_ratio - self.min_ratio) / params.decay_steps
        self.reset()

    def reset(self) -> None:
        """Return the ratio to its initial value."""
        self.ratio = self.init_ratio

    def _update_ratio(self, o: Observation, decoded_per_req: float) -> None:
        p = self.params
        if o.num_running == 0 and o.num_waiting == 0:
            self.ratio = self.init_ratio
        elif o.num_preempted > 0:
            n = o.num_running
            decoded = decoded_per_req * n
            self.ratio = min(1.0, (decoded + p.retract_decode_steps * n) / (p.max_new_tokens * n + 1))
        elif o.num_decode_tokens > 0:
            self.ratio = max(self.ratio - self.decay, self.min_ratio)

    def decide(self, observation: Observation) -> BatchLimits:
        """Update the ratio and return ``num_running + admissible waiting requests``."""
        o, p = observation, self.params
        block = o.block_size if o.block_size > 0 else self._ctx.block_size
        listed = o.waiting_prompt_tokens
        mean_prompt = sum(listed) / len(listed) if listed else float(p.fallback_prompt_tokens)
        context = o.num_context_tokens if o.num_context_tokens > 0 else o.kv_blocks_used * block
        decoded = max(0.0, context / o.num_running - mean_prompt) if o.num_running > 0 else 0.0
        self._update_ratio(o, decoded)
        total = o.kv_blocks_total if o.kv_blocks_total > 0 else self._ctx.kv_blocks_total
        free_tokens = max(total - o.kv_blocks_used, 0) * block
        remaining = min(max(p.max_new_tokens - decoded, 0.0), p.clip_max_new_tokens)
        budget = free_tokens - o.num_running * remaining * self.ratio
        reserve_new = min(p.max_new_tokens, p.clip_max_new_tokens) * self.ratio
        ceiling = self._ctx.max_num_seqs
        admitted = 0
        blocked = False
        for prompt in listed:
            need = prompt + reserve_new
            if need > budget or o.num_running + admitted >= ceiling:
                blocked = True
                break
            budget -= need
            admitted += 1
        if not blocked and budget > 0:
            # Unlisted waiting requests and arrivals before the next decision.
            admitted += math.floor(budget / max(mean_prompt + reserve_new, 1.0))
        return BatchLimits(clamp(o.num_running + admitted, 1, ceiling))


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return NewTokenRatioPolicy(parse_params(NewTokenRatioParams, pf.params), ctx)


register("sglang-ratio", _factory)
