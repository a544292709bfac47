"""The real benchmark backend: prepares plants and runs cells on :mod:`controlkit.sim`.

:class:`SimBackend` has the two verbs the suite needs, both picklable so that they run in
worker processes or on Ray:

- :meth:`SimBackend.prepare_plant` computes a plant's SLOs and nominal rates, fills the
  research policies' specs, runs BCA's offline sweep, and designs the controlkit
  controllers **from telemetry**: it simulates a short identification run (ShareGPT
  lengths, a load ramp, vLLM's default static cap) that writes a step log, identifies a
  plant model from that log, and calls ``controlkit design`` on the model.  The plant's own
  table is never shown to the design; the controllers are then evaluated on the measured
  plant.
- :meth:`SimBackend.run_cell` simulates one cell and returns its metrics.

Warnings raised inside (fit quality, extrapolated step times) are recorded, not raised:
they are part of the result, and a worker must not die of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from controlkit.app.bench.cells import policy_spec
from controlkit.app.bench.designed import DesignRequest, design_controllers, engine_context, recorded_warnings
from controlkit.app.bench.grid import CONTROLLERS, POLICY_TEMPLATES, BenchGrid, CellTask, PlantSetup
from identification.errors import ControlkitError

__all__ = ["SimBackend", "nominal_rate_req_s"]

_PLANTS: dict[str, Any] = {}
#: Requests of each BCA profiling run (ShareGPT lengths, all arriving at once).
BCA_SWEEP_REQUESTS = 400


def _plant(name: str) -> Any:
    """Load a plant once per process."""
    if name not in _PLANTS:
        from controlkit.sim import load_plant

        _PLANTS[name] = load_plant(name)
    return _PLANTS[name]


def nominal_rate_req_s(
    plant: Any, *, prompt_tokens: float, output_tokens: float, tpot_slo_s: float, max_num_seqs: int
) -> float:
    """Arrival rate (requests/s) a plant sustains at the largest batch that meets the TPOT SLO.

    Steady state at batch ``b``: a step emits ``b`` tokens and prefill takes a share
    ``c_p * P * lam`` of the time, so the mean time per token is
    ``s(b) = d(b) / (1 - c_p * P * lam)`` and completions are ``lam = b / (O * s(b))``,
    i.e. ``lam(b) = b / (O * d(b) + b * c_p * P)``.  The batch is limited by the KV cache
    (``b * (P + O / 2)`` tokens held on average) and by ``max_num_seqs``; the nominal rate is
    ``lam(b*)`` at the largest admissible ``b*`` with ``s(b*) <= tpot_slo_s``.  This sets the
    grid's load axis only; no policy sees it.
    """
    kv_tokens = float(plant.kv_blocks_total * plant.block_size)
    per_req_tokens = max(prompt_tokens + output_tokens / 2.0, 1.0)
    b_cap = max(1, min(max_num_seqs, int(kv_tokens / per_req_tokens)))
    c_p = float(plant.prefill_s_per_token)
    best = 0.0
    for b in range(1, b_cap + 1):
        d = float(plant.step_s(b, 0))
        lam = b / (output_tokens * d + b * c_p * prompt_tokens)
        s = d / max(1e-9, 1.0 - c_p * prompt_tokens * lam)
        if s <= tpot_slo_s or b == 1:
            best = lam
    return best


@dataclass(frozen=True, slots=True)
class SimBackend:
    """Prepares plants and runs cells on :mod:`controlkit.sim` (stateless, picklable).

    Parameters
    ----------
    allow_uncertified
        When ``controlkit design`` refuses a controller (a certificate claim fails), retry
        with ``--allow-uncertified`` and mark it in the notes; otherwise the controller's
        cells fail with the refusal.
    """

    allow_uncertified: bool = True

    # ------------------------------------------------------------------ prepare
    def prepare_plant(self, request: tuple[str, BenchGrid]) -> PlantSetup:
        """Everything the cells of one plant need (SLOs, rates, specs, designs)."""
        name, grid = request
        from controlkit.sim import load_workload

        plant = _plant(name)
        batch1_s = float(plant.step_s(1, 0))
        tpot_s = grid.slo.tpot_factor * batch1_s
        chunk_s = float(plant.step_s(0, int(plant.max_batched_tokens_default)))
        ttft_s = max(grid.slo.ttft_s, grid.slo.ttft_prefill_factor * chunk_s)
        default_cap = int(plant.max_num_seqs_default)
        # the engine ceiling: vLLM's default, raised to the largest swept cap the measured table covers
        ceiling = max(default_cap, min(max(grid.static_caps), int(plant.batch_range[1])))
        notes: dict[str, Any] = {"plant_source": getattr(plant, "source", ""), "warnings": []}
        nominal: dict[str, float] = {}
        native: dict[str, float] = {}
        for workload in grid.workloads:
            synthetic = workload.split(":")[0] in ("step", "ramp", "sharegpt")
            probe = "sharegpt:poisson:1" if synthetic else workload
            wl = load_workload(probe, num_requests=grid.num_requests, seed=grid.seed)
            wl, _ = wl.clipped(int(plant.max_model_len))
            if not synthetic and len(wl) > 1 and wl.duration_s > 0:
                native[workload] = (len(wl) - 1) / wl.duration_s
            nominal[workload] = nominal_rate_req_s(
                plant,
                prompt_tokens=float(wl.prompt_tokens.mean()),
                output_tokens=float(wl.output_tokens.mean()),
                tpot_slo_s=tpot_s,
                max_num_seqs=ceiling,
            )
        specs: dict[str, str | Mapping[str, Any]] = {}
        errors: dict[str, str] = {}
        for label in grid.policies:
            if label in POLICY_TEMPLATES or ":" in label:
                specs[label] = policy_spec(
                    label, tpot_s=tpot_s, ttft_s=ttft_s, max_num_seqs=ceiling, default_cap=default_cap
                )
        if "bca" in grid.policies:
            try:
                specs["bca"], notes["bca"] = self._bca(plant, tpot_s, ceiling)
            except Exception as exc:
                errors["bca"] = f"BCA sweep failed: {type(exc).__name__}: {exc}"
        wanted = [c for c in CONTROLLERS if c in grid.policies]
        if wanted:
            design_controllers(
                plant,
                DesignRequest(grid, wanted, tpot_s, ttft_s, default_cap, ceiling,
                              nominal.get("sharegpt") or _sharegpt_nominal(plant, grid, tpot_s, ceiling),
                              self.allow_uncertified),
                specs,
                errors,
                notes,
            )
        return PlantSetup(
            plant=name,
            tpot_slo_s=tpot_s,
            ttft_slo_s=ttft_s,
            batch1_step_s=batch1_s,
            default_cap=default_cap,
            max_num_seqs=ceiling,
            nominal_rate_req_s=nominal,
            native_rate_req_s=native,
            specs=specs,
            errors=errors,
            notes=notes,
            max_batched_tokens=int(plant.max_batched_tokens_default),
        )

    def _bca(self, plant: Any, tpot_s: float, ceiling: int) -> tuple[str, dict[str, Any]]:
        """BCA's offline sweep on the plant: saturating ShareGPT load, one run per cap."""
        from controlkit.sim import SLO, load_workload, simulate
        from policies import build_policy
        from policies.baselines import bca_select, bca_sweep

        wl = load_workload("sharegpt:all-at-once", num_requests=BCA_SWEEP_REQUESTS, seed=0)
        ctx = engine_context(plant, ceiling)
        slo = SLO(ttft_s=1e6, tpot_s=tpot_s)

        def run(batch: int) -> tuple[float, float, float]:
            m = simulate(
                plant, wl, build_policy(f"static:max_num_seqs={batch}", ctx), slo=slo, max_num_seqs=ceiling
            ).metrics
            return (m.num_finished / m.sim_time_s, m.tpot_p50_s, m.kv_usage_p99)

        sink: list[str] = []
        grid = [b for b in (1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384, 512) if b <= ceiling]
        with recorded_warnings(sink):
            table = bca_sweep(run, grid)
            b_opt = bca_select(table, rule="a", latency_limit_s=tpot_s)
        return f"bca:b_opt={b_opt}", {
            "b_opt": b_opt,
            "rule": "a (E(B) > 0.2, mean ITL <= TPOT SLO)",
            "requests": BCA_SWEEP_REQUESTS,
            "table": [[p.batch, round(p.throughput, 4), round(p.latency_s, 6)] for p in table],
            "warnings": sink,
        }

    # ------------------------------------------------------------------ cells
    def run_cell(self, task: CellTask) -> dict[str, float]:
        """Simulate one cell; returns the metrics as a flat mapping."""
        if task.error:
            raise ControlkitError(task.error)
        from controlkit.sim import SLO, load_workload, simulate
        from policies import build_policy

        plant = _plant(task.plant)
        sink: list[str] = []
        window = task.window_s > 0
        with recorded_warnings(sink):
            wl = load_workload(
                task.workload_spec,
                rate_scale=task.rate_scale,
                num_requests=task.num_requests if not window or task.workload_spec.startswith("sharegpt") else None,
                seed=task.seed,
                start_s=task.start_s,
            )
            if window:
                wl = _window(wl, task)
            policy = build_policy(task.spec, engine_context(plant, task.max_num_seqs))
            if task.guard:
                from controlkit.app.bench.guarded import GuardedPolicy

                policy = GuardedPolicy(policy, task.guard, ttft_slo_s=task.ttft_slo_s)
            result = simulate(
                plant,
                wl,
                policy,
                slo=SLO(ttft_s=task.ttft_slo_s, tpot_s=task.tpot_slo_s, timeout_s=task.timeout_s or None),
                max_num_seqs=task.max_num_seqs,
                seed=task.seed,
                # protocol cells: arrivals stop at the horizon, then the engine drains, so that every
                # request arriving in the window ends (finished, rejected or timed out) before it is judged
                horizon_s=None if window else task.horizon_s,
                window_s=(task.warmup_s, task.warmup_s + task.window_s) if window else None,
            )
        metrics = {k: float(v) for k, v in result.metrics.to_dict().items() if isinstance(v, int | float)}
        offered = (len(wl) - 1) / wl.duration_s if len(wl) > 1 and wl.duration_s > 0 else math.nan
        metrics["offered_rate_req_s"] = offered
        metrics["num_warnings"] = float(len(sink))
        return metrics


def _window(wl: Any, task: CellTask) -> Any:
    """Return the requests of a protocol cell's horizon; a trace window rescaled to its own mean rate."""
    if task.rate_req_s > 0 and len(wl) > 1:
        inside = int((wl.arrival_s < task.horizon_s).sum())  # arrivals at the first-guess scale
        local = inside / task.horizon_s
        if local > 0:
            wl = wl.subset(slice(None), rate_scale=task.rate_req_s / local)
    return wl.subset(wl.arrival_s < task.horizon_s)


def _sharegpt_nominal(plant: Any, grid: BenchGrid, tpot_s: float, ceiling: int) -> float:
    from controlkit.sim import load_workload

    wl, _ = load_workload("sharegpt:poisson:1", num_requests=grid.id_num_requests, seed=grid.seed).clipped(
        int(plant.max_model_len)
    )
    return nominal_rate_req_s(
        plant,
        prompt_tokens=float(wl.prompt_tokens.mean()),
        output_tokens=float(wl.output_tokens.mean()),
        tpot_slo_s=tpot_s,
        max_num_seqs=ceiling,
    )
