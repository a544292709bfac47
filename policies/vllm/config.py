"""Configuration of the vLLM hook: environment variables and ``additional_config``.

The hook reads its settings from two places; a key in vLLM's ``additional_config``
(``--additional-config '{"controlkit": {...}}'`` or ``LLM(additional_config=...)``) wins
over the environment variable:

* ``CONTROLKIT_POLICY`` / ``controlkit.policy``: policy file path or spec string;
* ``CONTROLKIT_STEP_LOG`` / ``controlkit.step_log``: JSONL step-log path (off when unset);
* ``CONTROLKIT_DECIDE_EVERY`` / ``controlkit.decide_every``: call the policy every k steps (1);
* ``CONTROLKIT_DECIDE_PERIOD_S`` / ``controlkit.decide_period_s``: minimum seconds between
  decisions (0: every step; ``auto``, the default: a designed controller, i.e. a policy file
  with a certificate, decides at its design ``sample_period_s``, which is the period its
  certificate assumes; every other policy decides every step);
* ``CONTROLKIT_DECIDE_BUDGET_S`` / ``controlkit.decide_budget_s``: slow-decision threshold
  (0.005 s);
* ``CONTROLKIT_FALLBACK_MAX_SEQS`` / ``controlkit.fallback_max_seqs``: static cap applied on
  faults (default: keep the last safe limits);
* ``CONTROLKIT_STEP_LOG_MAX_BYTES`` / ``controlkit.step_log_max_bytes``: rotation size (64 MiB);
* ``CONTROLKIT_ENABLE=1`` (environment only): the ``vllm.general_plugins`` entry point
  installs the hook without ``--scheduler-cls``.

With no policy the hook only observes (and logs steps if a step log is set).

Examples
--------
>>> cfg = HookConfig.from_sources({"CONTROLKIT_POLICY": "static:max_num_seqs=8"},
...                               {"controlkit": {"decide_every": 4}})
>>> cfg.policy, cfg.decide_every
('static:max_num_seqs=8', 4)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from identification.errors import PolicyError

__all__ = ["ADDITIONAL_CONFIG_KEY", "ENV_PREFIX", "HookConfig"]

#: The key of the hook's section in vLLM's ``additional_config``.
ADDITIONAL_CONFIG_KEY = "controlkit"
ENV_PREFIX = "CONTROLKIT_"


def _int(name: str, value: Any, lo: int) -> int:
    try:
        out = int(str(value).strip()) if not isinstance(value, int) or isinstance(value, bool) else value
    except ValueError:
        raise PolicyError(f"{name}={value!r} is not an integer (expected an integer >= {lo})") from None
    if isinstance(value, bool) or out < lo:
        raise PolicyError(f"{name}={value!r} is out of range (expected an integer >= {lo})")
    return out


def _float(name: str, value: Any, *, zero_ok: bool = False) -> float:
    what = "seconds >= 0" if zero_ok else "seconds > 0"
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{name}={value!r} is not a number (expected {what})") from None
    if not (math.isfinite(out) and (out >= 0 if zero_ok else out > 0)):
        raise PolicyError(f"{name}={value!r} is out of range (expected {what})")
    return out


@dataclass(frozen=True)
class HookConfig:
    """Settings of one hooked scheduler.

    Parameters
    ----------
    policy
        A policy file path, a spec string, a built policy object, or None (observe only).
    step_log
        Path of the JSONL step log, or None for no log.
    decide_every
        Call the policy every this many steps (>= 1).
    decide_period_s
        Minimum seconds between decisions (0: every step), or ``"auto"`` (the default): a
        certified policy file's design ``sample_period_s``, every step for anything else.
    decide_budget_s
        A decision slower than this (seconds) is a fault.
    fallback_max_seqs
        Static admission cap applied on faults (None: keep the last safe limits).
    step_log_buffer
        Steps buffered in memory between writes.
    step_log_max_bytes, step_log_backups
        Rotation size and the number of rotated files kept.
    reload_check_s
        How often the policy file's mtime is checked (seconds).
    """

    policy: Any = None
    step_log: str | None = None
    decide_every: int = 1
    decide_period_s: float | str = "auto"
    decide_budget_s: float = 0.005
    fallback_max_seqs: int | None = None
    step_log_buffer: int = 512
    step_log_max_bytes: int = 64 * 2**20
    step_log_backups: int = 3
    reload_check_s: float = 1.0

    @classmethod
    def from_sources(
        cls, environ: Mapping[str, str], additional_config: Mapping[str, Any] | None = None
    ) -> HookConfig:
        """Read the settings from an environment mapping and vLLM's ``additional_config``."""
        section: Mapping[str, Any] = {}
        if isinstance(additional_config, Mapping):
            raw = additional_config.get(ADDITIONAL_CONFIG_KEY, {})
            if not isinstance(raw, Mapping):
                key = ADDITIONAL_CONFIG_KEY
                raise PolicyError(f"additional_config[{key!r}] must be an object, got {type(raw).__name__}")
            section = raw

        def get(key: str) -> tuple[str, Any]:
            if key in section and section[key] is not None:
                return f"additional_config.{ADDITIONAL_CONFIG_KEY}.{key}", section[key]
            env = ENV_PREFIX + key.upper()
            value = environ.get(env)
            return env, (value if value not in (None, "") else None)

        kwargs: dict[str, Any] = {}
        _, policy = get("policy")
        kwargs["policy"] = policy
        _, step_log = get("step_log")
        kwargs["step_log"] = None if step_log is None else str(step_log)
        name, v = get("decide_every")
        if v is not None:
            kwargs["decide_every"] = _int(name, v, 1)
        name, v = get("decide_period_s")
        if v is not None:
            kwargs["decide_period_s"] = "auto" if str(v).strip().lower() == "auto" else _float(name, v, zero_ok=True)
        name, v = get("decide_budget_s")
        if v is not None:
            kwargs["decide_budget_s"] = _float(name, v)
        name, v = get("fallback_max_seqs")
        if v is not None:
            kwargs["fallback_max_seqs"] = _int(name, v, 1)
        name, v = get("step_log_max_bytes")
        if v is not None:
            kwargs["step_log_max_bytes"] = _int(name, v, 4096)
        return cls(**kwargs)
