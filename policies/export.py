"""Export a policy file as a static vLLM 0.33 configuration (``vllm serve`` args or YAML).

The exporter reads the knobs from the ``controlkit.policy/2`` file with one documented
mapping (first match wins):

=========================  ==================================================================
vLLM knob                  policy-file source
=========================  ==================================================================
``max_num_seqs``           ``params.max_num_seqs``, else the smaller of ``limits.b_max`` and
                           ``params.cap_upper`` (whichever are set)
``max_num_active_seqs``    ``params.max_num_seqs``, ``params.reference_batch``, else
                           ``max_num_seqs``
``max_num_batched_tokens`` ``params.max_num_batched_tokens``, ``params.max_batched_tokens``,
                           ``limits.max_batched_tokens``, ``max(params.budgets)``, else
                           ``max(2048, max_num_seqs)`` (vLLM's default budget)
``enable_chunked_prefill`` ``params.enable_chunked_prefill``, else ``true``
``gpu_memory_utilization`` ``params.gpu_memory_utilization``, ``limits.gpu_memory_utilization``
                           (omitted when neither is set)
=========================  ==================================================================

So a ``static`` or ``optimal`` file exports its cap as both ``max_num_seqs`` and
``max_num_active_seqs``; a ``pid`` or ``mpc`` file exports its ceiling (``b_max``, or the
MPC's ``cap_upper``) as ``max_num_seqs`` and its reference batch as the static admission
cap (with ``hook=True`` the hook then moves the cap inside ``[b_min, b_max]`` at run time).

:func:`check_vllm_limits` refuses, with :class:`ExportError`, what vLLM's own
``SchedulerConfig`` validation rejects: limits below 1, ``max_num_batched_tokens <
max_num_seqs``, ``max_num_active_seqs > max_num_seqs``, and without chunked prefill
``max_num_batched_tokens < max_model_len``.

Examples
--------
>>> from controlkit.policyfile import PolicyFile
>>> cfg = export_vllm_config(PolicyFile(kind="static", params={"max_num_seqs": 64}))
>>> for part in render_vllm_args(cfg, model="m").split(" --"):
...     print(part)
vllm serve m
max-num-seqs 64
max-num-batched-tokens 2048
max-num-active-seqs 64
enable-chunked-prefill
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlkit.policyfile import PolicyFile
from identification.errors import ExportError
from policies.registry import resolve_policy_file

__all__ = [
    "HOOK_SCHEDULER_CLS",
    "VllmExport",
    "check_vllm_limits",
    "export_vllm_config",
    "render_vllm_args",
    "render_vllm_yaml",
]

#: The ``--scheduler-cls`` value that installs the controlkit hook.
HOOK_SCHEDULER_CLS = "policies.vllm.make_scheduler"
#: vLLM's default per-step token budget (``SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS``).
VLLM_DEFAULT_BATCHED_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class VllmExport:
    """The static vLLM knobs exported from one policy file.

    Parameters
    ----------
    max_num_seqs, max_num_batched_tokens, max_num_active_seqs
        vLLM's scheduler limits (sequences, tokens per step, admission cap).
    enable_chunked_prefill
        Whether chunked prefill is on.
    gpu_memory_utilization
        Fraction of GPU memory vLLM may use, or None (vLLM's default).
    max_model_len
        Maximum sequence length (tokens), or None (the model's).
    hook
        Also install the controlkit hook (``--scheduler-cls`` and ``CONTROLKIT_POLICY``).
    policy_path
        Absolute path of the policy file for ``CONTROLKIT_POLICY`` (hook only).
    source
        Where the policy came from (for the header comment).
    """

    max_num_seqs: int
    max_num_batched_tokens: int
    max_num_active_seqs: int
    enable_chunked_prefill: bool = True
    gpu_memory_utilization: float | None = None
    max_model_len: int | None = None
    hook: bool = False
    policy_path: str | None = None
    source: str = "<memory>"

    def engine_args(self) -> dict[str, Any]:
        """Return the keyword arguments for ``vllm.EngineArgs`` / ``LLM(...)``."""
        out: dict[str, Any] = {
            "max_num_seqs": self.max_num_seqs,
            "max_num_batched_tokens": self.max_num_batched_tokens,
            "max_num_active_seqs": self.max_num_active_seqs,
            "enable_chunked_prefill": self.enable_chunked_prefill,
        }
        if self.gpu_memory_utilization is not None:
            out["gpu_memory_utilization"] = self.gpu_memory_utilization
        if self.max_model_len is not None:
            out["max_model_len"] = self.max_model_len
        if self.hook:
            out["scheduler_cls"] = HOOK_SCHEDULER_CLS
        return out

    def env(self) -> dict[str, str]:
        """Return the environment the hook needs (empty without ``hook``)."""
        if not self.hook or self.policy_path is None:
            return {}
        return {"CONTROLKIT_POLICY": self.policy_path}

    def cli_args(self) -> list[str]:
        """Return the ``vllm serve`` arguments (without the model)."""
        args: list[str] = []
        for key, value in self.engine_args().items():
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                args.append(flag if value else "--no-" + flag[2:])
            else:
                args += [flag, str(value)]
        return args


def _whole(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ExportError(f"{where} must be a whole number >= 1, got {value!r}")
    if value != int(value):
        raise ExportError(f"{where} must be a whole number >= 1, got {value!r}")
    return int(value)


def check_vllm_limits(
    *,
    max_num_seqs: int,
    max_num_batched_tokens: int,
    max_num_active_seqs: int,
    enable_chunked_prefill: bool,
    max_model_len: int | None,
    gpu_memory_utilization: float | None = None,
    source: str = "<memory>",
) -> None:
    """Raise :class:`ExportError` for any combination vLLM 0.33's validation rejects."""
    for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens),
                        ("max_num_active_seqs", max_num_active_seqs), ("max_model_len", max_model_len)):
        if value is not None and value < 1:
            raise ExportError(f"{source}: {name}={value} must be >= 1")
    if max_num_batched_tokens < max_num_seqs:
        raise ExportError(
            f"{source}: max_num_batched_tokens={max_num_batched_tokens} is below "
            f"max_num_seqs={max_num_seqs}; vLLM requires max_num_batched_tokens >= max_num_seqs "
            "(raise the budget or lower the cap)"
        )
    if max_num_active_seqs > max_num_seqs:
        raise ExportError(
            f"{source}: max_num_active_seqs={max_num_active_seqs} exceeds max_num_seqs={max_num_seqs}; "
            "vLLM requires max_num_active_seqs <= max_num_seqs"
        )
    if not enable_chunked_prefill:
        if max_model_len is None:
            raise ExportError(
                f"{source}: chunked prefill is off, so vLLM requires max_num_batched_tokens >= "
                "max_model_len; pass --max-model-len N so the exporter can check it"
            )
        if max_num_batched_tokens < max_model_len:
            raise ExportError(
                f"{source}: max_num_batched_tokens={max_num_batched_tokens} is below "
                f"max_model_len={max_model_len} with chunked prefill off; vLLM rejects this "
                "(enable chunked prefill, raise the budget, or lower --max-model-len)"
            )
    if gpu_memory_utilization is not None and not (0.0 < gpu_memory_utilization <= 1.0):
        raise ExportError(f"{source}: gpu_memory_utilization={gpu_memory_utilization} must be in (0, 1]")


