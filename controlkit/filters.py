"""Measurement filters for the step-time / ITL signal, and their loop models.

Two filters, both part of the modelled loop (``docs/theory.md`` §2):

* :class:`EMAFilter` ``yf_t = (1 - alpha) yf_{t-1} + alpha y_t``: linear, one state.
* :class:`WindowQuantileFilter`: the ``q``-quantile of the last ``window`` samples.  Its
  output is always one of the window's samples, so in the contraction analysis it is a
  *selector* (one vertex per window position); in the linear pole/margin analysis it is
  represented by the moving-average surrogate of the same window.

:func:`FilterSpec.linear` returns the state-space ``(A, B, C, D)`` of the linear model and
:func:`FilterSpec.selector_models` the vertex models.

Examples
--------
>>> f = EMAFilter(0.5)
>>> [f.update(x) for x in (1.0, 3.0)]
[1.0, 2.0]
>>> q = WindowQuantileFilter(window=3, quantile=0.5)
>>> [q.update(x) for x in (1.0, 9.0, 2.0, 3.0)]
[1.0, 5.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from identification.errors import PolicyError

__all__ = ["EMAFilter", "FilterSpec", "WindowQuantileFilter", "make_filter"]

Matrix = NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class FilterSpec:
    """Which filter, with its parameters.

    Parameters
    ----------
    kind
        ``"ema"`` or ``"quantile"`` (``"none"`` is EMA with ``alpha=1``).
    alpha
        EMA weight of the newest sample, in ``(0, 1]``.
    window
        Window length of the quantile filter (samples, >= 1).
    quantile
        Quantile in ``[0, 1]`` of the quantile filter.
    """

    kind: str = "ema"
    alpha: float = 0.1
    window: int = 5
    quantile: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("ema", "quantile", "none"):
            raise PolicyError(f"filter kind {self.kind!r}: expected 'ema', 'quantile' or 'none'")
        if not (0.0 < self.alpha <= 1.0):
            raise PolicyError(f"filter alpha={self.alpha}: expected 0 < alpha <= 1")
        if self.window < 1:
            raise PolicyError(f"filter window={self.window}: expected an integer >= 1")
        if not (0.0 <= self.quantile <= 1.0):
            raise PolicyError(f"filter quantile={self.quantile}: expected 0 <= quantile <= 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "alpha": self.alpha, "window": self.window, "quantile": self.quantile}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FilterSpec:
        """Inverse of :meth:`to_dict`."""
        return cls(
            kind=str(doc.get("kind", "ema")),
            alpha=float(doc.get("alpha", 0.5)),
            window=int(doc.get("window", 5)),
            quantile=float(doc.get("quantile", 0.5)),
        )

    def linear(self) -> tuple[Matrix, Matrix, Matrix, Matrix]:
        """State-space ``(A, B, C, D)`` from the raw sample to the filtered value."""
        if self.kind == "none":
            z = np.zeros((0, 0))
            return z, np.zeros((0, 1)), np.zeros((1, 0)), np.ones((1, 1))
        if self.kind == "ema":
            a = 1.0 - self.alpha
            return np.array([[a]]), np.array([[self.alpha]]), np.array([[a]]), np.array([[self.alpha]])
        w = self.window
        return _fir(np.full(w, 1.0 / w))

    def selector_models(self) -> list[tuple[Matrix, Matrix, Matrix, Matrix]]:
        """Vertex models: the linear model (EMA) or one selector per window position (quantile)."""
        if self.kind != "quantile":
            return [self.linear()]
        models = []
        for j in range(self.window):
            taps = np.zeros(self.window)
            taps[j] = 1.0
            models.append(_fir(taps))
        return models


def _fir(taps: NDArray[np.float64]) -> tuple[Matrix, Matrix, Matrix, Matrix]:
    """State space of ``yf_t = sum_j taps[j] y_{t-j}`` with state ``(y_{t-1}, ..., y_{t-w+1})``."""
    w = len(taps)
    n = w - 1
    a = np.zeros((n, n))
    if n > 1:
        a[1:, :-1] = np.eye(n - 1)
    b = np.zeros((n, 1))
    if n:
        b[0, 0] = 1.0
    c = taps[1:].reshape(1, n).astype(float)
    d = np.array([[float(taps[0])]])
    return a, b, c, d


class EMAFilter:
    """Exponential moving average; the first sample initialises it (no start-up bias)."""

    def __init__(self, alpha: float) -> None:
        FilterSpec("ema", alpha=alpha)
        self.alpha = float(alpha)
        self._value: float | None = None

    def update(self, sample: float) -> float:
        """Feed one sample; return the filtered value."""
        if self._value is None:
            self._value = float(sample)
        else:
            self._value += self.alpha * (float(sample) - self._value)
        return self._value

    def reset(self) -> None:
        """Forget all samples."""
        self._value = None


class WindowQuantileFilter:
    """The ``quantile`` of the last ``window`` samples (linear interpolation, like numpy)."""

    def __init__(self, window: int, quantile: float) -> None:
        FilterSpec("quantile", window=window, quantile=quantile)
        self.window = int(window)
        self.quantile = float(quantile)
        self._buf: deque[float] = deque(maxlen=self.window)

    def update(self, sample: float) -> float:
        """Feed one sample; return the quantile of the window so far."""
        self._buf.append(float(sample))
        xs = sorted(self._buf)
        pos = self.quantile * (len(xs) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (pos - lo) * (xs[hi] - xs[lo])

    def reset(self) -> None:
        """Forget all samples."""
        self._buf.clear()


def make_filter(spec: FilterSpec) -> EMAFilter | WindowQuantileFilter:
    """Build the runtime filter described by ``spec``."""
    if spec.kind == "quantile":
        return WindowQuantileFilter(spec.window, spec.quantile)
    return EMAFilter(1.0 if spec.kind == "none" else spec.alpha)
