"""Run the benchmark protocol (:mod:`controlkit.app.bench.protocol`) in its phases.

1. **Prepare** every plant (:meth:`SimBackend.prepare_plant`: SLOs, BCA's sweep, the
   controllers designed from identified telemetry), then set vLLM's per-GPU defaults and
   scale the research baselines' hyper-parameters to the plant's SLO.
2. **Measure capacity** of every (plant, workload) on the plant (:func:`measure_capacity`).
3. **Tune**: the static cap sweep, bare and behind the admission layer, on the tune seeds.
4. **Choose in hindsight** (on the tune seeds only) the best bare and the best guarded static
   cap *once per plant*: the cap with the highest mean goodput, normalised per (workload,
   load) by the best cap there, over the goal loads (:data:`GOAL_LOADS`).
5. **Report cells**: every baseline, both chosen caps and the controllers on the hold-out
   seeds.  Nothing measured here feeds back into a choice.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controlkit.app.bench.backend import SimBackend, _plant
from controlkit.app.bench.designed import engine_context
from controlkit.app.bench.grid import BenchGrid, CellTask, PlantSetup
from controlkit.app.bench.protocol import GOAL_LOADS, TUNE_SEEDS, Protocol, cap_grid, vllm_default_limits
from controlkit.app.bench.results import CellResult
from controlkit.app.bench.runner import ProgressCallback, run_tasks

__all__ = [
    "BEST_GUARDED",
    "BEST_STATIC_PLANT",
    "ProtocolResults",
    "choose_cap",
    "measure_capacity",
    "run_protocol",
]

#: The best bare static cap, chosen once per plant on the tune seeds.
BEST_STATIC_PLANT = "best-static/plant"
#: The best static cap behind the admission layer, chosen once per plant on the tune seeds.
BEST_GUARDED = "best-guarded-static/plant"
#: Research baselines' spec templates, hyper-parameters scaled to the plant's SLO: Pang's dead
#: band is SGLang's 10 ms on its 50 ms target, i.e. 20% of the SLO.
BASELINE_SPECS: dict[str, str] = {
    "static-default": "static:max_num_seqs={default_cap},max_num_batched_tokens={default_tokens}",
    "pang-a1a2": "pang-a1a2:sla_s={tpot_s},eps_s={eps_s}",
    "pang-a2": "pang-a2:sla_s={tpot_s},eps_s={eps_s}",
    "sglang-ratio": "sglang-ratio",
    "trtllm-tuner": "trtllm-tuner",
}
GUARD_SUFFIX = "+guard"


def _burst_capacity(plant_name: str, workload: str, tpot_s: float, ceiling: int, n: int) -> tuple[float, float]:
    """Completion rate of the best TPOT-feasible cap on a burst of the workload, and the KV-bound batch."""
    from controlkit.sim import SLO, Workload, load_workload, simulate
    from policies import build_policy

    plant = _plant(plant_name)
    probe = "sharegpt:poisson:1" if workload.split(":")[0] in ("step", "sharegpt") else workload
    wl, _ = load_workload(probe, num_requests=n, seed=0).clipped(int(plant.max_model_len))
    burst = Workload(f"capacity:{workload}", np.zeros(len(wl)), wl.prompt_tokens, wl.output_tokens)
    kv_batch = float(plant.kv_blocks_total * plant.block_size) / max(
        float(np.mean(wl.prompt_tokens + wl.output_tokens / 2.0)), 1.0
    )
    best = 0.0
    for cap in (c for c in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if c <= ceiling):
        res = simulate(plant, burst, build_policy(f"static:max_num_seqs={cap}", engine_context(plant, ceiling)),
                       slo=SLO(ttft_s=1e9, tpot_s=tpot_s), max_num_seqs=ceiling)
        ok = float(np.mean(res.requests.tpot_s[res.requests.finished] <= tpot_s))
        if ok >= 0.9 or cap == 1:
            best = max(best, res.metrics.num_finished / res.metrics.sim_time_s)
    return best, kv_batch


def measure_capacity(request: tuple[Protocol, PlantSetup, str]) -> dict[str, float]:
    """Measured capacity of a plant on a workload (requests/s), and its KV-bound batch.

    The capacity is the highest arrival rate at which vLLM's default configuration (bare)
    still meets both SLOs for >= 90% of the requests (mean over *all five* tune windows, whatever
    subset of them the protocol sweeps on, since a few windows misjudge a bursty trace), found by
    bisection in log-rate (tolerance 4%) from a first guess: the completion rate of the best
    TPOT-feasible static cap on a burst of the workload's requests.  Hold-out seeds are never
    simulated here.
    """
    protocol, setup, workload = request
    guess, kv_batch = _burst_capacity(setup.plant, workload, setup.tpot_slo_s, setup.max_num_seqs,
                                      protocol.capacity_requests)
    spec = setup.specs.get("static-default", f"static:max_num_seqs={setup.default_cap}")
    backend = SimBackend()

    def attainment(rate: float) -> float:
        tasks = [protocol.cell(setup, workload, 1.0, seed, "static-default", spec, capacity_req_s=rate,
                               native_req_s=_native_rate(workload), guard=None) for seed in TUNE_SEEDS]
        return float(np.mean([backend.run_cell(t)["slo_attainment"] for t in tasks]))

    lo, hi, evaluations = 0.0, max(guess, 1e-3), 0
    while attainment(hi) >= 0.9 and evaluations < 6:  # grow until it fails
        lo, hi, evaluations = hi, 2.0 * hi, evaluations + 1
    if lo == 0.0:
        lo = hi / 16.0
    while hi / lo > 1.04 and evaluations < 14:
        mid = math.sqrt(lo * hi)
        evaluations += 1
        if attainment(mid) >= 0.9:
            lo = mid
        else:
            hi = mid
    return {"capacity_req_s": lo, "burst_req_s": guess, "kv_batch": kv_batch, "evaluations": float(evaluations)}


@dataclass(frozen=True)
class ProtocolResults:
    """Everything one protocol run produced (round-trips through JSON via :mod:`protocol_io`)."""

    protocol: Protocol
    setups: Mapping[str, PlantSetup]
    capacity: Mapping[str, Mapping[str, Mapping[str, float]]]
    caps: Mapping[str, tuple[int, ...]]
    chosen: Mapping[str, Mapping[str, int]]
    tune: list[CellResult]
    holdout: list[CellResult]
    wall_s: float = 0.0
    command: str = ""


def _prepare(protocol: Protocol, name: str) -> PlantSetup:
    """Prepare one plant with vLLM's per-GPU defaults and SLO-scaled research baselines."""
    grid = BenchGrid(
        plants=(name,),
        workloads=("sharegpt",),
        loads=(1.0,),
        policies=(
            *protocol.controllers,
            *(("bca",) if any(b.startswith("bca") for b in protocol.baselines) else ()),
            "static-default",  # never empty; its spec is replaced by vLLM's per-GPU default below
        ),
        static_caps=(max(vllm_default_limits(name)[0], 1),),
        slo=protocol.slo,
        id_num_requests=protocol.id_num_requests,
    )
    setup = SimBackend().prepare_plant((name, grid))
    cap, tokens = vllm_default_limits(name)
    plant = _plant(name)
    ceiling = max(cap, setup.max_num_seqs)
    tokens = min(tokens, int(plant.max_batched_tokens_default))
    fill = {"default_cap": cap, "default_tokens": tokens, "tpot_s": round(setup.tpot_slo_s, 6),
            "eps_s": round(0.2 * setup.tpot_slo_s, 6)}
    specs = dict(setup.specs)
    for c in protocol.controllers:  # the protocol's late-request mode for every policy behind the layer
        spec = specs.get(c)
        if isinstance(spec, Mapping) and isinstance(spec.get("params"), Mapping):
            params = dict(spec["params"])
            params["guard"] = {**dict(params.get("guard") or {}), "late_action": protocol.late_action}
            specs[c] = {**spec, "params": params}
    for label in {b.removesuffix(GUARD_SUFFIX) for b in protocol.baselines}:
        if label in BASELINE_SPECS:
            specs[label] = BASELINE_SPECS[label].format(**fill)
    return replace(setup, default_cap=cap, max_num_seqs=ceiling, specs=specs, max_batched_tokens=tokens)


