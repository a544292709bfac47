"""The field-by-field schema of policy files (``docs/validation.md``), types included.

:func:`check_common` checks what every ``controlkit.policy/2`` file holds (``slos``, ``limits``,
``sample_period_s``, ``uncertified``) with :class:`Field` specs; the typed params of the kinds
that ``controlkit design`` writes are checked with the same specs by
:mod:`controlkit.policyparams`, and the baseline kinds check their own params
(``policies.baselines._params``).  A bool is not a number, a number must be finite and inside
its range, a string must be one of its choices.

Examples
--------
>>> check_value(3, Field("str", choices=("tpot", "ttft")), "params.priority", "<memory>")
Traceback (most recent call last):
...
identification.errors.PolicyError: <memory>: field 'params.priority' must be one of ['tpot', 'ttft'], got 3
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from identification.errors import PolicyError

__all__ = ["LIMIT_FIELDS", "SLO_FIELDS", "Field", "check_common", "check_value"]

_ECHO = 60  # longest echoed value (characters)


@dataclass(frozen=True, slots=True)
class Field:
    """One field: ``kind`` is ``int``, ``num``, ``str`` or ``bool``; ``lo``/``hi`` inclusive bounds."""

    kind: str
    lo: float = -math.inf
    hi: float = math.inf
    choices: tuple[str, ...] = ()
    optional: bool = True
    nullable: bool = False


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _ECHO else text[: _ECHO - 3] + "..."


def check_value(value: Any, spec: Field, name: str, source: str) -> None:
    """Raise :class:`PolicyError` unless ``value`` fits ``spec`` (named ``name`` in ``source``)."""
    if value is None and spec.nullable:
        return
    where = f"{source}: field {name!r}"
    if spec.kind == "bool":
        if not isinstance(value, bool):
            raise PolicyError(f"{where} must be true or false, got {_show(value)}")
        return
    if spec.kind == "str":
        if not isinstance(value, str) or (spec.choices and value not in spec.choices):
            expected = f"one of {list(spec.choices)}" if spec.choices else "a string"
            raise PolicyError(f"{where} must be {expected}, got {_show(value)}")
        return
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if spec.kind == "int" and not is_int:
        raise PolicyError(f"{where} must be an integer (not a bool, string or fraction), got {_show(value)}")
    if not (is_int or (isinstance(value, float) and math.isfinite(value))):
        raise PolicyError(f"{where} must be a finite number (not a bool or string), got {_show(value)}")
    if not spec.lo <= value <= spec.hi:
        raise PolicyError(f"{where} = {_show(value)} is outside its range [{spec.lo:g}, {spec.hi:g}]")


def _check_fields(doc: Mapping[str, Any], fields: Mapping[str, Field], prefix: str, source: str) -> None:
    for key, spec in fields.items():
        if key in doc:
            check_value(doc[key], spec, f"{prefix}{key}", source)
        elif not spec.optional:
            raise PolicyError(f"{source}: field {prefix + key!r} is missing")


def _unknown(doc: Mapping[str, Any], known: Mapping[str, Any], prefix: str, source: str) -> None:
    extra = sorted(str(k) for k in doc if k not in known)
    if extra:
        raise PolicyError(f"{source}: unknown field(s) {[prefix + k for k in extra][:5]}; known: {sorted(known)}")


#: An SLO is a time in seconds: > 0 and finite (a week at most).
_SLO = Field("num", lo=1e-6, hi=7 * 86400.0)
SLO_FIELDS: dict[str, Field] = {"tpot_s": _SLO, "ttft_s": _SLO, "e2e_s": _SLO, "itl_s": _SLO}
_SEQS = Field("int", lo=1, hi=1_000_000)
LIMIT_FIELDS: dict[str, Field] = {
    "b_min": _SEQS,
    "b_max": _SEQS,
    "rate_limit": _SEQS,
    "max_batched_tokens": Field("int", lo=1, hi=10**9),
}
#: The decision period: positive and at most an hour.
SAMPLE_PERIOD = Field("num", lo=1e-6, hi=3600.0, optional=False)


def check_common(doc: Mapping[str, Any], source: str) -> None:
    """Check the fields every policy file shares (raises :class:`PolicyError` naming the field)."""
    slos, limits = doc.get("slos", {}), doc.get("limits", {})
    _unknown(slos, SLO_FIELDS, "slos.", source)
    _check_fields(slos, SLO_FIELDS, "slos.", source)
    _unknown(limits, LIMIT_FIELDS, "limits.", source)
    _check_fields(limits, LIMIT_FIELDS, "limits.", source)
    if "b_min" in limits and "b_max" in limits and limits["b_min"] > limits["b_max"]:
        raise PolicyError(f"{source}: limits.b_min = {limits['b_min']} is above limits.b_max = {limits['b_max']}")
    if "sample_period_s" in doc:
        check_value(doc["sample_period_s"], SAMPLE_PERIOD, "sample_period_s", source)
    if "uncertified" in doc:
        check_value(doc["uncertified"], Field("bool"), "uncertified", source)
