"""Typed parameters of the designed policy kinds (``pid``, ``pid-adaptive``, ``optimal``, ``mpc``).

``controlkit design`` writes them, and the runtime policies, ``controlkit certify`` and the
exporter read them, through one parser per kind: :func:`read_params` returns a frozen dataclass
whose every field was checked (type, range, choices; a bool is not a number) and names the
field of the first bad value.

Schema ``controlkit.policy/2`` stores each quantity once:

* the TPOT target is ``target_fraction`` x ``slos.tpot_s`` (``/1`` also stored it as
  ``params.setpoint_s``, ``params.model.tpot_target_s`` and ``params.tpot_target_s``);
* the rate limit is ``limits.rate_limit`` and the decision period the file's
  ``sample_period_s`` (``/1`` repeated both inside ``params.controller``);
* the token budget is ``limits.max_batched_tokens`` (``/1`` repeated it as
  ``params.max_batched_tokens``).

:func:`migrate_params` reads the ``/1`` layout: a repeated value must agree with the one kept
(else :class:`PolicyError` names both fields), and is then dropped.

Examples
--------
>>> p = read_params("optimal", {"max_num_seqs": 64}, {"tpot_s": 0.05}, {}, 0.05, "<memory>")
>>> p.max_num_seqs, round(p.tpot_target_s, 6)
(64, 0.045)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from controlkit.admission import LATE_ACTIONS
from controlkit.policyschema import Field, check_value
from identification.errors import PolicyError

__all__ = [
    "DESIGNED_KINDS", "GuardParams", "MpcParams", "OptimalParams", "PidParams", "SlopeModel", "StepCap",
    "migrate_params", "params_dict", "read_params",
]

_SEQS = Field("int", lo=1, hi=1_000_000)
_POS_S = Field("num", lo=1e-9, hi=3600.0)
_PRIORITY = Field("str", choices=("tpot", "ttft"))
_FRACTION = Field("num", lo=1e-3, hi=1.0)


def _spec(spec: Field, default: Any = None, *, required: bool = False) -> Any:
    """Declare a dataclass field checked against ``spec`` when parsed (``required``: no default)."""
    meta = {"spec": spec}
    return field(metadata=meta) if required else field(default=default, metadata=meta)


def _parse(cls: type[Any], doc: Any, prefix: str, source: str) -> Any:
    """Build ``cls`` from the mapping ``doc``; unknown fields and bad values raise PolicyError."""
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: field {prefix.rstrip('.')!r} must be an object, got {type(doc).__name__}")
    known = {f.name: f for f in fields(cls)}
    extra = sorted(str(k) for k in doc if k not in known)
    if extra:
        raise PolicyError(f"{source}: unknown field(s) {[prefix + k for k in extra][:5]}; known: {sorted(known)}")
    values: dict[str, Any] = {}
    for name, f in known.items():
        if name not in doc:
            if "spec" in f.metadata and f.default is MISSING:
                raise PolicyError(f"{source}: field {prefix + name!r} is missing")
            continue
        value = doc[name]
        if "section" in f.metadata:
            values[name] = None if value is None else _parse(f.metadata["section"], value, f"{prefix}{name}.", source)
        elif "spec" in f.metadata:
            spec: Field = f.metadata["spec"]
            check_value(value, spec, prefix + name, source)
            values[name] = float(value) if spec.kind == "num" and value is not None else value
        else:  # free-form sub-document, checked by its own reader
            values[name] = value
    return cls(**values)


def _dump(obj: Any) -> dict[str, Any]:
    """Return the JSON form of a params dataclass (``None`` sections and fields left out)."""
    out: dict[str, Any] = {}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value is None or f.metadata.get("derived"):
            continue
        out[f.name] = _dump(value) if "section" in f.metadata else (list(value) if isinstance(value, tuple) else value)
    return out


@dataclass(frozen=True, slots=True)
class GuardParams:
    """The admission guard's workload numbers (:class:`controlkit.admission.AdmissionGuard`)."""

    output_tokens_mean: float = _spec(Field("num", lo=0.0, hi=1e8), 256.0)
    kv_headroom: float = _spec(Field("num", lo=0.0, hi=0.99), 0.05)
    prefill_s_per_token: float = _spec(Field("num", lo=0.0, hi=10.0), 0.0)
    peak_z: float = _spec(Field("num", lo=0.0, hi=100.0), 2.0)
    late_action: str = _spec(Field("str", choices=LATE_ACTIONS), "demote")