def _first(sources: list[tuple[Mapping[str, Any], str]]) -> tuple[Any, str] | None:
    for mapping, key in sources:
        if key in mapping and mapping[key] is not None:
            return mapping[key], key
    return None


def export_vllm_config(
    policy: str | Path | PolicyFile | Mapping[str, Any],
    *,
    max_model_len: int | None = None,
    hook: bool = False,
    step_cap: bool = False,
) -> VllmExport:
    """Map a policy file onto vLLM's static knobs (module docstring) and check them.

    Parameters
    ----------
    policy
        A policy file path, a spec string, a mapping or a :class:`PolicyFile`.
    max_model_len
        The deployment's maximum sequence length, checked against the token budget.
    hook
        Also install the hook: ``scheduler_cls`` and ``CONTROLKIT_POLICY`` (needs a file path).
    step_cap
        Export an ``optimal`` design's step-capped budget (``params.step_cap``: its batch as
        ``max_num_seqs`` and its token budget) instead of the throughput budget: every step,
        so every request's TPOT, stays within the SLO, at the price of TTFT under load (a
        static config cannot switch budgets as the hook does; ``docs/theory.md`` §6).

    Raises
    ------
    ExportError
        vLLM would reject the exported values, or the file names no cap at all.
    """
    pf = resolve_policy_file(policy)
    source = str(policy) if isinstance(policy, (str, Path)) else f"<{pf.kind} policy>"
    params, limits = pf.params, pf.limits
    if step_cap:
        sc = params.get("step_cap")
        if not isinstance(sc, Mapping) or "batch" not in sc or "max_batched_tokens" not in sc:
            raise ExportError(
                f"{source}: --step-cap needs params.step_cap with batch and max_batched_tokens "
                f"(an 'optimal' design of a model with a prefill cost); kind {pf.kind!r} has none"
            )
        batch = _whole(sc["batch"], f"{source}: params.step_cap.batch")
        params = {**params, "max_num_seqs": batch, "max_num_batched_tokens": sc["max_batched_tokens"]}
    seqs = _first([(params, "max_num_seqs")])
    if seqs is None:
        ceilings = [(limits[k], f"limits.{k}") for k in ("b_max",) if limits.get(k) is not None]
        ceilings += [(params[k], f"params.{k}") for k in ("cap_upper",) if params.get(k) is not None]
        for value, where in ceilings:
            _whole(value, f"{source}: {where}")
        seqs = min(ceilings, key=lambda c: float(c[0])) if ceilings else None
    if seqs is None:
        raise ExportError(
            f"{source}: kind {pf.kind!r} names no batch cap; expected params.max_num_seqs, limits.b_max "
            "or params.cap_upper"
        )
    max_num_seqs = _whole(seqs[0], f"{source}: {seqs[1]}")
    active = _first([(params, "max_num_seqs"), (params, "reference_batch")])
    max_num_active = _whole(active[0], f"{source}: {active[1]}") if active else max_num_seqs
    budgets = params.get("budgets")
    budget_max = {"budgets": max(budgets)} if isinstance(budgets, (list, tuple)) and budgets else {}
    tokens = _first([(params, "max_num_batched_tokens"), (params, "max_batched_tokens"),
                     (limits, "max_batched_tokens"), (budget_max, "budgets")])
    max_tokens = (_whole(tokens[0], f"{source}: {tokens[1]}") if tokens
                  else max(VLLM_DEFAULT_BATCHED_TOKENS, max_num_seqs))
    chunked = params.get("enable_chunked_prefill", True)
    if not isinstance(chunked, bool):
        raise ExportError(f"{source}: params.enable_chunked_prefill must be true or false, got {chunked!r}")
    gpu = _first([(params, "gpu_memory_utilization"), (limits, "gpu_memory_utilization")])
    gpu_util: float | None = None
    if gpu is not None:
        if isinstance(gpu[0], bool) or not isinstance(gpu[0], (int, float)) or not math.isfinite(gpu[0]):
            raise ExportError(f"{source}: {gpu[1]} must be a number in (0, 1], got {gpu[0]!r}")
        gpu_util = float(gpu[0])
    if max_model_len is not None:
        max_model_len = _whole(max_model_len, "max_model_len")
    check_vllm_limits(
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_tokens, max_num_active_seqs=max_num_active,
        enable_chunked_prefill=chunked, max_model_len=max_model_len, gpu_memory_utilization=gpu_util,
        source=source,
    )
    policy_path: str | None = None
    if hook:
        if isinstance(policy, Path) or (isinstance(policy, str) and Path(policy).is_file()):
            policy_path = str(Path(policy).resolve())
        elif isinstance(policy, str):
            policy_path = policy  # a spec string works as CONTROLKIT_POLICY too
        else:
            raise ExportError("--hook needs the policy as a file path or a spec string for CONTROLKIT_POLICY")
    return VllmExport(max_num_seqs, max_tokens, max_num_active, chunked, gpu_util, max_model_len, hook,
                      policy_path, source)


def render_vllm_args(cfg: VllmExport, *, model: str = "$MODEL") -> str:
    """Return one shell line: ``[CONTROLKIT_POLICY=... ]vllm serve MODEL --max-num-seqs ...``."""
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cfg.env().items())
    model_arg = '"$MODEL"' if model == "$MODEL" else shlex.quote(model)
    line = " ".join(["vllm", "serve", model_arg, *(shlex.quote(a) for a in cfg.cli_args())])
    return f"{env} {line}" if env else line


def render_vllm_yaml(cfg: VllmExport) -> str:
    """Return a YAML file for ``vllm serve MODEL --config FILE`` (keys are the CLI flags)."""
    lines = [f"# vLLM 0.33 config exported by controlkit from {cfg.source}",
             "# use: vllm serve MODEL --config THIS_FILE"]
    for key, value in cfg.env().items():
        lines.append(f"# the hook needs this in the environment: export {key}={shlex.quote(value)}")
    for key, value in cfg.engine_args().items():
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        else:
            text = str(value)
        lines.append(f"{key.replace('_', '-')}: {text}")
    return "\n".join(lines) + "\n"
