"""The claims of a feedback (PID) certificate, each computed from a :class:`DesignPlant`.

* ``poles_inside_unit_circle``: exact over the slope interval.  The characteristic
  polynomial is ``D(z) + s N(z)``, affine in the slope ``s``; a root can only cross the unit
  circle at a slope ``s = -D(z)/N(z)`` that is real and positive for some ``|z| = 1``.  Those
  *crossing slopes* are the unit-circle roots of ``D(z) N~(z) - D~(z) N(z)`` (``~`` reverses the
  coefficients).  The interval is stable iff the loop is stable at ``k_min`` and no crossing
  slope lies in ``[k_min, k_max]``.  A 64-point slope grid is checked as well; both must agree.
* ``gain_margin`` / ``phase_margin``: python-control ``stability_margins`` on the discrete
  ``tf`` at 9 slopes across the interval for every delay; the worst is reported.
* ``global_contraction``: a common quadratic Lyapunov function for every vertex of the sector
  model (slope, saturation, rate limit, quantile selector); the rate ``rho`` and the
  quantisation band follow (``docs/theory.md`` §4-§5).
* ``memory_safety``: ``b_max * blocks_per_seq <= capacity * (1 - headroom)`` at the design
  workload's tokens per sequence; on other workloads the runtime's online guard
  (:mod:`controlkit.admission`) holds the predicted KV within the same bound.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import control
import numpy as np

from controlkit.certify.certificate import Claim, LoopMargins
from controlkit.certify.loop import ControllerSpec, char_poly, open_loop_poly, vertex_matrices
from controlkit.certify.lyapunov import common_lyapunov, contraction_rate
from controlkit.plant import DesignPlant

__all__ = [
    "MarginSpec",
    "contraction_claim",
    "crossing_slopes",
    "loop_margins",
    "margin_claims",
    "memory_claim",
    "pole_claim",
    "worst_spectral_radius",
]


@dataclass(frozen=True, slots=True)
class MarginSpec:
    """Required robustness: phase margin (degrees) and gain margin (dB) at every slope and delay.

    Defaults follow MATLAB pidtune's 60 degree phase-margin target and the classic 6 dB gain
    margin (the loop tolerates a further factor 2 on the slope).
    """

    phase_margin_deg: float = 60.0
    gain_margin_db: float = 6.0


def crossing_slopes(ctrl: ControllerSpec, delay: int) -> list[float]:
    """Slopes ``s > 0`` at which a closed-loop pole lies on the unit circle (sorted)."""
    num, den = open_loop_poly(ctrl, delay)
    q = np.polysub(np.polymul(den, num[::-1]), np.polymul(den[::-1], num))
    q = np.trim_zeros(q, "f")
    zs = list(np.roots(q)) if len(q) > 1 else []
    zs += [complex(-1.0)]
    out = []
    for z in zs:
        if abs(abs(z) - 1.0) > 1e-6:
            continue
        z = z / abs(z)
        n_val = np.polyval(num, z)
        if abs(n_val) < 1e-14:
            continue
        s = -np.polyval(den, z) / n_val
        if s.real > 0 and abs(s.imag) <= 1e-6 * abs(s.real):
            out.append(float(s.real))
    return sorted(out)


def worst_spectral_radius(
    ctrl: ControllerSpec, delay: int, k_min: float, k_max: float, n_grid: int = 64
) -> tuple[float, float]:
    """Return the largest pole modulus over a slope grid, and the slope where it occurs."""
    worst, at = -1.0, k_min
    for s in np.linspace(k_min, k_max, n_grid):
        r = float(max(abs(np.roots(char_poly(ctrl, delay, float(s))))))
        if r > worst:
            worst, at = r, float(s)
    return worst, at


def pole_claim(plant: DesignPlant, ctrl: ControllerSpec) -> tuple[Claim, dict[str, object]]:
    """Closed-loop poles strictly inside the unit circle for every slope and delay."""
    worst, worst_at, worst_d = -1.0, plant.k_min, plant.delays[0]
    exact_ok = True
    crit: dict[str, float] = {}
    for d in plant.delays:
        r, at = worst_spectral_radius(ctrl, d, plant.k_min, plant.k_max)
        if r > worst:
            worst, worst_at, worst_d = r, at, d
        r0 = float(max(abs(np.roots(char_poly(ctrl, d, plant.k_min)))))
        above = [s for s in crossing_slopes(ctrl, d) if s >= plant.k_min]
        s_crit = above[0] if above else math.inf
        crit[str(d)] = s_crit
        exact_ok &= r0 < 1.0 and s_crit > plant.k_max
    s_crit_min = min(crit.values())
    holds = exact_ok and worst < 1.0
    ratio = s_crit_min / plant.k_max
    claim = Claim(
        "poles_inside_unit_circle",
        holds,
        worst,
        1.0,
        1.0 - worst,
        "spectral radius",
        f"worst at slope {worst_at:.3g} s/seq, delay {worst_d}; first crossing slope "
        f"{s_crit_min:.3g} s/seq = {ratio:.3g} x k_max (exact root-locus crossing)",
    )
    return claim, {
        "crossing_slope_by_delay": {k: (v if math.isfinite(v) else "inf") for k, v in crit.items()},
        "slope_margin_ratio": ratio if math.isfinite(ratio) else "inf",
    }


def loop_margins(ctrl: ControllerSpec, delay: int, slope: float) -> LoopMargins:
    """Gain/phase margins of ``L(z)`` at one slope and delay (python-control, discrete ``tf``)."""
    num, den = open_loop_poly(ctrl, delay)
    loop = control.tf(slope * num, den, ctrl.sample_period_s)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        gms, pms, sms, wpcs, wgcs, _ = control.stability_margins(loop, returnall=True)
    # python-control evaluates L near z = 1, where the integrator makes it numerically
    # meaningless; crossovers below w_min are discarded (the loop phase there is -90 deg).
    w_min = 1e-3 / ctrl.sample_period_s
    gm_db, wpc = math.inf, math.nan
    for g, w in zip(np.atleast_1d(gms), np.atleast_1d(wpcs), strict=False):
        if np.isfinite(g) and g > 0 and w > w_min and 20.0 * math.log10(g) < gm_db:
            gm_db, wpc = 20.0 * math.log10(g), float(w)
    pm_f, wgc = math.inf, math.nan
    for p, w in zip(np.atleast_1d(pms), np.atleast_1d(wgcs), strict=False):
        if np.isfinite(p) and w > w_min and p < pm_f:
            pm_f, wgc = float(p), float(w)
    sm = float(np.min(sms)) if np.size(sms) else math.nan
    return LoopMargins(gm_db, pm_f, sm, wpc, wgc, slope, delay)


def margin_claims(
    plant: DesignPlant, ctrl: ControllerSpec, spec: MarginSpec, n_grid: int = 9
) -> tuple[list[Claim], list[LoopMargins]]:
    """Worst gain and phase margin over a slope grid and every delay."""
    rows = [
        loop_margins(ctrl, d, float(s))
        for d in plant.delays
        for s in np.linspace(plant.k_min, plant.k_max, n_grid)
    ]
    g = min(rows, key=lambda m: m.gain_margin_db)
    p = min(rows, key=lambda m: m.phase_margin_deg)
    where = f"python-control stability_margins, {n_grid} slopes x delays {list(plant.delays)}"
    return [
        Claim(
            "gain_margin",
            g.gain_margin_db >= spec.gain_margin_db,
            g.gain_margin_db,
            spec.gain_margin_db,
            g.gain_margin_db - spec.gain_margin_db,
            "dB",
            f"worst at slope {g.slope:.3g}, delay {g.delay}; {where}",
        ),
        Claim(
            "phase_margin",
            p.phase_margin_deg >= spec.phase_margin_deg,
            p.phase_margin_deg,
            spec.phase_margin_deg,
            p.phase_margin_deg - spec.phase_margin_deg,
            "deg",
            f"worst at slope {p.slope:.3g}, delay {p.delay}; {where}",
        ),
    ], rows


def contraction_claim(
    plant: DesignPlant,
    ctrl: ControllerSpec,
    *,
    chol_hint: dict[str, list[list[float]]] | None = None,
    polish_iter: int = 600,
) -> tuple[Claim, dict[str, object]]:
    """Global contraction of the saturated, rate-limited loop over the slope sector.

    ``chol_hint`` (from a stored certificate) is tried first: re-checking a stored Lyapunov
    factor is exact and cheap; the search runs only if it fails.
    """
    rhos: dict[str, float] = {}
    chols: dict[str, list[list[float]]] = {}
    bands: dict[str, float] = {}
    for d in plant.delays:
        verts = vertex_matrices(ctrl, d, plant.k_min, plant.k_max, plant.b_min, plant.b_max)
        mats = [v.a for v in verts]
        rho, chol = math.inf, np.eye(mats[0].shape[0])
        hint = (chol_hint or {}).get(str(d))
        if hint is not None and np.asarray(hint).shape == mats[0].shape:
            chol = np.asarray(hint, dtype=float)
            rho = contraction_rate(mats, chol)
        if not rho < 1.0:
            res = common_lyapunov(mats, polish_iter=polish_iter, polish_if_below=0.0)
            rho, chol = res.rho, res.chol
        rhos[str(d)] = rho
        chols[str(d)] = chol.tolist()
        bands[str(d)] = quantisation_band(verts, chol, rho, plant.k_max) if rho < 1.0 else math.inf
    worst_d = max(rhos, key=lambda k: rhos[k])
    rho = rhos[worst_d]
    settle = math.ceil(math.log(0.02) / math.log(rho)) if 0 < rho < 1 else (0 if rho == 0 else -1)
    claim = Claim(
        "global_contraction",
        rho < 1.0,
        rho,
        1.0,
        1.0 - rho,
        "rate per decision",
        f"common quadratic Lyapunov function over slope x saturation x rate-limit vertices; "
        f"worst delay {worst_d}; 2% in {settle} decisions; band +-{bands[worst_d]:.3g} seq",
    )
    return claim, {
        "contraction_rate_by_delay": rhos,
        "lyapunov_chol_by_delay": chols,
        "quantisation_band_seq_by_delay": {k: (v if math.isfinite(v) else "inf") for k, v in bands.items()},
        "settle_decisions_2pct": settle,
    }


def quantisation_band(verts: list, chol: np.ndarray, rho: float, k_max: float) -> float:  # type: ignore[type-arg]
    """Ultimate bound on ``|c - b*|`` (sequences) caused by rounding the cap to an integer.

    Rounding adds ``s*q`` (``|q| <= 1/2``) to the measured sample; in the Lyapunov norm each
    decision adds at most ``gamma = max_v ||L^T e_y|| * k_max / 2``, so the state ends within
    ``gamma / (1 - rho)``, and the cap within ``||L^-1 e_0|| * gamma / (1 - rho) + 1/2``.
    """
    gamma = max(float(np.linalg.norm(chol.T @ v.e_y)) for v in verts) * k_max * 0.5
    e0 = np.zeros(chol.shape[0])
    e0[0] = 1.0
    out_gain = float(np.linalg.norm(np.linalg.solve(chol, e0)))
    return out_gain * gamma / (1.0 - rho) + 0.5


def memory_claim(plant: DesignPlant, cap_max: int) -> Claim:
    """Check that the largest cap the policy can emit fits the KV cache minus headroom at full length."""
    need = cap_max * plant.kv_blocks_per_seq
    usable = plant.kv_usable_blocks
    return Claim(
        "memory_safety",
        need <= usable,
        float(need),
        float(usable),
        float(usable - need),
        "KV blocks",
        f"cap {cap_max} x {plant.kv_blocks_per_seq} blocks/seq vs {plant.kv_capacity_blocks} blocks "
        f"x (1 - {plant.kv_headroom:g} headroom); memory-safe cap is {plant.memory_max_batch} "
        f"at the design workload's {plant.tokens_per_seq:.0f} tokens/seq; at runtime the online guard "
        "(controlkit.admission) keeps the predicted KV of running growth + admissions within the same bound",
    )
