"""The policy file (``controlkit.policy/2``): one JSON document that drives every runtime.

The same file drives the vLLM hook, the simulator, the exporter and any other scheduler.
It holds the policy ``kind`` and its ``params``, the actuator ``limits`` (bounds and rate
limit), the ``slos`` it was designed for, the ``sample_period_s``, and the ``certificate``
(claims, assumptions, numbers), or ``null`` for kinds that carry none (research baselines).

The params of the designed kinds are typed (:mod:`controlkit.policyparams`,
:meth:`PolicyFile.typed_params`) and store each quantity once.  Files of schema
``controlkit.policy/1`` are still read: their repeated values are checked and dropped
(:func:`~controlkit.policyparams.migrate_params`), and they are written back as ``/2``.

Example
-------
>>> pf = PolicyFile(kind="static", params={"max_num_seqs": 64})
>>> PolicyFile.from_dict(pf.to_dict()) == pf
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from controlkit.policyparams import DESIGNED_KINDS, migrate_params, read_params
from controlkit.policyschema import SAMPLE_PERIOD, check_common
from identification.errors import PolicyError
from identification.validation import strict_json

__all__ = ["MAX_POLICY_BYTES", "POLICY_SCHEMA", "POLICY_SCHEMAS_READ", "PolicyFile", "load_policy_file"]

POLICY_SCHEMA = "controlkit.policy/2"
#: Schemas :meth:`PolicyFile.from_dict` reads (``/1`` is migrated on reading).
POLICY_SCHEMAS_READ = ("controlkit.policy/1", POLICY_SCHEMA)
#: Largest policy file read (bytes); designed files are a few kB.
MAX_POLICY_BYTES = 4 * 1024 * 1024


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."




@dataclass(frozen=True)
class PolicyFile:
    """A parsed ``controlkit.policy/2`` document.

    Parameters
    ----------
    kind
        Registered policy kind, e.g. ``"static"``, ``"pid"``, ``"pang-a2"``.
    params
        Kind-specific parameters (JSON-serialisable).
    limits
        Actuator limits: ``b_min``, ``b_max`` (sequences), ``rate_limit`` (sequences per
        decision), ``max_batched_tokens`` and so on.
    slos
        SLOs the policy was designed for, e.g. ``{"tpot_s": 0.05, "ttft_s": 2.0}``.
    sample_period_s
        The decision period the design assumed (seconds; > 0).
    certificate
        The certificate as a JSON mapping, or ``None`` for kinds that carry none.
    uncertified
        True when written with ``--allow-uncertified`` despite a failing claim.
    meta
        Free-form provenance (model file, tool version, time written).
    origin_path
        The file this was read from ("" when built in memory); not written to files.  Side
        files the policy names are resolved against its folder (``policies.tables``).
    """

    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)
    slos: Mapping[str, float] = field(default_factory=dict)
    sample_period_s: float = 0.02
    certificate: Mapping[str, Any] | None = None
    uncertified: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)
    origin_path: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind or len(self.kind) > 64:
            raise PolicyError(f"policy 'kind' must be a non-empty string, got {_show(self.kind)}")
        period = self.sample_period_s
        if isinstance(period, bool) or not (isinstance(period, (int, float)) and math.isfinite(period)):
            raise PolicyError(f"'sample_period_s' must be a finite number, got {_show(period)}")
        if not 0 < period <= SAMPLE_PERIOD.hi:
            raise PolicyError(f"'sample_period_s' must be in (0, {SAMPLE_PERIOD.hi:g}] seconds, got {period}")
        check_common({"slos": self.slos, "limits": self.limits}, "policy")
        if self.kind in DESIGNED_KINDS:  # the /2 layout in memory, whatever was given
            params, limits = migrate_params(self.kind, self.params, self.slos, self.limits, period, "policy")
            object.__setattr__(self, "params", params)
            object.__setattr__(self, "limits", limits)
            check_common({"limits": limits}, "policy")

    def typed_params(self, source: str = "") -> Any:
        """Parse the params of a designed kind into its dataclass (:func:`~controlkit.policyparams.read_params`).

        Raises
        ------
        PolicyError
            The kind is not a designed kind, or a field is missing, unknown or out of range.
        """
        where = source or self.origin_path or f"{self.kind} policy"
        return read_params(self.kind, self.params, self.slos, self.limits, self.sample_period_s, where)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON document (with its ``schema`` tag)."""
        return {
            "schema": POLICY_SCHEMA,
            "kind": self.kind,
            "params": dict(self.params),
            "limits": dict(self.limits),
            "slos": dict(self.slos),
            "sample_period_s": self.sample_period_s,
            "certificate": None if self.certificate is None else dict(self.certificate),
            "uncertified": self.uncertified,
            "meta": dict(self.meta),
        }

    def to_json(self) -> str:
        """Return the file's text: strict JSON (NaN and infinities written as ``null``)."""
        return json.dumps(strict_json(self.to_dict()), indent=2, sort_keys=False, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the policy file as indented strict JSON.

        Raises
        ------
        PolicyError
            The file cannot be written (e.g. its folder does not exist).
        """
        try:
            Path(path).write_text(self.to_json(), encoding="utf-8")
        except OSError as exc:
            raise PolicyError(f"{path}: cannot write the policy file ({exc.strerror})") from None

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str = "<memory>") -> PolicyFile:
        """Parse and check a policy document; errors name the source and the field."""
        if not isinstance(doc, Mapping):
            raise PolicyError(f"{source}: a policy file must hold a JSON object, got {type(doc).__name__}")
        schema = doc.get("schema")
        if schema not in POLICY_SCHEMAS_READ:
            raise PolicyError(f"{source}: field 'schema' is {schema!r}, expected one of {list(POLICY_SCHEMAS_READ)}")
        for name in ("params", "limits", "slos", "meta"):
            if name in doc and not isinstance(doc[name], Mapping):
                raise PolicyError(f"{source}: field {name!r} must be an object, got {type(doc[name]).__name__}")
        cert = doc.get("certificate")
        if cert is not None and not isinstance(cert, Mapping):
            raise PolicyError(f"{source}: field 'certificate' must be an object or null")
        check_common(doc, source)  # the kind's params are checked where it is built or certified
        try:
            return cls(
                kind=doc.get("kind", ""),
                params=dict(doc.get("params", {})),
                limits=dict(doc.get("limits", {})),
                slos=dict(doc.get("slos", {})),
                sample_period_s=doc.get("sample_period_s", 0.02),
                certificate=None if cert is None else dict(cert),
                uncertified=doc.get("uncertified", False),
                meta=dict(doc.get("meta", {})),
            )
        except PolicyError as exc:
            raise PolicyError(f"{source}: {exc}") from None


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read a ``controlkit.policy/2`` (or ``/1``) file; raises :class:`PolicyError` naming the file."""
    p = Path(path)
    try:
        if not p.is_file():
            raise PolicyError(f"{p}: cannot read policy file (no such regular file)")
        size = p.stat().st_size
        if size > MAX_POLICY_BYTES:
            raise PolicyError(f"{p}: policy file is {size} bytes; at most {MAX_POLICY_BYTES} are read")
        text = p.read_bytes().decode("utf-8")
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read policy file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{p}: not UTF-8 text (byte {exc.start}); expected a JSON policy file") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{p}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    return replace(PolicyFile.from_dict(doc, source=str(p)), origin_path=str(p.resolve()))