@dataclass(frozen=True, slots=True)
class SlopeModel:
    """The model behind the measured-slope limit: ``intercept_s + k_eff_s_per_seq * batch``."""

    intercept_s: float = _spec(Field("num", lo=0.0, hi=3600.0), required=True)
    k_eff_s_per_seq: float = _spec(Field("num", lo=0.0, hi=3600.0), required=True)


@dataclass(frozen=True, slots=True)
class StepCap:
    """The step-capped token budget of ``optimal`` (every step within ``step_cap_s``)."""

    batch: int = _spec(_SEQS, required=True)
    max_batched_tokens: int = _spec(Field("int", lo=1, hi=10**9), required=True)
    step_cap_s: float = _spec(_POS_S, required=True)
    prompt_tokens_mean: float = _spec(Field("num", lo=0.0, hi=1e8), 0.0)


_CONTROLLER = {"kp": Field("num", lo=-1e12, hi=1e12, optional=False),
               "ki": Field("num", lo=-1e12, hi=1e12, optional=False), "kd": Field("num", lo=-1e12, hi=1e12),
               "derivative_filter_s": Field("num", lo=0.0, hi=3600.0),
               "anti_windup": Field("str", choices=("conditional", "back_calculation")),
               "tracking_gain": Field("num", lo=0.0, hi=1e6)}
_FILTER = {"kind": Field("str", choices=("ema", "quantile", "none")), "alpha": Field("num", lo=0.0, hi=1.0),
           "window": Field("int", lo=1, hi=100_000), "quantile": Field("num", lo=0.0, hi=1.0)}


def _check_controller(doc: Any, source: str) -> dict[str, Any]:
    """Check the PID gains section (``params.controller``) field by field."""
    where = "params.controller."
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: field 'params.controller' must be an object, got {type(doc).__name__}")
    for key, spec in _CONTROLLER.items():
        if key in doc:
            check_value(doc[key], spec, where + key, source)
        elif not spec.optional:
            raise PolicyError(f"{source}: field {where + key!r} is missing")
    extra = sorted(set(doc) - set(_CONTROLLER) - {"filter"})
    if extra:
        raise PolicyError(f"{source}: unknown field(s) {[where + k for k in extra][:5]}; known: "
                          f"{sorted([*_CONTROLLER, 'filter'])}")
    filt = doc.get("filter", {})
    if not isinstance(filt, Mapping):
        raise PolicyError(f"{source}: field 'params.controller.filter' must be an object")
    for key, spec in _FILTER.items():
        if key in filt:
            check_value(filt[key], spec, f"{where}filter.{key}", source)
    return dict(doc)


@dataclass(frozen=True, slots=True)
class PidParams:
    """``pid`` and ``pid-adaptive``: gains, TPOT target, guard, slope model (and the schedule).

    ``controller`` holds the gains and filter; :meth:`controller_doc` adds the rate limit and
    the decision period, which the file stores once (``limits.rate_limit``, ``sample_period_s``).
    """

    controller: Mapping[str, Any] = field(default_factory=dict)
    target_fraction: float = _spec(_FRACTION, 0.9)
    priority: str = _spec(_PRIORITY, "tpot")
    measurement: str = _spec(Field("str", choices=("step", "itl")), "step")
    reference_batch: int | None = _spec(_SEQS, None)
    tuning: str = _spec(Field("str", choices=("robust", "simc")), "robust")
    guard: GuardParams | None = field(default=None, metadata={"section": GuardParams})
    model: SlopeModel | None = field(default=None, metadata={"section": SlopeModel})
    schedule: Mapping[str, Any] | None = None
    tpot_target_s: float = field(default=math.nan, metadata={"derived": True})
    rate_limit: int = field(default=8, metadata={"derived": True})
    sample_period_s: float = field(default=0.05, metadata={"derived": True})

    def controller_doc(self) -> dict[str, Any]:
        """Return the whole controller (gains, rate limit, decision period) for ``ControllerSpec.from_dict``."""
        return dict(self.controller) | {"rate_limit": self.rate_limit, "sample_period_s": self.sample_period_s}


@dataclass(frozen=True, slots=True)
class OptimalParams:
    """``optimal``: the operating point's cap, the guard, the derating model, the step cap."""

    max_num_seqs: int = _spec(_SEQS, required=True)
    target_fraction: float = _spec(_FRACTION, 0.9)
    priority: str = _spec(_PRIORITY, "tpot")
    guard: GuardParams | None = field(default=None, metadata={"section": GuardParams})
    model: SlopeModel | None = field(default=None, metadata={"section": SlopeModel})
    step_cap: StepCap | None = field(default=None, metadata={"section": StepCap})
    tpot_target_s: float = field(default=math.nan, metadata={"derived": True})


