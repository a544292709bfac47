"""Cells of the benchmark: a grid and its prepared plants expanded into simulations.

:func:`expand_cells` turns a :class:`~controlkit.app.bench.grid.BenchGrid` and its
:class:`~controlkit.app.bench.grid.PlantSetup` records into :class:`~controlkit.app.bench.grid.CellTask`
records, one per simulation; :func:`materialize_workload` turns (workload, load factor) into what
the workload loader gets, and :func:`policy_spec` a policy label into a concrete spec.

Examples
--------
>>> policy_spec("pang-a2", tpot_s=0.05, ttft_s=2.0, max_num_seqs=256, default_cap=256)
'pang-a2:sla_s=0.05'
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from controlkit.app.bench.grid import (
    BEST_STATIC,
    POLICY_TEMPLATES,
    STATIC_DEFAULT,
    BenchGrid,
    CellTask,
    PlantSetup,
    static_label,
)
from identification.errors import PolicyError

__all__ = ["expand_cells", "materialize_workload", "policy_spec"]


def policy_spec(label: str, *, tpot_s: float, ttft_s: float, max_num_seqs: int, default_cap: int) -> str:
    """Fill a research-policy template (or pass a raw spec string through).

    Parameters
    ----------
    label
        A key of :data:`POLICY_TEMPLATES`, or any spec string (``"static:max_num_seqs=64"``).
    tpot_s, ttft_s
        The plant's SLOs.
    max_num_seqs, default_cap
        The engine ceiling and vLLM's default cap on the plant.
    """
    template = POLICY_TEMPLATES.get(label, label)
    return template.format(
        tpot_s=round(tpot_s, 6), ttft_s=round(ttft_s, 6), max_num_seqs=max_num_seqs, default_cap=default_cap
    )


def materialize_workload(
    workload: str, load: float, *, nominal_req_s: float, native_req_s: float | None, num_requests: int
) -> tuple[str, float]:
    """Compute what the workload loader gets for ``workload`` at load factor ``load``.

    Returns ``(name, rate_scale)``.  Traces keep their name and are scaled to
    ``load * nominal_req_s``; synthetic loads get absolute rates and ``rate_scale=1``.

    Examples
    --------
    >>> materialize_workload("azure-conv", 2.0, nominal_req_s=10.0, native_req_s=5.0, num_requests=100)
    ('azure-conv', 4.0)
    >>> materialize_workload("step:0.5:1.5", 1.0, nominal_req_s=10.0, native_req_s=None, num_requests=200)
    ('step:5:15:10', 1.0)
    >>> materialize_workload("ramp:0.5:1.5:30", 2.0, nominal_req_s=10.0, native_req_s=None, num_requests=1)
    ('ramp:10:30:30', 1.0)
    """
    if not (nominal_req_s > 0 and load > 0):
        raise PolicyError(f"workload {workload!r}: nominal rate {nominal_req_s} and load {load} must be > 0")
    kind, *parts = workload.split(":")
    rate = nominal_req_s * load
    if kind in ("step", "ramp"):
        if len(parts) not in (2, 3):
            raise PolicyError(
                f"workload {workload!r}: expected {kind}:<a>:<b>[:<seconds>] with a, b relative to the nominal rate"
            )
        try:
            a, b = float(parts[0]) * rate, float(parts[1]) * rate
            t_s = (
                float(parts[2]) if len(parts) == 3 else 2.0 * num_requests / (a + b) / (2.0 if kind == "step" else 1.0)
            )
        except (ValueError, ZeroDivisionError) as exc:
            raise PolicyError(f"workload {workload!r}: rates and time must be numbers, a + b > 0") from exc
        return f"{kind}:{_num(a)}:{_num(b)}:{_num(t_s)}", 1.0
    if kind == "sharegpt" and not parts:
        return f"sharegpt:poisson:{_num(rate)}", 1.0
    if native_req_s is None or not native_req_s > 0:
        raise PolicyError(f"workload {workload!r}: its native arrival rate is unknown, cannot scale it")
    return workload, rate / native_req_s


def _num(x: float) -> str:
    return f"{x:.6g}"


def _materialize(workload: str, load: float, setup: PlantSetup, num_requests: int) -> tuple[str, float, str]:
    try:
        spec, scale = materialize_workload(
            workload,
            load,
            nominal_req_s=setup.nominal_rate_req_s.get(workload, 0.0),
            native_req_s=setup.native_rate_req_s.get(workload),
            num_requests=num_requests,
        )
    except PolicyError as exc:
        return workload, 1.0, str(exc)
    return spec, scale, ""


def _sweep_caps(grid: BenchGrid, setup: PlantSetup) -> list[int]:
    caps = {c for c in grid.static_caps if c <= setup.max_num_seqs}
    caps.add(setup.default_cap)
    return sorted(caps)


def expand_cells(grid: BenchGrid, setups: Mapping[str, PlantSetup]) -> list[CellTask]:
    """All cells of ``grid``, in a deterministic order.

    The best static in hindsight is not a cell: the static sweep (``static-<cap>``) is,
    and :mod:`controlkit.app.bench.hindsight` picks from it afterwards.  The static default is
    simulated once, as its sweep cell when the sweep runs.
    """
    cells: list[CellTask] = []
    for plant in grid.plants:
        setup = setups[plant]
        labels: list[tuple[str, str | Mapping[str, Any], str]] = []
        for label in grid.policies:
            if label == BEST_STATIC or (label == STATIC_DEFAULT and grid.needs_static_sweep):
                continue  # derived from the static sweep afterwards
            if label in setup.errors:
                labels.append((label, "", setup.errors[label]))
            elif label in setup.specs:
                labels.append((label, setup.specs[label], ""))
            else:
                labels.append((label, "", f"no spec prepared for policy {label!r} on plant {plant!r}"))
        if grid.needs_static_sweep:
            for cap in _sweep_caps(grid, setup):
                labels.append((static_label(cap), f"static:max_num_seqs={cap}", ""))
                for budget in grid.static_token_budgets:
                    if budget != setup.max_batched_tokens:
                        labels.append(
                            (
                                static_label(cap, budget),
                                f"static:max_num_seqs={cap},max_num_batched_tokens={budget}",
                                "",
                            )
                        )
        for workload in grid.workloads:
            for load in grid.loads:
                wl_spec, rate_scale, wl_error = _materialize(workload, load, setup, grid.num_requests)
                if "prepare_error" in setup.notes:
                    wl_error = f"plant preparation failed: {setup.notes['prepare_error']}"
                for label, spec, error in labels:
                    cells.append(
                        CellTask(
                            plant=plant,
                            workload=workload,
                            load=load,
                            workload_spec=wl_spec,
                            rate_scale=rate_scale,
                            policy=label,
                            spec=spec,
                            tpot_slo_s=setup.tpot_slo_s,
                            ttft_slo_s=setup.ttft_slo_s,
                            max_num_seqs=setup.max_num_seqs,
                            num_requests=grid.num_requests,
                            horizon_s=grid.horizon_s,
                            seed=grid.seed,
                            error=wl_error or error,
                        )
                    )
    return cells


#: The protocol's grid: measured plants, the four workload families, light to overload.
