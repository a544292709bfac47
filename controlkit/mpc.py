"""Model-predictive control of (``max_active_seqs``, ``max_batched_tokens``) on the identified model.

Each decision enumerates a small set of moves -- cap change ``dc`` in ``{-R, -R/2, 0, R/2, R}``
times token budget in ``budgets`` (15 candidates) -- holds each over a horizon of ``H`` steps
(move blocking), predicts with the fluid model below, and applies the cheapest:

* running ``n+ = min(cap, n (1 - 1/L_out) + admitted)``, admitted limited by the queue and by
  the prefill room ``budget - n`` tokens (``/ L_prompt`` requests);
* queue ``q+ = q + lambda y - admitted``, with ``lambda`` estimated online (EMA of arrivals);
* step time at the upper slope ``y = intercept + d + k_max n + prefill_s_per_token * prefill``,
  with ``d`` the online disturbance estimate (offset-free MPC);
* KV: every running request grows by one token per step; blocks at completion
  ``n * blocks_per_seq`` must stay within capacity minus headroom.

Hard constraints (never violated by construction): ``cap`` in ``[b_min, cap_upper]`` with
``cap_upper = min(b_max, memory-safe batch)``, ``|dc| <= R``.  Soft constraints (penalised):

* TPOT: the *mean* step a request will see stays ``<= tpot_target``.  TPOT is a per-request
  mean over about ``L_out`` steps, so one prefill-heavy step is not a violation: the constraint
  is on the steady state the cap allows, ``intercept + d + k_eff max(n_H, cap)`` with
  ``k_eff = k_max + c_p P / L_out``, plus the horizon's admissions beyond the steady rate
  amortised over ``L_out`` steps;
* TTFT: the queue wait ``q L_out y_ss / cap <= ttft_slo`` (the queue drains at the completion
  rate ``cap / (L_out y_ss)``, ``y_ss`` the steady step of the batch).

The throughput reward is ``n / y_ss`` per step.  Recursive feasibility: the hard set is an
interval reachable from any cap by moves of at most ``R`` (the move towards it is always a
candidate), so a feasible move exists at every decision.

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
        tpot_target_s: float | None = None,
    ) -> None:
        self.intercept_s, self.k_max = float(intercept_s), float(k_max)
        self.tpot_slo_s = float(tpot_slo_s)
        self.tpot_target_s = float(tpot_target_s) if tpot_target_s else self.tpot_slo_s
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
        self,
        *,
        num_running: int,
        num_waiting: int,
        cap: int,
        arrivals_per_s: float,
        step_bias_s: float = 0.0,
        slope_excess_s_per_seq: float = 0.0,
    ) -> tuple[int, int]:
        """Return ``(cap, max_batched_tokens)`` for the next step.

        ``step_bias_s`` is the estimated output disturbance (measured minus modelled step time,
        e.g. attention over a longer context than identified): added to every predicted step,
        it makes the loop offset-free.  ``slope_excess_s_per_seq`` is the measured mean step slope
        in excess of ``k_eff`` (a heavier prefill load or longer contexts than identified); it
        is added to ``k_eff`` in the steady-state (mean step) predictions.
        """
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
        bias = float(step_bias_s) if np.isfinite(step_bias_s) else 0.0
        admitted = np.zeros(caps.shape)
        k_eff = self.k_max + self.prefill_s_per_token * self.prompt / self.l_out
        if np.isfinite(slope_excess_s_per_seq):
            k_eff += max(float(slope_excess_s_per_seq), 0.0)
        for _ in range(self.horizon):
            room = np.maximum(self._bud - n, 0.0) / self.prompt
            adm = np.minimum(np.minimum(q, room), np.maximum(caps - n * (1.0 - 1.0 / self.l_out), 0.0))
            prefill = adm * self.prompt
            y = self.intercept_s + bias + self.k_max * (n + adm) + self.prefill_s_per_token * prefill
            n = np.minimum(caps, n * (1.0 - 1.0 / self.l_out) + adm)
            q = np.maximum(q + lam * y - adm, 0.0)
            admitted += adm
            # throughput and queue drain at the mean step of this batch (prefill amortised)
            y_ss = self.intercept_s + bias + k_eff * np.maximum(n, 1.0)
            cost -= n / y_ss / max(hi, 1)
            if self.ttft_slo_s > 0:
                wait = q * self.l_out * y_ss / np.maximum(caps, 1.0)
                cost += self.w_ttft * (np.maximum(wait - self.ttft_slo_s, 0.0) / self.ttft_slo_s) ** 2
        # TPOT is a per-request *mean* over ~L_out steps: the constraint is on the mean step the
        # move leads to -- the steady state at the final batch (its admissions' prefill spread
        # over the request life) plus the horizon's excess admissions amortised over L_out steps
        # the cap is a promise: the batch reaches it whenever the queue refills, so the steady
        # state is evaluated at the cap (robust), not only at the predicted batch
        steady = self.intercept_s + bias + k_eff * np.maximum(n, caps)
        excess = np.maximum(admitted - self.horizon * n / self.l_out, 0.0)
        y_mean = steady + self.prefill_s_per_token * self.prompt * excess / self.l_out
        over = np.maximum(y_mean - self.tpot_target_s, 0.0) / self.tpot_slo_s
        cost += self.horizon * self.w_tpot * over**2
        i = int(np.argmin(cost))
        return int(caps[i]), int(max(self._bud[i], caps[i]))
