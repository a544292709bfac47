"""Any policy behind the controllers' admission layer, so that every baseline can have it.

The designed controllers reach the engine through :class:`~controlkit.admission.AdmissionGuard`
(online KV-memory guard, deadline-aware order, and what to do with late requests).  The
protocol runs every baseline both bare and behind the *same* layer with the *same* numbers
(the guard parameters of the plant's designed controllers), so that the benchmark measures
the feedback law, not the layer.  :class:`GuardedPolicy` wraps any policy: its cap goes
through :meth:`AdmissionGuard.plan`; its own admission order, if any, is replaced by the
layer's.

Examples
--------
>>> from controlkit.contract import BatchLimits, Observation
>>> class Cap:
...     def decide(self, obs): return BatchLimits(8, 512)
...     def reset(self): pass
>>> g = GuardedPolicy(Cap(), {"output_tokens_mean": 100, "late_action": "reject"}, ttft_slo_s=2.0)
>>> lim = g.decide(Observation(0.0, 2, 3, 20, 500, waiting_prompt_tokens=(64, 64, 64),
...                            waiting_age_s=(5.0, 0.5, 0.1), block_size=16))
>>> lim.max_active_seqs, lim.max_batched_tokens, lim.reject
(8, 512, (0,))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlkit.admission import AdmissionGuard
from controlkit.contract import BatchLimits, BatchPolicy, Observation

__all__ = ["GuardedPolicy", "make_guard"]


def make_guard(params: Mapping[str, Any], *, ttft_slo_s: float | None) -> AdmissionGuard:
    """Build the admission layer from a policy file's ``params.guard`` mapping."""
    return AdmissionGuard(
        ttft_slo_s=ttft_slo_s,
        output_tokens_mean=float(params.get("output_tokens_mean", 256.0)),
        kv_headroom=float(params.get("kv_headroom", 0.05)),
        prefill_s_per_token=float(params.get("prefill_s_per_token", 0.0)),
        peak_z=float(params.get("peak_z", 2.0)),
        late_action=str(params.get("late_action", "demote")),
    )


class GuardedPolicy:
    """``inner``'s cap and token budget, lowered and ordered by the shared admission layer."""

    def __init__(self, inner: BatchPolicy, guard: Mapping[str, Any], *, ttft_slo_s: float | None) -> None:
        self.inner = inner
        self.guard = make_guard(guard, ttft_slo_s=ttft_slo_s)

    def decide(self, observation: Observation) -> BatchLimits:
        """Ask the inner policy, then apply the layer to its cap."""
        raw = self.inner.decide(observation)
        if not isinstance(raw, BatchLimits) or not isinstance(raw.max_active_seqs, int):
            return raw  # let the engine's sanitizer handle (and count) the fault
        plan = self.guard.plan(observation, max(1, raw.max_active_seqs))
        return BatchLimits(plan.cap, raw.max_batched_tokens, plan.order, raw.flags | plan.flags, plan.reject)

    def reset(self) -> None:
        """Reset the inner policy and the layer."""
        self.inner.reset()
        self.guard.reset()
