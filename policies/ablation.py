"""Ablation: a static cap behind the controllers' admission layer (``static-guard``).

The designed controllers (``pid``, ``optimal``, ``mpc``) share a runtime admission layer,
:class:`controlkit.admission.AdmissionGuard`: the online KV-memory guard and the
deadline-aware admission order.  ``static-guard`` puts a *fixed* cap behind the same layer, so
the benchmark can tell how much of the controllers' gain comes from that layer and how much
from the feedback law that moves the cap.

Examples
--------
>>> from controlkit.contract import Observation
>>> from policies.registry import build_policy
>>> p = build_policy("static-guard:max_num_seqs=64,ttft_s=2.0")
>>> p.decide(Observation(0.0, 4, 0, 10, 1000)).max_active_seqs
64
"""

from __future__ import annotations

import math

from controlkit.admission import LATE_ACTIONS, AdmissionGuard
from controlkit.contract import BatchLimits, Observation
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.registry import PolicyContext, register

__all__ = ["StaticGuardPolicy", "build_static_guard"]

_PARAMS = ("max_num_seqs", "max_num_batched_tokens", "ttft_s", "output_tokens_mean", "kv_headroom",
           "prefill_s_per_token", "late_action")


class StaticGuardPolicy:
    """A fixed admission cap, lowered by the memory guard, with the deadline-aware order.

    Parameters
    ----------
    max_num_seqs
        The fixed cap.
    max_num_batched_tokens
        Fixed token budget, or ``None`` to keep the engine's.
    guard
        The admission layer (memory guard and deadline order).
    """

    def __init__(self, max_num_seqs: int, max_num_batched_tokens: int | None, guard: AdmissionGuard) -> None:
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.guard = guard

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the fixed cap after the memory guard, and the deadline-aware order."""
        plan = self.guard.plan(observation, self.max_num_seqs)
        return BatchLimits(plan.cap, self.max_num_batched_tokens, plan.order, plan.flags, plan.reject)

    def reset(self) -> None:
        """Forget the guard's completion-rate estimate and flag latch."""
        self.guard.reset()


def _positive(name: str, value: object, *, integer: bool) -> float:
    if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
        raise PolicyError(f"static-guard: parameter {name}={value!r} must be a positive number")
    if integer and float(value) != int(value):
        raise PolicyError(f"static-guard: parameter {name}={value!r} must be a positive integer")
    return float(value)


def build_static_guard(pf: PolicyFile, ctx: PolicyContext) -> StaticGuardPolicy:
    """Build ``static-guard`` from its parameters (see the module docstring)."""
    unknown = sorted(set(pf.params) - set(_PARAMS))
    if unknown:
        raise PolicyError(f"static-guard: unknown parameter(s) {unknown}; valid: {', '.join(_PARAMS)}")
    p = pf.params
    cap = int(_positive("max_num_seqs", p.get("max_num_seqs", ctx.max_num_seqs), integer=True))
    if cap > ctx.max_num_seqs:
        raise PolicyError(f"static-guard: max_num_seqs={cap} exceeds the engine ceiling {ctx.max_num_seqs}")
    tokens = p.get("max_num_batched_tokens")
    budget = None if tokens is None else int(_positive("max_num_batched_tokens", tokens, integer=True))
    ttft = p.get("ttft_s", pf.slos.get("ttft_s"))
    headroom = p.get("kv_headroom", 0.05)
    if not (isinstance(headroom, (int, float)) and 0.0 <= headroom < 1.0):
        raise PolicyError(f"static-guard: kv_headroom={headroom!r} must be in [0, 1)")
    guard = AdmissionGuard(
        ttft_slo_s=None if ttft is None else _positive("ttft_s", ttft, integer=False),
        output_tokens_mean=_positive("output_tokens_mean", p.get("output_tokens_mean", 256.0), integer=False),
        kv_headroom=float(headroom),
        prefill_s_per_token=float(p.get("prefill_s_per_token", 0.0)),
        peak_z=2.0,
        late_action=_late_action(p.get("late_action", "demote")),
    )
    return StaticGuardPolicy(cap, budget, guard)


def _late_action(value: object) -> str:
    if value not in LATE_ACTIONS:
        raise PolicyError(f"static-guard: late_action={value!r} must be one of {', '.join(LATE_ACTIONS)}")
    return str(value)


register("static-guard", build_static_guard)
