"""The certificate data model: named claims, the assumptions they rest on, and the numbers.

A certificate is data in the policy file (``certificate`` field).  Each :class:`Claim` says
what was checked, whether it holds, the computed value, the required threshold and the
margin between them (positive when the claim holds), so a failed claim reads as "which
claim, by how much".

Examples
--------
>>> c = Certificate((Claim("poles_inside_unit_circle", True, 0.93, 1.0, 0.07, "spectral radius"),),
...                 assumptions={"k_min": 1e-4})
>>> c.holds, Certificate.from_dict(c.to_dict()) == c
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Certificate", "Claim", "LoopMargins"]

CERTIFICATE_SCHEMA = "controlkit.certificate/1"


def _json_num(x: float) -> float | str:
    return x if math.isfinite(x) else ("inf" if x > 0 else "-inf" if x < 0 else "nan")


def _from_json_num(x: Any) -> float:
    return float(x)


@dataclass(frozen=True, slots=True)
class Claim:
    """One checkable claim.

    Parameters
    ----------
    name
        Stable identifier, e.g. ``"poles_inside_unit_circle"``.
    holds
        Whether the claim holds under the certificate's assumptions.
    value
        The computed number (e.g. the worst spectral radius).
    threshold
        The bound it is compared with.
    margin
        How far inside the bound (positive) or outside (negative), in ``unit``.
    unit
        What ``value`` measures.
    detail
        One line: where the worst case sits, how it was computed.
    """

    name: str
    holds: bool
    value: float
    threshold: float
    margin: float
    unit: str = ""
    detail: str = ""

    def line(self) -> str:
        """Return a one-line human summary."""
        mark = "ok  " if self.holds else "FAIL"
        return (
            f"{mark} {self.name}: {self.value:.4g} vs {self.threshold:.4g} {self.unit} "
            f"(margin {self.margin:+.3g}){' - ' + self.detail if self.detail else ''}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form (infinities as strings)."""
        return {
            "name": self.name,
            "holds": self.holds,
            "value": _json_num(self.value),
            "threshold": _json_num(self.threshold),
            "margin": _json_num(self.margin),
            "unit": self.unit,
            "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Claim:
        """Inverse of :meth:`to_dict`."""
        return cls(
            str(d["name"]),
            bool(d["holds"]),
            _from_json_num(d["value"]),
            _from_json_num(d["threshold"]),
            _from_json_num(d["margin"]),
            str(d.get("unit", "")),
            str(d.get("detail", "")),
        )


@dataclass(frozen=True, slots=True)
class LoopMargins:
    """Gain and phase margins of one loop (python-control's 6-tuple, named).

    ``gain_margin_db`` is ``inf`` when the phase never crosses -180 degrees.
    """

    gain_margin_db: float
    phase_margin_deg: float
    stability_margin: float
    phase_crossover_rad_s: float
    gain_crossover_rad_s: float
    slope: float = 0.0
    delay: int = 0


@dataclass(frozen=True)
class Certificate:
    """Claims, the assumptions they rest on, and the numbers behind them."""

    claims: tuple[Claim, ...]
    assumptions: Mapping[str, Any] = field(default_factory=dict)
    numbers: Mapping[str, Any] = field(default_factory=dict)

    @property
    def holds(self) -> bool:
        """True when every claim holds."""
        return all(c.holds for c in self.claims)

    @property
    def failed(self) -> tuple[Claim, ...]:
        """The claims that do not hold."""
        return tuple(c for c in self.claims if not c.holds)

    def claim(self, name: str) -> Claim:
        """Return the claim called ``name`` (KeyError if absent)."""
        for c in self.claims:
            if c.name == name:
                return c
        raise KeyError(name)

    def summary(self) -> str:
        """Human summary, one line per claim."""
        head = (
            "certificate: all claims hold" if self.holds else f"certificate: {len(self.failed)} claim(s) FAIL"
        )
        return "\n".join([head] + ["  " + c.line() for c in self.claims])

    def failure_message(self) -> str:
        """Say what failed and by how much, for :class:`UncertifiedError`."""
        return "; ".join(
            f"claim {c.name!r} fails: {c.value:.4g} vs required {c.threshold:.4g} {c.unit} "
            f"(short by {abs(c.margin):.3g}){' - ' + c.detail if c.detail else ''}"
            for c in self.failed
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON form for the policy file."""
        return {
            "schema": CERTIFICATE_SCHEMA,
            "holds": self.holds,
            "claims": [c.to_dict() for c in self.claims],
            "assumptions": dict(self.assumptions),
            "numbers": dict(self.numbers),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Certificate:
        """Inverse of :meth:`to_dict`."""
        return cls(
            tuple(Claim.from_dict(c) for c in d.get("claims", [])),
            dict(d.get("assumptions", {})),
            dict(d.get("numbers", {})),
        )
