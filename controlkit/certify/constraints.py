"""Claims about constraint sets: the step cap of ``optimal`` and the hard constraints of ``mpc``.

They live here, not in :mod:`controlkit.design`, so that :func:`controlkit.certify.certify_policy`
can re-check a policy file without importing the design layer (no ``design`` ⇄ ``certify`` cycle).
"""

from __future__ import annotations

from controlkit.certify.certificate import Claim
from controlkit.optimal import step_bound_s
from controlkit.plant import DesignPlant

__all__ = ["mpc_claims", "step_cap_claim"]


def step_cap_claim(plant: DesignPlant, batch: int, budget: int, tpot_slo_s: float) -> Claim:
    """Return the ``normal``-mode claim of ``optimal``: every step within the TPOT SLO.

    With at most ``batch`` running sequences and ``budget`` tokens per step, no step is longer
    than :func:`~controlkit.optimal.step_bound_s` at the upper slope; when that is within the
    TPOT SLO, every request's TPOT (a mean of its steps) is within it too, whatever its length.
    """
    y = step_bound_s(plant, batch, budget)
    return Claim(
        "step_within_tpot_slo",
        y <= tpot_slo_s,
        y,
        tpot_slo_s,
        tpot_slo_s - y,
        "s",
        f"longest step with <= {batch} running and {budget} tokens per step (upper slope); "
        "applies while the TTFT has slack (supervisor mode 'normal')",
    )


def mpc_claims(plant: DesignPlant, cap_upper: int, rate: int) -> tuple[Claim, ...]:
    """Return the constraint-satisfaction and recursive-feasibility claims of an MPC policy.

    ``cap_upper`` is the largest candidate cap and ``rate`` the rate limit (sequences per decision).
    """
    feasible_set = plant.b_min <= min(cap_upper, plant.memory_max_batch)
    return (
        Claim(
            "hard_constraints_by_construction",
            rate >= 1 and cap_upper <= plant.b_max,
            float(cap_upper),
            float(plant.b_max),
            float(plant.b_max - cap_upper),
            "seq",
            f"every candidate cap lies in [b_min, cap_upper] and moves by <= {rate}",
        ),
        Claim(
            "recursive_feasibility",
            feasible_set,
            float(plant.b_min),
            float(min(cap_upper, plant.memory_max_batch)),
            float(min(cap_upper, plant.memory_max_batch) - plant.b_min),
            "seq",
            "the hard set [b_min, cap_upper] is non-empty and the move towards it is always a candidate",
        ),
    )
