"""Model-predictive control of (``max_active_seqs``, ``max_batched_tokens``) on the identified model.

Each decision enumerates a small set of moves -- cap change ``dc`` in ``{-R, -R/2, 0, R/2, R}``
times token budget in ``budgets`` (15 candidates) -- holds each over a horizon of ``H`` steps
(move blocking), predicts with the fluid model below, and applies the cheapest:

* running ``n+ = min(cap, n (1 - 1/L_out) + admitted)``, admitted limited by the queue and by
  the prefill room ``budget - n`` tokens (``/ L_prompt`` requests);
* queue ``q+ = q + lambda y - admitted``, with ``lambda`` estimated online (EMA of arrivals);
* step time at the upper slope ``y = intercept + k_max n + prefill_s_per_token * prefill``;
* KV: every running request grows by one token per step; blocks at completion
  ``n * blocks_per_seq`` must stay within capacity minus headroom.

Hard constraints (never violated by construction): ``cap`` in ``[b_min, cap_upper]`` with
``cap_upper = min(b_max, memory-safe batch)``, ``|dc| <= R``.  Soft constraints (penalised):
``y <= tpot_slo``, queue wait ``q L_out y / cap <= ttft_slo`` (the queue drains at the
completion rate ``cap / (L_out y)``).  Recursive feasibility:
the hard set is an interval reachable from any cap by moves of at most ``R`` (the move
towards it is always a candidate), so a feasible move exists at every decision.

Examples
--------
>>> m = MPCController(intercept_s=0.02, k_max=1.5e-4, tpot_slo_s=0.05, ttft_slo_s=2.0, b_min=1, cap_upper=180,
...                   rate_limit=8, prompt_tokens_mean=500, output_tokens_mean=200, budgets=(512, 1024, 2048))
>>> m.decide(num_running=10, num_waiting=50, cap=10, arrivals_per_s=5.0)
(18, 2048)
"""

from __future__ import annotations

import numpy as np

__all__ = ["MPCController"]


class MPCController:
    """Enumerative receding-horizon controller over the two knobs (see module docstring)."""

    def __init__(
        self,
        *,
        intercept_s: float,
        k_max: float,
        tpot_slo_s: float,
        ttft_slo_s: float | None,
        b_min: int,
        cap_upper: int,
        rate_limit: int,
        prompt_tokens_mean: float,
        output_tokens_mean: float,
        budgets: tuple[int, ...],
        prefill_s_per_token: float = 0.0,
        horizon: int = 8,
        w_tpot: float = 1e4,
        w_ttft: float = 1e2,
        w_move: float = 1e-4,
    ) -> None:
        self.intercept_s, self.k_max = float(intercept_s), float(k_max)
        self.tpot_slo_s = float(tpot_slo_s)
        self.ttft_slo_s = float(ttft_slo_s) if ttft_slo_s else 0.0
        self.b_min, self.cap_upper, self.rate_limit = int(b_min), int(cap_upper), int(rate_limit)
        self.prompt = max(float(prompt_tokens_mean), 1.0)
        self.l_out = max(float(output_tokens_mean), 1.0)
        self.prefill_s_per_token = float(prefill_s_per_token)
        self.horizon = int(horizon)
        self.w_tpot, self.w_ttft, self.w_move = w_tpot, w_ttft, w_move
        r = self.rate_limit
        moves = np.array(sorted({-r, -(r // 2), 0, r // 2, r}), dtype=float)
        bud = np.array(sorted({max(int(b), 1) for b in budgets}), dtype=float)
        self._dc = np.repeat(moves, len(bud))
        self._bud = np.tile(bud, len(moves))

    def decide(
        self, *, num_running: int, num_waiting: int, cap: int, arrivals_per_s: float
    ) -> tuple[int, int]:
        """Return ``(cap, max_batched_tokens)`` for the next step."""
        lo, hi = self.b_min, self.cap_upper
        r = self.rate_limit
        # the hard set [lo, hi] intersected with what one rate-limited move can reach; from
        # outside it, the reachable part closest to it (recursive feasibility)
        lower = max(cap - r, min(lo, cap + r))
        upper = min(cap + r, max(hi, cap - r))
        caps = np.clip(cap + self._dc, lower, upper)
        n = np.full(caps.shape, float(num_running))
        q = np.full(caps.shape, float(num_waiting))
        cost = self.w_move * self._dc**2
        lam = max(arrivals_per_s, 0.0)
        for _ in range(self.horizon):
            room = np.maximum(self._bud - n, 0.0) / self.prompt
            adm = np.minimum(np.minimum(q, room), np.maximum(caps - n * (1.0 - 1.0 / self.l_out), 0.0))
            prefill = adm * self.prompt
            y = self.intercept_s + self.k_max * (n + adm) + self.prefill_s_per_token * prefill
            n = np.minimum(caps, n * (1.0 - 1.0 / self.l_out) + adm)
            q = np.maximum(q + lam * y - adm, 0.0)
            over = np.maximum(y - self.tpot_slo_s, 0.0) / self.tpot_slo_s
            cost += self.w_tpot * over**2 - n / y / max(hi, 1)
            if self.ttft_slo_s > 0:
                wait = q * self.l_out * y / np.maximum(caps, 1.0)
                cost += self.w_ttft * (np.maximum(wait - self.ttft_slo_s, 0.0) / self.ttft_slo_s) ** 2
        i = int(np.argmin(cost))
        return int(caps[i]), int(max(self._bud[i], caps[i]))
