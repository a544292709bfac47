"""Gain-scheduled PID design: one certificate on a *relative* slope interval, scaled online.

The loop of ``docs/theory.md`` §1 depends on the slope ``s`` and the gains only through their
products ``s Kp``, ``s Ki``, ``s Kd`` (the plant is ``s`` times the cap; the rate-limit vertex
``R / max|du|`` and the quantisation band, in sequences, scale the same way).  So a PID with gains
``g k_ref / k_s`` on a true slope ``s`` has exactly the closed loop of gains ``g`` on slope
``s k_ref / k_s``.  :func:`design_adaptive_pid` certifies gains ``g`` (by :func:`design_pid`) on the
relative interval ``[r_lo, r_hi] k_ref``; at run time :mod:`policies.adaptive` schedules
``k_s`` = the online slope estimate and scales the gains by ``k_ref / k_s``: every claim of the
certificate then holds for every true slope in ``[r_lo k_s, r_hi k_s]`` (the estimate may be off
by that ratio).  ``k_s`` is only scheduled inside the *envelope* ``[e_lo k_min, e_hi k_max]`` (the
identified interval widened by design); outside it the policy falls back to a safe static cap.
The scale invariance is checked numerically at both envelope ends (claim
``schedule_scale_invariance``: the exact root-locus radius and the margins must agree).
Switching between scheduled gains is not covered by the per-gain claims (a dwell time and a
hysteresis band limit it; theory §9).
"""

from __future__ import annotations

import math
from typing import Any

from controlkit.certify import Certificate, Claim, MarginSpec
from controlkit.certify.checks import margin_claims, pole_claim
from controlkit.certify.loop import ControllerSpec
from controlkit.design import Design, design_pid
from controlkit.optimal import operating_point, prefill_load_s_per_seq
from controlkit.plant import DesignPlant

__all__ = ["design_adaptive_pid", "scaled_controller", "schedule_params"]


def scaled_controller(ctrl: ControllerSpec, k_ref: float, k_sched: float) -> ControllerSpec:
    """Return the reference controller with its gains scaled by ``k_ref / k_sched``."""
    return ctrl.scaled(k_ref / k_sched)


def schedule_params(
    plant: DesignPlant,
    envelope_s_per_seq: tuple[float, float],
    relative: tuple[float, float],
    *,
    dwell_decisions: int = 50,
    hysteresis: float = 0.15,
) -> dict[str, Any]:
    """Return the ``params.schedule`` mapping the ``pid-adaptive`` runtime reads (:mod:`policies.adaptive`)."""
    return {
        "k_ref_s_per_seq": plant.k_nom,
        "envelope_s_per_seq": [float(envelope_s_per_seq[0]), float(envelope_s_per_seq[1])],
        "relative": [float(relative[0]), float(relative[1])],
        "dwell_decisions": int(dwell_decisions),
        "hysteresis": float(hysteresis),
        "intercept_s": plant.intercept_s,
        "prefill_s_per_token": plant.prefill_s_per_token,
        "prefill_load_s_per_seq": prefill_load_s_per_seq(plant),
    }


def _invariance_claim(
    plant: DesignPlant, ctrl: ControllerSpec, envelope: tuple[float, float], spec: MarginSpec
) -> Claim:
    """Check that the claims of the scaled gains at both envelope ends equal the reference ones."""
    k_ref = plant.k_nom
    ref_pole, _ = pole_claim(plant, ctrl)
    ref_margins, _ = margin_claims(plant, ctrl, spec)
    worst = 0.0
    for k_s in envelope:
        f = k_s / k_ref
        p = plant.replace(k_min=plant.k_min * f, k_nom=k_s, k_max=plant.k_max * f)
        c = scaled_controller(ctrl, k_ref, k_s)
        pole, _ = pole_claim(p, c)
        margins, _ = margin_claims(p, c, spec)
        for a, b in zip((ref_pole, *ref_margins), (pole, *margins), strict=True):
            if math.isfinite(a.value) and math.isfinite(b.value):
                worst = max(worst, abs(a.value - b.value) / max(abs(a.value), 1e-12))
            elif a.value != b.value:
                worst = math.inf
    return Claim(
        "schedule_scale_invariance",
        worst <= 1e-6,
        worst,
        1e-6,
        1e-6 - worst,
        "relative",
        f"poles and margins of the gains scaled to k_s in [{envelope[0]:.3g}, {envelope[1]:.3g}] s/seq "
        "equal the reference certificate's (largest relative difference)",
    )


