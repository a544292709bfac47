"""Runtime policies for controlkit's designed controllers: kinds ``pid``, ``optimal``, ``mpc``.

Each is built from a ``controlkit.policy/1`` file written by ``controlkit design``.  They are
deterministic, cheap, and never raise from :meth:`decide`: a fault (bad observation, an
internal error) holds the last limits and reports the flag ``"policy_fault"``.
"""

from __future__ import annotations

import math
from typing import Any

from controlkit.backlog import SloSupervisor
from controlkit.certify.loop import ControllerSpec
from controlkit.contract import BatchLimits, Observation
from controlkit.loopsim import make_pid
from controlkit.mpc import MPCController
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.registry import PolicyContext, register

__all__ = ["MPCPolicy", "OptimalPolicy", "PIDPolicy"]


def _int(d: Any, key: str, where: str) -> int:
    try:
        return int(d[key])
    except (KeyError, TypeError, ValueError):
        raise PolicyError(f"{where}: field {key!r} must be an integer, got {d.get(key)!r}") from None


def _bounds(pf: PolicyFile, ctx: PolicyContext) -> tuple[int, int]:
    b_min = _int(pf.limits, "b_min", f"{pf.kind} policy limits")
    b_max = min(_int(pf.limits, "b_max", f"{pf.kind} policy limits"), max(ctx.max_num_seqs, b_min))
    return b_min, b_max


def _ttft_pressure(obs: Observation) -> float:
    return max([obs.oldest_wait_s, *obs.ttft_s]) if (obs.ttft_s or obs.oldest_wait_s) else 0.0


class PIDPolicy:
    """PID on the filtered step time (or ITL), setpoint moved by the TTFT supervisor."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        p = pf.params
        try:
            self.ctrl = ControllerSpec.from_dict(dict(p["controller"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"pid policy: params.controller is missing or malformed ({exc})") from None
        self.b_min, self.b_max = _bounds(pf, ctx)
        tpot = float(pf.slos.get("tpot_s", 0.0))
        if not tpot > 0:
            raise PolicyError("pid policy: slos.tpot_s must be > 0 seconds")
        ttft = pf.slos.get("ttft_s")
        self.supervisor = SloSupervisor(
            tpot,
            None if ttft is None else float(ttft),
            priority=str(p.get("priority", "tpot")),
            target_fraction=float(p.get("target_fraction", 0.9)),
        )
        self.measurement = str(p.get("measurement", "step"))
        self.tokens = p.get("max_batched_tokens")
        self.start = min(max(int(p.get("reference_batch", self.b_min)), self.b_min), self.b_max)
        self.reset()

    def reset(self) -> None:
        """Back to the reference batch, normal mode."""
        self.supervisor.reset()
        self.pid = make_pid(
            self.ctrl, self.supervisor.setpoint_for("normal"), self.b_min, self.b_max, self.start
        )
        self._last = BatchLimits(self.start, self.tokens)

    def decide(self, observation: Observation) -> BatchLimits:
        """One decision: supervisor -> setpoint, PID on the measurement -> cap."""
        try:
            y = observation.itl_mean_s if self.measurement == "itl" else observation.last_step_s
            if not (math.isfinite(y) and y > 0):
                return BatchLimits(
                    self._last.max_active_seqs, self.tokens, flags=frozenset({"no_measurement"})
                )
            state = self.supervisor.update(_ttft_pressure(observation))
            self.pid.setpoint = state.setpoint_s
            cap = self.pid.step(y, self.ctrl.sample_period_s)
            self._last = BatchLimits(cap, self.tokens, flags=state.flags | {f"mode_{state.mode}"})
            return self._last
        except Exception:  # never raise into the engine
            return BatchLimits(self._last.max_active_seqs, self.tokens, flags=frozenset({"policy_fault"}))


class OptimalPolicy:
    """The static constrained optimum."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        self.cap = min(_int(pf.params, "max_num_seqs", "optimal policy params"), max(ctx.max_num_seqs, 1))
        self.tokens = pf.params.get("max_batched_tokens")

    def reset(self) -> None:
        """Stateless."""

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the optimum, always."""
        return BatchLimits(self.cap, self.tokens)


class MPCPolicy:
    """Receding-horizon policy over cap and token budget, solved every ``every_k`` decisions."""

    def __init__(self, pf: PolicyFile, ctx: PolicyContext) -> None:
        p = pf.params
        self.b_min, b_max = _bounds(pf, ctx)
        try:
            self.mpc = MPCController(
                intercept_s=float(p["intercept_s"]),
                k_max=float(p["k_max"]),
                tpot_slo_s=float(pf.slos["tpot_s"]),
                ttft_slo_s=pf.slos.get("ttft_s"),
                b_min=self.b_min,
                cap_upper=min(int(p["cap_upper"]), b_max),
                rate_limit=_int(pf.limits, "rate_limit", "mpc policy limits"),
                prompt_tokens_mean=float(p["prompt_tokens_mean"]),
                output_tokens_mean=float(p["output_tokens_mean"]),
                budgets=tuple(int(b) for b in p["budgets"]),
                prefill_s_per_token=float(p.get("prefill_s_per_token", 0)),
                horizon=int(p.get("horizon", 8)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PolicyError(f"mpc policy: params are missing or malformed ({exc})") from None
        self.every_k = max(1, int(p.get("every_k", 1)))
        self.start = min(max(int(p.get("reference_batch", self.b_min)), self.b_min), self.mpc.cap_upper)
        self.start_tokens = int(p["budgets"][0])
        self.reset()

    def reset(self) -> None:
        """Back to the reference batch."""
        self._last = BatchLimits(self.start, self.start_tokens)
        self._n = 0
        self._rate = 0.0
        self._prev_t: float | None = None
        self._prev_total = 0

    def decide(self, observation: Observation) -> BatchLimits:
        """Re-solve every ``every_k`` decisions; hold the last solution in between."""
        try:
            total = observation.num_running + observation.num_waiting
            if self._prev_t is not None and observation.t_s > self._prev_t:
                arrived = max(total - self._prev_total + observation.num_finished, 0)
                self._rate += 0.05 * (arrived / (observation.t_s - self._prev_t) - self._rate)
            self._prev_t, self._prev_total = observation.t_s, total
            self._n += 1
            if (self._n - 1) % self.every_k:
                return self._last
            cap, tokens = self.mpc.decide(
                num_running=observation.num_running,
                num_waiting=observation.num_waiting,
                cap=self._last.max_active_seqs,
                arrivals_per_s=self._rate,
            )
            self._last = BatchLimits(cap, tokens)
            return self._last
        except Exception:  # never raise into the engine
            return BatchLimits(
                self._last.max_active_seqs, self._last.max_batched_tokens, flags=frozenset({"policy_fault"})
            )


register("pid", PIDPolicy)
register("optimal", OptimalPolicy)
register("mpc", MPCPolicy)