@dataclass(frozen=True, slots=True)
class MpcParams:
    """``mpc``: the prediction model, the candidate budgets and the soft TPOT target."""

    cap_upper: int = _spec(_SEQS, required=True)
    intercept_s: float = _spec(Field("num", lo=0.0, hi=3600.0), required=True)
    k_max: float = _spec(Field("num", lo=0.0, hi=3600.0), required=True)
    prompt_tokens_mean: float = _spec(Field("num", lo=0.0, hi=1e8), required=True)
    output_tokens_mean: float = _spec(Field("num", lo=0.0, hi=1e8), required=True)
    budgets: tuple[int, ...] = field(default=())
    horizon: int = _spec(Field("int", lo=1, hi=1000), 8)
    prefill_s_per_token: float = _spec(Field("num", lo=0.0, hi=10.0), 0.0)
    reference_batch: int | None = _spec(_SEQS, None)
    every_k: int = _spec(Field("int", lo=1, hi=10_000), 1)
    target_fraction: float = _spec(_FRACTION, 0.9)
    priority: str = _spec(_PRIORITY, "tpot")
    guard: GuardParams | None = field(default=None, metadata={"section": GuardParams})
    tpot_target_s: float = field(default=math.nan, metadata={"derived": True})


def _budgets(raw: Any, source: str) -> tuple[int, ...]:
    if not isinstance(raw, list | tuple) or not raw or len(raw) > 64:
        raise PolicyError(f"{source}: field 'params.budgets' must be a list of 1..64 token budgets")
    for i, b in enumerate(raw):
        check_value(b, Field("int", lo=1, hi=10**9), f"params.budgets[{i}]", source)
    return tuple(int(b) for b in raw)


_TYPES: dict[str, type[Any]] = {"pid": PidParams, "pid-adaptive": PidParams, "optimal": OptimalParams,
                                "mpc": MpcParams}
#: The kinds ``controlkit design`` writes, whose params are typed here.
DESIGNED_KINDS: tuple[str, ...] = tuple(_TYPES)


def _agree(value: Any, kept: Any, legacy: str, kept_name: str, source: str) -> None:
    """Check that a ``/1`` repeated value equals the one ``/2`` keeps (relative 1e-9 for numbers)."""
    same = value == kept
    if not same and isinstance(value, int | float) and isinstance(kept, int | float):
        same = math.isclose(float(value), float(kept), rel_tol=1e-9, abs_tol=0.0)
    if not same:
        raise PolicyError(f"{source}: field {legacy!r} = {value!r} disagrees with {kept_name} = {kept!r}; "
                          "controlkit.policy/2 stores it once (remove the repeated field)")


def _fraction_from(target_s: Any, tpot_s: float | None, fraction: Any, legacy: str, source: str) -> float:
    """Return the target fraction a ``/1`` absolute TPOT target implies (checked against a stated one)."""
    if not isinstance(target_s, int | float) or isinstance(target_s, bool) or tpot_s is None:
        raise PolicyError(f"{source}: field {legacy!r} must be a number with slos.tpot_s set, got {target_s!r}")
    base = 0.9 if fraction is None else float(fraction)
    if math.isclose(base * tpot_s, float(target_s), rel_tol=1e-9):
        return base
    if fraction is not None:
        _agree(target_s, base * tpot_s, legacy, "params.target_fraction x slos.tpot_s", source)
    return float(target_s) / tpot_s


