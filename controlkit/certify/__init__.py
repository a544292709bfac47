"""Certificates: claims a test can check, under stated assumptions, with the numbers.

:func:`certify_pid` checks a feedback design; :func:`certify_policy` re-checks any policy file
against any plant (that is how a new GPU's model invalidates an old policy).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlkit.certify.certificate import Certificate, Claim, LoopMargins
from controlkit.certify.checks import (
    MarginSpec,
    contraction_claim,
    loop_margins,
    margin_claims,
    memory_claim,
    pole_claim,
)
from controlkit.certify.constraints import mpc_claims, step_cap_claim
from controlkit.certify.loop import ControllerSpec
from controlkit.plant import DesignPlant
from controlkit.policyfile import PolicyFile
from controlkit.policyschema import Field, check_value
from identification.errors import PolicyError

__all__ = [
    "Certificate",
    "Claim",
    "ControllerSpec",
    "LoopMargins",
    "MarginSpec",
    "certify_pid",
    "certify_policy",
    "certify_static",
    "loop_margins",
    "tpot_floor_claim",
]


def certify_pid(
    plant: DesignPlant,
    ctrl: ControllerSpec,
    *,
    spec: MarginSpec | None = None,
    chol_hint: dict[str, Any] | None = None,
) -> Certificate:
    """All claims of a PID loop on ``plant``: poles, margins, contraction, memory safety."""
    sp = spec or MarginSpec()
    poles, pole_nums = pole_claim(plant, ctrl)
    margins, _ = margin_claims(plant, ctrl, sp)
    contraction, c_nums = contraction_claim(plant, ctrl, chol_hint=chol_hint)
    memory = memory_claim(plant, plant.b_max)
    assumptions = _assumptions(plant) | {
        "phase_margin_deg_required": sp.phase_margin_deg,
        "gain_margin_db_required": sp.gain_margin_db,
    }
    return Certificate((poles, *margins, contraction, memory), assumptions, pole_nums | c_nums)


def certify_static(
    plant: DesignPlant, batch: int, tpot_slo_s: float | None, extra: tuple[Claim, ...] = ()
) -> Certificate:
    """Claims of a static operating point: TPOT at the upper slope (if given), memory safety."""
    claims: list[Claim] = []
    if tpot_slo_s is not None:
        y = plant.step_upper_s(batch)
        claims.append(
            Claim(
                "tpot_at_upper_slope",
                y <= tpot_slo_s,
                y,
                tpot_slo_s,
                tpot_slo_s - y,
                "s",
                f"intercept + k_max x {batch}",
            )
        )
    return Certificate((*claims, memory_claim(plant, batch), *extra), _assumptions(plant), {})


def _assumptions(plant: DesignPlant) -> dict[str, Any]:
    return {
        "k_min": plant.k_min,
        "k_nom": plant.k_nom,
        "k_max": plant.k_max,
        "delays": list(plant.delays),
        "b_min": plant.b_min,
        "b_max": plant.b_max,
        "sample_period_s": plant.sample_period_s,
        "intercept_s": plant.intercept_s,
        "kv_capacity_blocks": plant.kv_capacity_blocks,
        "block_size": plant.block_size,
        "tokens_per_seq": plant.tokens_per_seq,
        "kv_headroom": plant.kv_headroom,
        "source": plant.source,
    }


#: Most measurement delays a certificate may assume, and the longest (decisions).
MAX_DELAYS, MAX_DELAY = 8, 16


def _assumed_delays(assume: Mapping[str, Any], plant: DesignPlant) -> tuple[int, ...]:
    raw = assume.get("delays", list(plant.delays))
    if not isinstance(raw, list | tuple) or not 1 <= len(raw) <= MAX_DELAYS:
        raise PolicyError(f"policy file: certificate.assumptions.delays must be a list of 1..{MAX_DELAYS} delays")
    for i, d in enumerate(raw):
        check_value(d, Field("int", lo=1, hi=MAX_DELAY), f"certificate.assumptions.delays[{i}]", "policy file")
    return tuple(int(d) for d in raw)


def plant_for_policy(pf: PolicyFile, plant: DesignPlant) -> DesignPlant:
    """Return the plant to check ``pf`` against: the new model's numbers, the file's bounds and period."""
    lim = pf.limits
    if "b_min" not in lim or "b_max" not in lim:
        raise PolicyError("policy file: 'limits' must hold integers 'b_min' and 'b_max'")
    b_min, b_max = int(lim["b_min"]), int(lim["b_max"])  # their types and ranges: PolicyFile's schema
    cert = pf.certificate or {}
    assume = cert.get("assumptions", {})
    if not isinstance(assume, Mapping):
        raise PolicyError("policy file: certificate.assumptions must be an object")
    delays = _assumed_delays(assume, plant)
    headroom = assume.get("kv_headroom", plant.kv_headroom)
    check_value(headroom, Field("num", lo=0.0, hi=0.99), "certificate.assumptions.kv_headroom", "policy file")
    return plant.replace(
        b_min=b_min, b_max=b_max, sample_period_s=pf.sample_period_s, delays=delays, kv_headroom=float(headroom)
    )


def tpot_floor_claim(plant: DesignPlant, tpot_slo_s: float) -> Claim:
    """``tpot_feasible_at_b_min``: the smallest cap the policy can set meets the TPOT SLO.

    At ``b_min`` sequences the step takes ``intercept + k_max * b_min`` at the upper slope; if
    that is above the SLO no cap the policy can choose meets it (a 50 ms SLO on a plant whose
    batch-1 step is 60 ms), whatever its loop claims say.
    """
    y = plant.step_upper_s(plant.b_min)
    return Claim(
        "tpot_feasible_at_b_min",
        y <= tpot_slo_s,
        y,
        tpot_slo_s,
        tpot_slo_s - y,
        "s",
        f"intercept {plant.intercept_s:.4g} s + k_max {plant.k_max:.4g} s/seq x b_min {plant.b_min}",
    )


def _tpot_slo(pf: PolicyFile) -> float:
    tpot = pf.slos.get("tpot_s")
    if tpot is None:
        raise PolicyError(f"policy file: slos.tpot_s is missing; a {pf.kind} policy is certified against it")
    return float(tpot)  # finite and > 0: PolicyFile's schema


def certify_policy(pf: PolicyFile, plant: DesignPlant) -> Certificate:
    """Re-check the claims of a policy file against ``plant`` (e.g. from another GPU's model).

    Every field the claims read is checked first (the typed params, ``controlkit.policyparams``); the TPOT SLO
    must be met at the smallest cap (:func:`tpot_floor_claim`) for every kind, in addition to the
    kind's own claims.
    """
    if pf.kind not in ("pid", "optimal", "mpc"):
        raise PolicyError(f"policy kind {pf.kind!r} carries no certificate to check (kinds: pid, optimal, mpc)")
    params = pf.typed_params("policy file")
    p = plant_for_policy(pf, plant)
    tpot = _tpot_slo(pf)
    floor = tpot_floor_claim(p, tpot)
    assume = (pf.certificate or {}).get("assumptions", {})
    if pf.kind == "pid":
        ctrl = ControllerSpec.from_dict(params.controller_doc())
        spec = MarginSpec(
            float(assume.get("phase_margin_deg_required", 60.0)),
            float(assume.get("gain_margin_db_required", 6.0)),
        )
        hint = (pf.certificate or {}).get("numbers", {}).get("lyapunov_chol_by_delay")
        cert = certify_pid(p, ctrl, spec=spec, chol_hint=hint)
        return Certificate((floor, *cert.claims), cert.assumptions, cert.numbers)
    if pf.kind == "optimal":
        sc = params.step_cap
        if sc is None:
            return certify_static(p, params.max_num_seqs, tpot, (floor,))
        claim = step_cap_claim(p, sc.batch, sc.max_batched_tokens, sc.step_cap_s)
        return certify_static(p, params.max_num_seqs, tpot, (floor, claim))
    if "rate_limit" not in pf.limits:
        raise PolicyError("policy file: an mpc policy needs limits.rate_limit (sequences per decision)")
    claims = mpc_claims(p, params.cap_upper, int(pf.limits["rate_limit"]))
    return certify_static(p, params.cap_upper, None, (floor, *claims))
