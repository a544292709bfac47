"""Hyper-parameters of the runtime policies: declared once, checked once.

Every policy keeps its hyper-parameters in a frozen dataclass whose fields are made with
:func:`param`, which records the default, the allowed range (or choices) and a one-line
description.  :func:`check_params` (called from each dataclass's ``__post_init__``) checks
types and bounds, and :func:`parse_params` turns the ``params`` mapping of a policy file or
spec string into the dataclass, rejecting unknown names with the list of valid ones.

Examples
--------
>>> from dataclasses import dataclass
>>> @dataclass(frozen=True, slots=True)
... class DemoParams:
...     KIND = "demo"
...     gain: float = param(0.5, kind="float", lo=0.0, hi=1.0, doc="a gain")
...     def __post_init__(self) -> None:
...         check_params(self)
>>> parse_params(DemoParams, {"gain": 1}).gain
1.0
>>> parse_params(DemoParams, {"gian": 1})
Traceback (most recent call last):
...
identification.errors.PolicyError: demo: unknown parameter 'gian'; valid parameters: gain
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import field, fields
from typing import Any, TypeVar

from identification.errors import PolicyError

__all__ = ["check_params", "clamp", "param", "param_table", "parse_params", "resolve_cap"]

T = TypeVar("T")

_KINDS = ("int", "int?", "float", "float?", "bool", "str")


def param(
    default: Any,
    *,
    kind: str,
    lo: float | None = None,
    hi: float | None = None,
    choices: tuple[str, ...] = (),
    doc: str = "",
) -> Any:
    """Declare one hyper-parameter (a dataclass field) with its default and bounds.

    Parameters
    ----------
    default
        The default value (``None`` for optional kinds means "taken from the engine context").
    kind
        One of ``"int"``, ``"int?"`` (int or None), ``"float"``, ``"float?"``, ``"bool"``, ``"str"``.
    lo, hi
        Inclusive bounds for numbers (``None``: unbounded on that side).
    choices
        Allowed values for ``"str"`` parameters (empty: any string).
    doc
        One-line description, used in error messages and docs.
    """
    if kind not in _KINDS:
        raise ValueError(f"unknown parameter kind {kind!r}")
    return field(default=default, metadata={"kind": kind, "lo": lo, "hi": hi, "choices": choices, "doc": doc})


def _kind_name(obj: object) -> str:
    return str(getattr(obj, "KIND", type(obj).__name__))


def _range_text(lo: float | None, hi: float | None) -> str:
    return f"[{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def check_params(obj: object) -> None:
    """Check every field of a params dataclass against its declared kind and bounds.

    Raises
    ------
    PolicyError
        Naming the policy kind, the parameter, the value and the allowed range.
    """
    kind_name = _kind_name(obj)
    for f in fields(obj):  # type: ignore[arg-type]  # obj is a dataclass instance by contract
        meta = f.metadata
        if "kind" not in meta:
            continue
        value = getattr(obj, f.name)
        kind = meta["kind"]
        where = f"{kind_name}: parameter {f.name}={value!r}"
        if value is None and kind.endswith("?"):
            continue
        base = kind.rstrip("?")
        if base == "bool":
            if not isinstance(value, bool):
                raise PolicyError(f"{where} must be true or false")
            continue
        if base == "str":
            if not isinstance(value, str):
                raise PolicyError(f"{where} must be a string")
            if meta["choices"] and value not in meta["choices"]:
                raise PolicyError(f"{where} must be one of {', '.join(meta['choices'])}")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PolicyError(f"{where} must be a number ({base}) in {_range_text(meta['lo'], meta['hi'])}")
        if base == "int" and not isinstance(value, int):
            raise PolicyError(f"{where} must be an integer in {_range_text(meta['lo'], meta['hi'])}")
        if not math.isfinite(value):
            raise PolicyError(f"{where} must be finite, in {_range_text(meta['lo'], meta['hi'])}")
        lo, hi = meta["lo"], meta["hi"]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise PolicyError(f"{where} is outside the allowed range {_range_text(lo, hi)}")


def _coerce(value: Any, kind: str) -> Any:
    """Convert JSON-ish values to the declared kind where that loses nothing."""
    base = kind.rstrip("?")
    if value is None or isinstance(value, bool):
        return value
    if base == "float" and isinstance(value, int):
        return float(value)
    if base == "int" and isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    return value


def parse_params(cls: type[T], raw: Mapping[str, Any]) -> T:
    """Build the params dataclass ``cls`` from a mapping, rejecting unknown names.

    Parameters
    ----------
    cls
        A frozen dataclass whose fields were declared with :func:`param`.
    raw
        The ``params`` of a policy file or spec string.

    Raises
    ------
    PolicyError
        Unknown parameter names (listing the valid ones), or a bad value.
    """
    declared = {f.name: f for f in fields(cls) if "kind" in f.metadata}  # type: ignore[arg-type]
    kind_name = _kind_name(cls)
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{kind_name}: params must be a mapping, got {type(raw).__name__}")
    for name in raw:
        if name not in declared:
            raise PolicyError(
                f"{kind_name}: unknown parameter {name!r}; valid parameters: {', '.join(sorted(declared))}"
            )
    values = {name: _coerce(value, declared[name].metadata["kind"]) for name, value in raw.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # pragma: no cover - defensive; names were checked above
        raise PolicyError(f"{kind_name}: bad parameters ({exc})") from None


def param_table(cls: type[Any]) -> str:
    """Return a Markdown table of a params dataclass: name, default, range, description."""
    rows = ["| parameter | default | range | meaning |", "|---|---|---|---|"]
    for f in fields(cls):
        meta = f.metadata
        if "kind" not in meta:
            continue
        rng = ", ".join(meta["choices"]) if meta["choices"] else _range_text(meta["lo"], meta["hi"])
        if meta["kind"] == "bool":
            rng = "true/false"
        rows.append(f"| `{f.name}` | `{f.default!r}` | {rng} | {meta['doc']} |")
    return "\n".join(rows)


def resolve_cap(kind: str, name: str, value: int | None, ceiling: int) -> int:
    """Resolve an optional batch-cap parameter against the engine ceiling.

    ``None`` means "the engine's ``max_num_seqs``"; a value above the ceiling is refused, since
    the engine could never apply it.

    Examples
    --------
    >>> resolve_cap("static", "max_num_seqs", None, 256)
    256
    """
    if value is None:
        return ceiling
    if value > ceiling:
        raise PolicyError(
            f"{kind}: parameter {name}={value} is above the engine's max_num_seqs={ceiling}; "
            f"use a value in [1, {ceiling}] or raise the engine's max_num_seqs"
        )
    return value


def clamp(value: int, lo: int, hi: int) -> int:
    """Clamp ``value`` into ``[lo, hi]`` (``hi`` wins when ``lo > hi``)."""
    return min(max(value, lo), hi)
