"""The static policy: a fixed admission cap, as vLLM's ``max_num_seqs`` is today.

Registered as kind ``static`` (``static:max_num_seqs=256``).  It is the baseline every other
policy is compared with, and the policy BCA reduces to once its advisor has chosen ``B_opt``.

Examples
--------
>>> from controlkit.contract import Observation
>>> policy = build_static(parse_params(StaticParams, {"max_num_seqs": 64}), PolicyContext())
>>> policy.decide(Observation(t_s=0.0, num_running=3, num_waiting=9, kv_blocks_used=10,
...                           kv_blocks_total=100)).max_active_seqs
64
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from policies.baselines._params import check_params, param, parse_params, resolve_cap
from policies.registry import PolicyContext, register

__all__ = ["StaticParams", "StaticPolicy", "build_static"]


@dataclass(frozen=True, slots=True)
class StaticParams:
    """Hyper-parameters of the static policy (``None``: the engine's configured value)."""

    KIND: ClassVar[str] = "static"
    max_num_seqs: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000, doc="fixed admission cap (default: the engine's max_num_seqs)"
    )
    max_num_batched_tokens: int | None = param(
        None, kind="int?", lo=1, hi=1_000_000_000, doc="fixed per-step token budget (default: unchanged)"
    )

    def __post_init__(self) -> None:
        check_params(self)


class StaticPolicy:
    """Return the same :class:`BatchLimits` at every step.

    Parameters
    ----------
    max_active_seqs
        The admission cap, ``>= 1``.
    max_batched_tokens
        The per-step token budget, or ``None`` to keep the engine's.
    """

    #: The policy never reads the waiting lists, so engine adapters may leave them empty.
    needs_waiting_details: ClassVar[bool] = False

    def __init__(self, max_active_seqs: int, max_batched_tokens: int | None = None) -> None:
        self._limits = BatchLimits(max_active_seqs, max_batched_tokens)

    @property
    def limits(self) -> BatchLimits:
        """The limits this policy always returns."""
        return self._limits

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the fixed limits, whatever the observation."""
        return self._limits

    def reset(self) -> None:
        """Nothing to forget: the policy has no state."""


def build_static(params: StaticParams, ctx: PolicyContext) -> StaticPolicy:
    """Build a :class:`StaticPolicy` from checked params and the engine context."""
    cap = resolve_cap("static", "max_num_seqs", params.max_num_seqs, ctx.max_num_seqs)
    return StaticPolicy(cap, params.max_num_batched_tokens)


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return build_static(parse_params(StaticParams, pf.params), ctx)


register("static", _factory)
