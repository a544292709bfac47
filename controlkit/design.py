"""Design functions: plant + SLOs -> certified controller designs and their policy files.

``design_pid`` (feedback on the step time), ``design_optimal`` (the static constrained
optimum) and ``design_mpc`` (receding horizon over both knobs).  Each returns a
:class:`Design` whose :meth:`Design.to_policy_file` writes a ``controlkit.policy/2`` document
with the certificate; :meth:`Design.require_certified` raises :class:`UncertifiedError`
naming the failing claim and by how much.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from controlkit.certify import Certificate, Claim, ControllerSpec, MarginSpec, certify_pid, certify_static
from controlkit.certify.constraints import mpc_claims, step_cap_claim
from controlkit.filters import FilterSpec
from controlkit.optimal import (
    OperatingPoint,
    operating_point,
    prefill_load_s_per_seq,
    token_budget,
    ttft_max_rate_per_s,
)
from controlkit.plant import DesignPlant
from controlkit.policyfile import PolicyFile
from controlkit.tuning import robust_tune, simc_tune
from identification.errors import InfeasibleSpecError, UncertifiedError

__all__ = [
    "Design",
    "design_mpc",
    "design_optimal",
    "design_pid",
    "guard_params",
    "mpc_claims",
    "step_cap_claim",
    "without_unknown_claims",
]


@dataclass(frozen=True)
class Design:
    """A designed controller: its policy-file content, operating point and certificate."""

    kind: str
    plant: DesignPlant
    params: dict[str, Any]
    limits: dict[str, Any]
    slos: dict[str, float]
    operating_point: OperatingPoint
    certificate: Certificate
    controller: ControllerSpec | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def require_certified(self) -> None:
        """Raise :class:`UncertifiedError` if any claim fails (which claim, by how much)."""
        if not self.certificate.holds:
            raise UncertifiedError(
                f"{self.kind} design is not certified: {self.certificate.failure_message()}; "
                "use --allow-uncertified to write it anyway"
            )

    @property
    def tpot_target_s(self) -> float:
        """The TPOT target the runtime holds: ``target_fraction`` x the TPOT SLO (the PID's setpoint)."""
        return float(self.params.get("target_fraction", 0.9)) * float(self.slos["tpot_s"])

    @property
    def claims_not_made(self) -> dict[str, str]:
        """Claims the design cannot make for want of data (name -> why), from the certificate."""
        return dict(self.certificate.assumptions.get("claims_not_made", {}))

    def to_policy_file(self, *, allow_uncertified: bool = False) -> PolicyFile:
        """Return the ``controlkit.policy/2`` document (refuses an uncertified design unless allowed)."""
        if not allow_uncertified:
            self.require_certified()
        return PolicyFile(
            kind=self.kind,
            params=self.params,
            limits=self.limits,
            slos=self.slos,
            sample_period_s=self.plant.sample_period_s,
            certificate=self.certificate.to_dict(),
            uncertified=not self.certificate.holds,
            meta=self.meta,
        )


MEMORY_UNKNOWN = (
    "KV-cache capacity unknown (the telemetry had none): the largest cap is not checked against memory; "
    "at run time the admission guard uses the engine's reported capacity"
)


def without_unknown_claims(plant: DesignPlant, cert: Certificate) -> Certificate:
    """Record in the certificate what the data could not support.

    With the KV capacity unknown (``plant.memory_known`` False) the ``memory_safety`` claim cannot be
    made either way; it is removed (so the others can certify the design) and named, with the
    reason, under ``claims_not_made`` in the certificate's assumptions, which the policy file keeps.
    When the design used the slope floor (``plant.k_min_data`` not NaN, see
    :meth:`DesignPlant.from_model`), the data's own bound and the floor are recorded under
    ``slope_floor``.
    """
    if not math.isnan(plant.k_min_data):
        floor = {"slope_floor": (
            f"the data's slope interval starts at {plant.k_min_data:.3g} s/seq (does not exclude 0); the claims "
            f"hold for slopes >= k_min = {plant.k_min:.3g} s/seq, the assumed physical floor"
        )}
        cert = Certificate(cert.claims, dict(cert.assumptions) | floor, cert.numbers)
    if plant.memory_known:
        return cert
    claims = tuple(c for c in cert.claims if c.name != "memory_safety")
    not_made = dict(cert.assumptions.get("claims_not_made", {})) | {"memory_safety": MEMORY_UNKNOWN}
    return Certificate(claims, dict(cert.assumptions) | {"claims_not_made": not_made}, cert.numbers)


def guard_params(plant: DesignPlant) -> dict[str, float]:
    """Workload numbers the runtime's admission guard needs (:mod:`controlkit.admission`)."""
    return {
        "output_tokens_mean": plant.output_tokens_mean if plant.output_tokens_mean > 0 else 256.0,
        "kv_headroom": plant.kv_headroom,
        "prefill_s_per_token": plant.prefill_s_per_token,
    }


def _slos(tpot_slo_s: float, ttft_slo_s: float | None) -> dict[str, float]:
    return {"tpot_s": tpot_slo_s} | ({"ttft_s": ttft_slo_s} if ttft_slo_s is not None else {})


def _priority(priority: str) -> str:
    """Validate the overload priority of a design (``"tpot"`` or ``"ttft"``)."""
    if priority not in ("tpot", "ttft"):
        raise ValueError(f"priority={priority!r}: expected 'tpot' or 'ttft'")
    return priority


def _tune_certified(
    p: DesignPlant, method: str, sp: MarginSpec, f: FilterSpec, rate_limit: int
) -> tuple[ControllerSpec, Certificate]:
    """Tune, then scale the gains down (x0.7, at most 10 times) until the contraction claim holds.

    An EMA filter that cannot be certified is doubled (up to ``alpha = 0.5``): the smoothest
    certifiable one is kept.
    """
    while True:
        ctrl = (
            robust_tune(p, filter=f, spec=sp, rate_limit=rate_limit)
            if method == "robust"
            else simc_tune(p, filter=f, rate_limit=rate_limit)
        )
        cert = certify_pid(p, ctrl, spec=sp)
        for _ in range(10):
            if cert.claim("global_contraction").holds:
                break
            ctrl = ctrl.scaled(0.7)
            cert = certify_pid(p, ctrl, spec=sp)
        cert = without_unknown_claims(p, cert)
        if cert.holds or f.kind != "ema" or f.alpha >= 0.5:
            return ctrl, cert
        f = FilterSpec("ema", alpha=min(2.0 * f.alpha, 0.5))


def design_pid(
    plant: DesignPlant,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    *,
    method: str = "robust",
    filter: FilterSpec | None = None,
    spec: MarginSpec | None = None,
    rate_limit: int = 8,
    target_fraction: float = 0.9,
    priority: str = "tpot",
    measurement: str = "step",
) -> Design:
    """Design a PID tracking ``target_fraction * tpot_slo`` through the filtered step time.

    The sample period becomes the setpoint (one decision per engine step); the cap range is
    ``[b_min, min(b_max, memory-safe batch)]``; gains come from ``method`` (``"robust"`` or
    ``"simc"``) and are scaled down (x0.7, at most 10 times) until the contraction claim
    holds.  The measurement filter defaults to an EMA with ``alpha = 0.1`` (about 20 steps):
    TPOT is a per-request mean over many steps, and a fast filter lets the rate limit clip the
    controller's reaction to isolated prefill-heavy steps, so the *mean* step drifts above the
    setpoint.  If that EMA cannot be certified, ``alpha`` is doubled (up to 0.5) until it can.
    The reference batch of the optimum is stored for the runtime's initial output.
    """
    if method not in ("robust", "simc"):
        raise InfeasibleSpecError(f"method={method!r}: expected 'robust' or 'simc'")
    if measurement not in ("step", "itl"):
        raise InfeasibleSpecError(f"measurement={measurement!r}: expected 'step' or 'itl'")
    op = operating_point(plant, tpot_slo_s, ttft_slo_s)
    setpoint = target_fraction * tpot_slo_s
    cap_hi = max(plant.b_min + 1, min(plant.b_max, plant.memory_max_batch))
    p = plant.replace(sample_period_s=setpoint, b_max=cap_hi)
    ctrl, cert = _tune_certified(p, method, spec or MarginSpec(), filter or FilterSpec(), rate_limit)
    # controlkit.policy/2: the setpoint is target_fraction x slos.tpot_s, the rate limit
    # limits.rate_limit, the period sample_period_s and the budget limits.max_batched_tokens (stored once)
    gains = {k: v for k, v in ctrl.to_dict().items() if k not in ("rate_limit", "sample_period_s")}
    params = {
        "controller": gains,
        "target_fraction": target_fraction,
        "priority": _priority(priority),
        "measurement": measurement,
        "reference_batch": op.batch,
        "tuning": method,
        "guard": guard_params(plant),
        # gain-scheduled upper limit from the measured mean step slope (policies.controllers)
        "model": {
            "intercept_s": plant.intercept_s,
            "k_eff_s_per_seq": plant.k_max + prefill_load_s_per_seq(plant),
        },
    }
    limits = {
        "b_min": p.b_min,
        "b_max": p.b_max,
        "rate_limit": rate_limit,
        "max_batched_tokens": op.max_batched_tokens,
    }
    return Design(
        "pid", p, params, limits, _slos(tpot_slo_s, ttft_slo_s), op, cert, ctrl, {"model": plant.source}
    )


def _ttft_load_claim(plant: DesignPlant, op: OperatingPoint, ttft_slo_s: float) -> Claim:
    """Return the range of arrival rates over which the operating point meets the TTFT SLO.

    TTFT is a property of the load as much as of the operating point: the claim certifies that
    range (an assumption on the load, like the slope interval) and says where the identified
    load lies.  A load beyond it is overload, which the runtime reports with the "infeasible" flag.
    """
    lam_max = ttft_max_rate_per_s(plant, op, ttft_slo_s)
    lam = plant.arrival_rate_per_s
    where = (
        "no arrival rate identified"
        if not lam > 0
        else f"identified load {lam:.3g} req/s is "
        + ("within it" if lam <= lam_max else "BEYOND it: overload, flagged 'infeasible' at run time")
    )
    return Claim(
        "ttft_load_range",
        lam_max > 0,
        lam_max,
        0.0,
        lam_max,
        "req/s",
        f"TTFT <= {ttft_slo_s:g} s predicted for arrival rates up to {lam_max:.3g} req/s "
        f"(queueing at batch {op.batch}); {where}",
    )


def design_optimal(
    plant: DesignPlant,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    *,
    target_fraction: float = 0.9,
    priority: str = "tpot",
) -> Design:
    """Design the static constrained optimum (exported as a static config).

    The runtime may derate the cap below the optimum when the measured mean step slope exceeds
    the model's, holding the mean step at ``target_fraction * tpot_slo`` (TPOT headroom for the
    per-request spread, as the PID's setpoint); it never raises it.

    When prefill has a cost (``prefill_s_per_token > 0``) the design adds a step-capped token
    budget (``params.step_cap``, ``docs/theory.md`` §6): with at most the derated ceiling
    ``b_run = min(b*, (target - a) / k_eff)`` running, every step stays within the TPOT SLO,
    so no request misses TPOT however short it is.  The runtime uses it while the TTFT has
    slack and the throughput budget when the TTFT pressure builds; the claim
    ``step_within_tpot_slo`` certifies it.  ``priority`` (``"tpot"`` or ``"ttft"``) decides which SLO wins in
    overload, as for :func:`design_pid`.
    """
    op = operating_point(plant, tpot_slo_s, ttft_slo_s)
    extra: tuple[Claim, ...] = ()
    if ttft_slo_s is not None and plant.output_tokens_mean > 0:
        extra = (_ttft_load_claim(plant, op, ttft_slo_s),)
    k_eff = plant.k_max + prefill_load_s_per_seq(plant)
    target_s = target_fraction * tpot_slo_s
    params: dict[str, Any] = {
        "max_num_seqs": op.batch,
        "target_fraction": target_fraction,
        "priority": _priority(priority),
        "guard": guard_params(plant),
        # the runtime derates (never raises) the cap when the measured step slope exceeds this model
        "model": {"intercept_s": plant.intercept_s, "k_eff_s_per_seq": k_eff},
    }
    # the derating never lets more than b_run run (policies.controllers._SlopeLimit at k_hat <= k_eff)
    b_run = min(op.batch, max(1, math.floor((target_s - plant.intercept_s) / k_eff)))
    capped = token_budget(plant, b_run, step_cap_s=tpot_slo_s)
    step_claim = step_cap_claim(plant, b_run, capped, tpot_slo_s)
    if plant.prefill_s_per_token > 0 and capped < op.max_batched_tokens and step_claim.holds:
        params["step_cap"] = {
            "max_batched_tokens": capped,
            "batch": b_run,
            "step_cap_s": tpot_slo_s,
            "prompt_tokens_mean": plant.prompt_tokens_mean,
        }
        extra = (*extra, step_claim)
    cert = without_unknown_claims(plant, certify_static(plant, op.batch, tpot_slo_s, extra))
    limits = {"b_min": plant.b_min, "b_max": plant.b_max, "max_batched_tokens": op.max_batched_tokens}
    return Design(
        "optimal",
        plant,
        params,
        limits,
        _slos(tpot_slo_s, ttft_slo_s),
        op,
        cert,
        None,
        {"model": plant.source, "operating_point": op.to_dict()},
    )


def design_mpc(
    plant: DesignPlant,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    *,
    rate_limit: int = 8,
    horizon: int = 8,
    target_fraction: float = 0.9,
    priority: str = "tpot",
) -> Design:
    """Receding-horizon control of both knobs (see :mod:`controlkit.mpc`).

    ``priority`` (``"tpot"`` or ``"ttft"``) decides which SLO wins in overload, as for
    :func:`design_pid` (the TTFT supervisor, :mod:`controlkit.backlog`).
    """
    op = operating_point(plant, tpot_slo_s, ttft_slo_s)
    cap_upper = min(plant.b_max, plant.memory_max_batch)
    b_ref = op.max_batched_tokens
    params = {
        "cap_upper": cap_upper,
        "horizon": horizon,
        "intercept_s": plant.intercept_s,
        "k_max": plant.k_max,
        "prompt_tokens_mean": plant.prompt_tokens_mean,
        "output_tokens_mean": plant.output_tokens_mean,
        "prefill_s_per_token": plant.prefill_s_per_token,
        "reference_batch": op.batch,
        "budgets": sorted({max(op.batch, b_ref // 2), b_ref, 2 * b_ref}),
        "every_k": 1,
        "target_fraction": target_fraction,
        "priority": _priority(priority),
        "guard": guard_params(plant),
    }
    limits = {
        "b_min": plant.b_min,
        "b_max": plant.b_max,
        "rate_limit": rate_limit,
        "max_batched_tokens": 2 * b_ref,
    }
    claims = mpc_claims(plant, cap_upper, rate_limit)
    cert = without_unknown_claims(plant, certify_static(plant, cap_upper, None, claims))
    return Design(
        "mpc", plant, params, limits, _slos(tpot_slo_s, ttft_slo_s), op, cert, None, {"model": plant.source}
    )