def migrate_params(
    kind: str, params: Mapping[str, Any], slos: Mapping[str, Any], limits: Mapping[str, Any],
    sample_period_s: float, source: str,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Turn ``/1`` params (and limits) of a designed kind into the ``/2`` layout.

    Returns ``(params, limits)``; other kinds come back unchanged.  A repeated value that
    disagrees with the one kept raises :class:`PolicyError` naming both.
    """
    p, lim = dict(params), dict(limits)
    if kind not in _TYPES:
        return p, lim
    tpot = slos.get("tpot_s")
    tokens = p.pop("max_batched_tokens", None)
    if tokens is not None:
        if "max_batched_tokens" in lim:
            _agree(tokens, lim["max_batched_tokens"], "params.max_batched_tokens", "limits.max_batched_tokens", source)
        else:
            lim["max_batched_tokens"] = tokens
    p.pop("operating_point", None)  # a report of the design (never read back): /2 writes it to meta
    names = {"setpoint_s": "params.setpoint_s", "tpot_target_s": "params.tpot_target_s"}
    model = p.get("model")
    if isinstance(model, Mapping) and "tpot_target_s" in model:
        model = dict(model)
        target = model.pop("tpot_target_s")
        p["model"] = model
        if kind in ("pid", "pid-adaptive") and "setpoint_s" not in p:
            p["setpoint_s"], names["setpoint_s"] = target, "params.model.tpot_target_s"
        elif kind in ("pid", "pid-adaptive"):
            _agree(target, p["setpoint_s"], "params.model.tpot_target_s", "params.setpoint_s", source)
        elif "tpot_target_s" not in p:
            p["tpot_target_s"], names["tpot_target_s"] = target, "params.model.tpot_target_s"
        else:
            _agree(target, p["tpot_target_s"], "params.model.tpot_target_s", "params.tpot_target_s", source)
    for legacy in ("setpoint_s", "tpot_target_s"):
        if legacy in p:
            fraction = _fraction_from(p.pop(legacy), tpot, p.get("target_fraction"), names[legacy], source)
            if fraction != 0.9 or "target_fraction" in p:
                p["target_fraction"] = fraction
    ctrl = p.get("controller")
    if kind in ("pid", "pid-adaptive") and isinstance(ctrl, Mapping):
        ctrl = dict(ctrl)
        if "rate_limit" in ctrl:
            rate = ctrl.pop("rate_limit")
            if "rate_limit" in lim:
                _agree(rate, lim["rate_limit"], "params.controller.rate_limit", "limits.rate_limit", source)
            else:
                lim["rate_limit"] = rate
        if "sample_period_s" in ctrl:
            _agree(ctrl.pop("sample_period_s"), sample_period_s, "params.controller.sample_period_s",
                   "sample_period_s", source)
        p["controller"] = ctrl
    return p, lim


def read_params(
    kind: str, params: Mapping[str, Any], slos: Mapping[str, Any], limits: Mapping[str, Any],
    sample_period_s: float, source: str,
) -> Any:
    """Parse the params of a designed kind (``/1`` or ``/2`` layout) into its dataclass.

    Raises
    ------
    PolicyError
        ``kind`` is not a designed kind, or a field is missing, unknown or out of range.
    """
    cls = _TYPES.get(kind)
    if cls is None:
        raise PolicyError(f"{source}: kind {kind!r} has no typed params (designed kinds: {', '.join(_TYPES)})")
    p, lim = migrate_params(kind, params, slos, limits, sample_period_s, source)
    special: dict[str, Callable[[Any], Any]] = {}
    if cls is PidParams:
        if "controller" not in p:
            raise PolicyError(f"{source}: field 'params.controller' is missing")
        special = {"controller": lambda v: _check_controller(v, source)}
        if kind == "pid-adaptive" and not isinstance(p.get("schedule"), Mapping):
            raise PolicyError(f"{source}: field 'params.schedule' must be an object (design_adaptive_pid)")
        if kind == "pid" and "schedule" in p:
            raise PolicyError(f"{source}: unknown field(s) ['params.schedule'] for kind 'pid'")
    if cls is MpcParams:
        special = {"budgets": lambda v: _budgets(v, source)}
    checked = {k: special[k](v) for k, v in p.items() if k in special}
    parsed = _parse(cls, {k: v for k, v in p.items() if k not in special}, "params.", source)
    tpot = slos.get("tpot_s")
    derived: dict[str, Any] = dict(checked)
    if tpot is not None:
        derived["tpot_target_s"] = parsed.target_fraction * float(tpot)
    if cls is PidParams:
        rate = lim.get("rate_limit", 8)
        check_value(rate, _SEQS, "limits.rate_limit", source)
        derived |= {"rate_limit": int(rate), "sample_period_s": float(sample_period_s)}
    if cls is MpcParams and "budgets" not in derived:
        raise PolicyError(f"{source}: field 'params.budgets' must be a list of 1..64 token budgets")
    return type(parsed)(**({f.name: getattr(parsed, f.name) for f in fields(parsed)} | derived))


def params_dict(params: Any) -> dict[str, Any]:
    """Return the ``/2`` JSON form of typed params (derived quantities left out)."""
    return _dump(params)
