"""Plants that change during a run: the decode slope scaled after a number of steps.

For testing online re-identification (:mod:`controlkit.online`, :mod:`policies.adaptive`) in
the engine simulator without changing it: :class:`DriftingPlant` has the
:class:`~controlkit.sim.Plant` interface the engine uses (``step_s`` once per step and the
plant's fields) and switches from one plant to another after ``switch_after_steps`` steps.

Examples
--------
>>> from controlkit.sim import Plant
>>> p = Plant("toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100)
>>> q = slope_scaled(p, 2.0)
>>> round(q.step_s(5, 0) - q.step_s(1, 0), 6)   # twice 0.004 (intercept 0.009)
0.008
>>> d = DriftingPlant(p, q, switch_after_steps=1)
>>> round(d.step_s(5, 0), 6), round(d.step_s(5, 0), 6)
(0.014, 0.019)
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

from controlkit.sim.plants import Plant

__all__ = ["DriftingPlant", "slope_scaled"]


def slope_scaled(plant: Plant, factor: float, *, name: str | None = None) -> Plant:
    """Return the plant with every decode-step increment over its intercept (and the context cost) x ``factor``.

    The intercept is the decode table extrapolated to batch 0 from its first two points; the
    prefill cost is unchanged.
    """
    if not factor > 0:
        raise ValueError(f"slope_scaled factor={factor!r}: expected > 0")
    xs, ys = plant.decode_batch, plant.decode_step_s
    a = ys[0] - (ys[1] - ys[0]) / (xs[1] - xs[0]) * xs[0]
    return dataclasses.replace(
        plant,
        name=name or f"{plant.name}*slope{factor:g}",
        decode_step_s=tuple(a + factor * (y - a) for y in ys),
        context_s_per_token=plant.context_s_per_token * factor,
        source=f"{plant.source}; decode slope x{factor:g}",
    )


class DriftingPlant:
    """``before`` for the first ``switch_after_steps`` engine steps, then ``after``.

    Pass it to :func:`controlkit.sim.simulate` as the plant (``as_plant()`` gives it the type).
    Fields other than ``step_s`` are ``before``'s (both plants must share KV capacity and limits).
    """

    def __init__(self, before: Plant, after: Plant, *, switch_after_steps: int) -> None:
        if before.kv_blocks_total != after.kv_blocks_total or before.block_size != after.block_size:
            raise ValueError("DriftingPlant: both plants must have the same KV capacity and block size")
        self.before, self.after = before, after
        self.switch_after_steps = int(switch_after_steps)
        self.steps = 0
        self.name = f"{before.name}->{after.name}@{self.switch_after_steps}"

    def __getattr__(self, item: str) -> Any:
        return getattr(self.before, item)

    def step_s(
        self, num_decode_seqs: int, num_prefill_tokens: int, num_context_tokens: int = 0, num_idle_seqs: int = 0
    ) -> float:
        """Step time of the plant in force (counts the call as one engine step)."""
        plant = self.before if self.steps < self.switch_after_steps else self.after
        self.steps += 1
        return plant.step_s(num_decode_seqs, num_prefill_tokens, num_context_tokens, num_idle_seqs)

    def as_plant(self) -> Plant:
        """Return this object typed as the engine's plant (it has the interface ``simulate`` uses)."""
        return cast(Plant, self)
