"""KV-cache bounds of the admission guard: what the running batch will need at its peak.

:class:`SumKV` bounds the blocks by every running request reaching its expected length at
once; :class:`PeakKV` by the expected peak of the sum over a few horizons, ``z`` standard
deviations up, as requests finish and free their blocks (``docs/theory.md`` §5).  Both answer
how many waiting prompts, taken in order, still fit (:meth:`SumKV.prefix_fit`).
"""

from __future__ import annotations

import math

import numpy as np

from controlkit.contract import Observation

__all__ = ["PeakKV", "SumKV"]


#: Horizons (multiples of the mean remaining output) at which the expected-peak bound is taken.
_PEAK_HORIZONS = np.array([0.0, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0])


class SumKV:
    """The sum bound ``K(a)`` of the module docstring: every request's full expected growth at once."""

    #: A backfill step is O(1) here, so the scan past a misfit is not bounded.
    scan: int | None = None

    def __init__(self, obs: Observation, r_tokens: float) -> None:
        self.bs = max(obs.block_size, 1)
        self.grow = math.ceil(r_tokens / self.bs)
        self.kv = float(obs.kv_blocks_used + obs.num_running * self.grow)

    def bound_blocks(self, prompt_tokens: float | None = None) -> float:
        """Return the bound now, or after admitting one more prompt (blocks)."""
        return self.kv if prompt_tokens is None else self.kv + math.ceil(prompt_tokens / self.bs) + self.grow

    def add(self, prompt_tokens: float) -> None:
        """Admit one prompt."""
        self.kv = self.bound_blocks(prompt_tokens)

    def prefix_fit(self, prompts: list[float], usable_blocks: float) -> tuple[int, float]:
        """How many leading ``prompts`` fit together, and the bound then."""
        k = 0
        for p in prompts:
            nxt = self.bound_blocks(p)
            if nxt > usable_blocks:
                break
            self.kv = nxt
            k += 1
        return k, self.kv


class PeakKV:
    """Expected peak KV of the running set plus admissions, with ``z`` standard deviations.

    Each request's remaining output is memoryless with mean ``r`` (the guard's model): after
    ``h`` more decode steps it still runs with probability ``q**h`` (``q = 1 - 1/r``), holding
    ``c + h`` tokens, else it has finished and freed its blocks.  Summed over requests, the KV
    at ``h`` has mean ``sum (c + h) q**h`` and variance ``sum (c + h)**2 q**h (1 - q**h)``; the
    bound is ``max_h mean + z sd`` in blocks (plus one partial block per live request).  The
    running requests' contexts are taken equal (``C / n``; the engine reports totals only).
    """

    #: Late requests scanned past a misfit by the backfill (bounds its cost per decision).
    scan: int | None = 64

    def __init__(self, obs: Observation, r_tokens: float, z: float) -> None:
        self.bs = float(max(obs.block_size, 1))
        self.z = z
        r = max(r_tokens, 1.0)
        self.h = _PEAK_HORIZONS * r
        self.q = (1.0 - 1.0 / (r + 1.0)) ** self.h
        n = max(obs.num_running, 0)
        c = obs.kv_blocks_used * self.bs / n if n else 0.0
        self.mean = n * (c + self.h) * self.q
        self.var = n * (c + self.h) ** 2 * self.q * (1.0 - self.q)
        self.count = n * self.q

    def _with(self, prompt_tokens: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, variance and live count after admitting one prompt of ``prompt_tokens``."""
        held = prompt_tokens + self.h
        return self.mean + held * self.q, self.var + held**2 * self.q * (1.0 - self.q), self.count + self.q

    def bound_blocks(self, prompt_tokens: float | None = None) -> float:
        """Return the bound now, or after admitting one more prompt (blocks)."""
        mean, var, count = (self.mean, self.var, self.count) if prompt_tokens is None else self._with(prompt_tokens)
        return float(np.max((mean + self.z * np.sqrt(var)) / self.bs + count))

    def add(self, prompt_tokens: float) -> None:
        """Admit one prompt."""
        self.mean, self.var, self.count = self._with(prompt_tokens)

    def prefix_fit(self, prompts: list[float], usable_blocks: float) -> tuple[int, float]:
        """How many leading ``prompts`` fit together (the bound grows with each), and the bound then.

        Vectorised over the prefixes: ``O(len(prompts) x horizons)`` array work, no Python loop.
        """
        if not prompts:
            return 0, self.bound_blocks()
        p = np.asarray(prompts, dtype=float)
        a = np.arange(1, len(p) + 1, dtype=float)[:, None]
        s1, s2 = np.cumsum(p)[:, None], np.cumsum(p * p)[:, None]
        h, q = self.h[None, :], self.q[None, :]
        mean = self.mean[None, :] + q * (s1 + a * h)
        var = self.var[None, :] + q * (1.0 - q) * (s2 + 2.0 * h * s1 + a * h * h)
        bound = np.max((mean + self.z * np.sqrt(var)) / self.bs + self.count[None, :] + a * q, axis=1)
        k = int(np.searchsorted(bound > usable_blocks, True))  # bound is increasing in the prefix
        if k:
            self.mean, self.var = mean[k - 1], var[k - 1]
            self.count = self.count + k * self.q
        return k, float(bound[k - 1]) if k else self.bound_blocks()
