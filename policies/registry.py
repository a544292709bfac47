"""Build a runtime policy from a spec string, a policy file or a :class:`PolicyFile`.

Spec strings are ``kind`` or ``kind:key=value,key=value``, for example
``static:max_num_seqs=256`` or ``pang-a2:sla_s=0.05``.  Values parse as int, then float,
then bool (``true``/``false``), else stay strings.  A path to an existing ``.json`` file is
read as a ``controlkit.policy/2`` file.

Each kind registers a factory with :func:`register`; the factory receives the parsed
:class:`~controlkit.policyfile.PolicyFile` and a :class:`PolicyContext` (what the engine
knows: KV capacity, block size, the engine's own limits) and returns a
:class:`~controlkit.contract.BatchPolicy`.

Examples
--------
>>> parse_spec("static:max_num_seqs=256").params["max_num_seqs"]
256
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from controlkit.contract import BatchPolicy
from controlkit.policyfile import PolicyFile, load_policy_file
from controlkit.policyparams import DESIGNED_KINDS
from identification.errors import PolicyError

__all__ = ["PolicyContext", "available_kinds", "build_policy", "parse_spec", "register", "resolve_policy_file"]


@dataclass(frozen=True, slots=True)
class PolicyContext:
    """What the engine adapter knows when it builds a policy.

    Parameters
    ----------
    kv_blocks_total
        KV-cache capacity in blocks (0 when unknown until the first observation).
    block_size
        Tokens per KV block.
    max_num_seqs
        The engine's configured ceiling for running requests.
    max_batched_tokens
        The engine's configured per-step token budget.
    max_model_len
        The engine's maximum sequence length (tokens).
    policy_dir
        The folder of the policy file being built ("" for a spec string): the only folder,
        besides ``$CONTROLKIT_TABLE_DIRS``, a policy may read side files from
        (:mod:`policies.tables`).
    """

    kv_blocks_total: int = 0
    block_size: int = 16
    max_num_seqs: int = 256
    max_batched_tokens: int = 8192
    max_model_len: int = 4096
    policy_dir: str = ""


PolicyFactory = Callable[[PolicyFile, PolicyContext], BatchPolicy]

_FACTORIES: dict[str, PolicyFactory] = {}
# Modules that register kinds on import; imported lazily on first use.
_KIND_MODULES: tuple[str, ...] = (
    "policies.static",
    "policies.baselines",
    "policies.controllers",
    "policies.ablation",
    "policies.adaptive",
)
_loaded = False


def register(kind: str, factory: PolicyFactory) -> None:
    """Register ``factory`` for policy ``kind`` (idempotent for the same factory)."""
    _FACTORIES[kind] = factory


def _load_kinds() -> None:
    global _loaded
    if _loaded:
        return
    for mod in _KIND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
    _loaded = True


def available_kinds() -> tuple[str, ...]:
    """Return the registered policy kinds, sorted."""
    _load_kinds()
    return tuple(sorted(_FACTORIES))


#: Longest spec string accepted (characters).
MAX_SPEC_CHARS = 4096


def _parse_value(text: str, spec: str) -> Any:
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        raise PolicyError(f"policy spec {_show(spec)}: value {_show(text)} is not a finite number")
    return number


def _show(text: object) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def parse_spec(spec: str) -> PolicyFile:
    """Parse ``kind[:key=value,...]`` into a :class:`PolicyFile` (no certificate)."""
    if not isinstance(spec, str) or not spec.strip():
        raise PolicyError(
            f"policy spec must be a non-empty string like 'static:max_num_seqs=256', got {_show(spec)}"
        )
    if len(spec) > MAX_SPEC_CHARS:
        raise PolicyError(f"policy spec is {len(spec)} characters; at most {MAX_SPEC_CHARS} are accepted")
    kind, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    if rest:
        for item in rest.split(","):
            key, eq, value = item.partition("=")
            if not eq or not key.strip():
                raise PolicyError(f"policy spec {_show(spec)}: item {_show(item)} is not of the form key=value")
            params[key.strip()] = _parse_value(value.strip(), spec)
    return PolicyFile(kind=kind.strip(), params=params)


def resolve_policy_file(spec: str | Path | PolicyFile | Mapping[str, Any]) -> PolicyFile:
    """Turn a spec string, a path, a mapping or a PolicyFile into a :class:`PolicyFile`."""
    if isinstance(spec, PolicyFile):
        return spec
    if isinstance(spec, Mapping):
        return PolicyFile.from_dict(spec)
    if isinstance(spec, Path) or (isinstance(spec, str) and spec.endswith(".json")):
        return load_policy_file(spec)
    return parse_spec(spec)


def build_policy(
    spec: str | Path | PolicyFile | Mapping[str, Any], context: PolicyContext | None = None
) -> BatchPolicy:
    """Build a runtime policy.

    Parameters
    ----------
    spec
        A spec string (``"pang-a2:sla_s=0.05"``), a path to a policy file, a mapping, or a
        :class:`PolicyFile`.
    context
        What the engine knows (capacity, block size, limits); defaults to
        :class:`PolicyContext()`.

    Raises
    ------
    PolicyError
        Unknown kind, bad parameters, or an unreadable file.
    """
    pf = resolve_policy_file(spec)
    _load_kinds()
    factory = _FACTORIES.get(pf.kind)
    if factory is None:
        raise PolicyError(f"unknown policy kind {_show(pf.kind)}; known kinds: {', '.join(available_kinds())}")
    if pf.kind in DESIGNED_KINDS:  # typed params, checked field by field before the factory runs
        pf.typed_params(f"{pf.kind} policy")
    ctx = context or PolicyContext()
    if pf.origin_path and not ctx.policy_dir:
        ctx = replace(ctx, policy_dir=str(Path(pf.origin_path).parent))
    try:
        return factory(pf, ctx)
    except PolicyError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError, ArithmeticError) as exc:
        # a factory that trusted a field the schema does not cover yet: still our error, named
        raise PolicyError(f"{pf.kind} policy: malformed params ({type(exc).__name__}: {_show(str(exc))})") from None