def design_adaptive_pid(
    plant: DesignPlant,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    *,
    envelope: tuple[float, float] = (0.5, 4.0),
    relative: tuple[float, float] = (0.6, 1.6),
    dwell_decisions: int = 50,
    hysteresis: float = 0.15,
    spec: MarginSpec | None = None,
    **pid_options: Any,
) -> Design:
    """Design the ``pid-adaptive`` policy: a gain-scheduled PID with an online slope estimator.

    Parameters
    ----------
    plant
        The identified design plant; its nominal slope is ``k_ref``.
    tpot_slo_s, ttft_slo_s
        SLOs, as for :func:`~controlkit.design.design_pid`.
    envelope
        Factors ``(e_lo, e_hi)``: slopes in ``[e_lo k_min, e_hi k_max]`` may be scheduled.
    relative
        ``(r_lo, r_hi)``: the certified ratio of the true slope to the scheduled one (widened to
        contain the identified interval ``[k_min, k_max] / k_nom``).
    dwell_decisions, hysteresis
        At most one re-tune per ``dwell_decisions``, and only when the estimate moved by more
        than ``hysteresis`` (relative) from the scheduled slope.
    spec
        Margin requirements (default :class:`MarginSpec`).
    **pid_options
        Passed to :func:`design_pid` (``method``, ``filter``, ``rate_limit``, ``priority``...).
    """
    e_lo, e_hi = envelope
    if not (0 < e_lo <= 1.0 <= e_hi):
        raise ValueError(f"envelope={envelope!r}: expected 0 < e_lo <= 1 <= e_hi")
    k_ref = plant.k_nom
    r_lo = min(relative[0], plant.k_min / k_ref)
    r_hi = max(relative[1], plant.k_max / k_ref)
    if not (0 < r_lo < 1.0 < r_hi):
        raise ValueError(f"relative={relative!r}: expected 0 < r_lo < 1 < r_hi")
    sp = spec or MarginSpec()
    rel_plant = plant.replace(k_min=r_lo * k_ref, k_max=r_hi * k_ref)
    base = design_pid(rel_plant, tpot_slo_s, ttft_slo_s, spec=sp, **pid_options)
    assert base.controller is not None
    env = (e_lo * plant.k_min, e_hi * plant.k_max)
    invariance = _invariance_claim(base.plant, base.controller, env, sp)
    envelope_claim = Claim(
        "schedule_envelope",
        env[0] <= k_ref <= env[1],
        k_ref,
        env[1],
        env[1] - k_ref,
        "s/seq",
        f"scheduled slopes in [{env[0]:.4g}, {env[1]:.4g}] s/seq (identified [{plant.k_min:.4g}, "
        f"{plant.k_max:.4g}] widened x({e_lo:g}, {e_hi:g})); every claim holds for a true slope within "
        f"x[{r_lo:.3g}, {r_hi:.3g}] of the scheduled one; outside the envelope: safe static cap",
    )
    cert = Certificate(
        (*base.certificate.claims, envelope_claim, invariance),
        dict(base.certificate.assumptions) | {"schedule_relative_interval": [r_lo, r_hi]},
        dict(base.certificate.numbers),
    )
    op = operating_point(plant, tpot_slo_s, ttft_slo_s)
    params = dict(base.params) | {
        "reference_batch": op.batch,
        "schedule": schedule_params(plant, env, (r_lo, r_hi), dwell_decisions=dwell_decisions, hysteresis=hysteresis),
    }
    # the measured-slope limit's floor: the identified (not the widened) lowest slope, as design_pid's
    params["model"] = dict(params["model"]) | {"k_eff_s_per_seq": plant.k_min}
    meta = dict(base.meta) | {"envelope_factors": [e_lo, e_hi]}
    return Design("pid-adaptive", base.plant, params, base.limits, base.slos, op, cert, base.controller, meta)