def _guard(setup: PlantSetup, protocol: Protocol) -> dict[str, Any]:
    """Return the admission layer's numbers: those of the plant's designed controllers, mode of the protocol."""
    for c in protocol.controllers:
        spec = setup.specs.get(c)
        if isinstance(spec, Mapping):
            params = spec.get("params", {})
            if isinstance(params, Mapping) and isinstance(params.get("guard"), Mapping):
                return {**params["guard"], "late_action": protocol.late_action}
    return {"late_action": protocol.late_action}


def _spec(setup: PlantSetup, label: str) -> tuple[str | Mapping[str, Any], str]:
    base = label.removesuffix(GUARD_SUFFIX)
    if base in setup.specs:
        return setup.specs[base], ""
    return "", setup.errors.get(base, f"no spec prepared for {base!r} on {setup.plant!r}")


def choose_cap(cells: list[CellResult], plant: str, prefix: str) -> int:
    """Return the cap (label ``<prefix><cap>``) with the best mean normalised goodput over the goal loads."""
    lo, hi = GOAL_LOADS
    table: dict[tuple[str, float], dict[int, list[float]]] = {}
    for c in cells:
        t = c.task
        if t.plant == plant and t.policy.startswith(prefix) and lo <= t.load <= hi and c.ok:
            table.setdefault((t.workload, t.load), {}).setdefault(int(t.policy[len(prefix):]), []).append(
                c.goodput_req_s
            )
    scores: dict[int, list[float]] = {}
    for per_cap in table.values():
        means = {cap: float(np.mean(v)) for cap, v in per_cap.items()}
        top = max(means.values())
        for cap, m in means.items():
            scores.setdefault(cap, []).append(m / top if top > 0 else 0.0)
    if not scores:
        return 0
    mean = {cap: float(np.mean(v)) for cap, v in scores.items()}
    top = max(mean.values())
    tied = sorted(cap for cap, m in mean.items() if m >= top - 1e-9)
    return tied[len(tied) // 2]  # ties: the middle of the tied caps (robust both ways)


def run_protocol(
    protocol: Protocol, *, jobs: int = 1, progress: bool | ProgressCallback = False, command: str = ""
) -> ProtocolResults:
    """Run every phase of ``protocol`` and return its results."""
    start = time.perf_counter()
    backend = SimBackend()

    def run(tasks: list[CellTask], what: str) -> list[CellResult]:
        todo = [t for t in tasks if not t.error]
        done = iter(run_tasks(backend.run_cell, todo, jobs=jobs, progress=progress, description=what))
        out = []
        for t in tasks:
            o = None if t.error else next(done)
            if o is None:
                out.append(CellResult(t, {}, t.error))
            else:
                out.append(CellResult(t, dict(o.value or {}), o.error, o.traceback_tail, o.wall_s))
        return out

    prepared = run_tasks(_Prepare(protocol), list(protocol.plants), jobs=jobs, progress=progress,
                         description="prepare plants")
    setups = {n: o.value for n, o in zip(protocol.plants, prepared, strict=True) if o.ok and o.value is not None}
    failed = {n: o.error for n, o in zip(protocol.plants, prepared, strict=True) if not o.ok}
    pairs = [(p, w) for p in setups for w in protocol.workloads]
    measured = run_tasks(
        measure_capacity,
        [(protocol, setups[p], w) for p, w in pairs],
        jobs=jobs, progress=progress, description="measure capacity",
    )
    capacity: dict[str, dict[str, dict[str, float]]] = {p: {} for p in setups}
    for (p, w), o in zip(pairs, measured, strict=True):
        capacity[p][w] = dict(o.value) if o.ok and o.value else {"capacity_req_s": 0.0, "kv_batch": 1.0}
    caps = {
        p: cap_grid(
            min(s.max_num_seqs, max(16, int(2 * max(c["kv_batch"] for c in capacity[p].values())))),
            ratio=protocol.cap_ratio,
            extra=(s.default_cap,) if s.default_cap <= s.max_num_seqs else (),
        )
        for p, s in setups.items()
    }
    tune = run(_sweep(protocol, setups, capacity, caps), "tune: static sweeps")
    chosen = {p: {"static": choose_cap(tune, p, "static-"), "guarded": choose_cap(tune, p, "guarded-")}
              for p in setups}
    holdout = run(_holdout(protocol, setups, capacity, chosen), "hold-out: report cells")
    for name, error in failed.items():
        holdout.append(CellResult(_failed_task(name, error), {}, f"plant preparation failed: {error}"))
    return ProtocolResults(protocol, setups, capacity, caps, chosen, tune, holdout,
                           time.perf_counter() - start, command)


@dataclass(frozen=True)
class _Prepare:
    """Picklable ``_prepare`` for the process pool."""

    protocol: Protocol

    def __call__(self, name: str) -> PlantSetup:
        return _prepare(self.protocol, name)


def _cells(
    protocol: Protocol, setups: Mapping[str, PlantSetup], capacity: Mapping[str, Mapping[str, Mapping[str, float]]],
    seeds: tuple[int, ...], labels: Mapping[str, list[tuple[str, str | Mapping[str, Any], bool, str]]],
    loads: tuple[float, ...],
) -> list[CellTask]:
    tasks: list[CellTask] = []
    for plant, setup in setups.items():
        guard = _guard(setup, protocol)
        for workload in protocol.workloads:
            cap_req_s = capacity[plant][workload].get("capacity_req_s", 0.0)
            native = _native_rate(workload)
            for load in loads:
                for seed in seeds:
                    for label, spec, guarded, error in labels[plant]:
                        tasks.append(protocol.cell(
                            setup, workload, load, seed, label, spec, capacity_req_s=cap_req_s,
                            native_req_s=native, guard=guard if guarded else None,
                            error=error or ("" if cap_req_s > 0 else "capacity measurement failed"),
                        ))
    return tasks


def _sweep(protocol: Protocol, setups: Mapping[str, PlantSetup], capacity: Any, caps: Mapping[str, tuple[int, ...]]
           ) -> list[CellTask]:
    labels: dict[str, list[tuple[str, str | Mapping[str, Any], bool, str]]] = {
        p: [(f"{kind}-{c}", f"static:max_num_seqs={c},max_num_batched_tokens={s.max_batched_tokens}",
             kind == "guarded", "") for c in caps[p] for kind in ("static", "guarded")]
        for p, s in setups.items()
    }
    return _cells(protocol, setups, capacity, protocol.tune_seeds, labels, protocol.sweep_loads or protocol.loads)


def _holdout(protocol: Protocol, setups: Mapping[str, PlantSetup], capacity: Any,
             chosen: Mapping[str, Mapping[str, int]]) -> list[CellTask]:
    labels: dict[str, list[tuple[str, str | Mapping[str, Any], bool, str]]] = {}
    for p, s in setups.items():
        rows: list[tuple[str, str | Mapping[str, Any], bool, str]] = []
        for label in (*protocol.baselines, *protocol.controllers):
            spec, error = _spec(s, label)
            rows.append((label, spec, label.endswith(GUARD_SUFFIX), error))
        for name, kind in ((BEST_STATIC_PLANT, "static"), (BEST_GUARDED, "guarded")):
            cap = chosen[p][kind]
            rows.append((name, f"static:max_num_seqs={max(cap, 1)},max_num_batched_tokens={s.max_batched_tokens}",
                         kind == "guarded", "" if cap else "no tune cell succeeded"))
        labels[p] = rows
    return _cells(protocol, setups, capacity, protocol.holdout_seeds, labels, protocol.loads)


@functools.cache
def _native_rate(workload: str) -> float | None:
    """Return a trace's mean arrival rate over the whole trace (requests/s); None for synthetic workloads."""
    if workload.split(":")[0] in ("step", "sharegpt"):
        return None
    from controlkit.sim import load_workload

    wl = load_workload(workload)
    return (len(wl) - 1) / wl.duration_s if len(wl) > 1 and wl.duration_s > 0 else None


def _failed_task(plant: str, error: str) -> CellTask:
    return CellTask(plant, "-", 0.0, "-", 1.0, "-", "", float("nan"), float("nan"), 1, 1, 1.0, 0, error=error)
