"""The benchmark grid: plants x workloads x load factors x policies (DESIGN.md §7).

A :class:`BenchGrid` names what to run.  Each plant is first *prepared* once
(:class:`PlantSetup`: its SLOs, its engine limits, the nominal arrival rate of every
workload on it, and the concrete policy specs, including the controllers designed from
identified telemetry); :func:`expand_cells` then turns the grid and the setups into
:class:`CellTask` records, one per simulation.

Load factors, not raw rate multipliers, span the grid: a load factor of 1.0 is the
workload's *nominal* rate on that plant (an estimate of the rate the plant saturates at
while meeting the TPOT SLO, see :mod:`controlkit.app.bench.backend`), so the same factors mean
"light" or "overload" on a 7B and on a 70B plant alike.  :func:`materialize_workload`
turns (workload, load) into what the workload loader gets: a trace is replayed at
``rate_scale = load * nominal / native``; in ``step:<a>:<b>[:<t_s>]``,
``ramp:<a>:<b>[:<dur_s>]`` and ``sharegpt`` the rates are *relative to the nominal rate*,
and an omitted time is chosen so that each cell sees about ``num_requests`` requests
(half of them before a step).

Examples
--------
>>> grid = QUICK_GRID
>>> len(grid.static_caps) > 0 and "static-default" in grid.policies
True
>>> policy_spec("pang-a2", tpot_s=0.05, ttft_s=2.0, max_num_seqs=256, default_cap=256)
'pang-a2:sla_s=0.05'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from identification.errors import PolicyError

__all__ = [
    "BEST_STATIC",
    "CONTROLLERS",
    "DEFAULT_GRID",
    "DEFAULT_POLICIES",
    "NON_STATIONARY_PREFIXES",
    "POLICY_TEMPLATES",
    "QUICK_GRID",
    "STATIC_DEFAULT",
    "BenchGrid",
    "CellTask",
    "PlantSetup",
    "SLOSpec",
    "expand_cells",
    "is_non_stationary",
    "materialize_workload",
    "policy_spec",
    "static_label",
]

#: Label of vLLM's default static cap (256; 1024 on large GPUs; the plant says which).
STATIC_DEFAULT = "static-default"
#: Label of the best static cap in hindsight (derived from the static sweep, never simulated).
BEST_STATIC = "best-static"
#: Ablation label: the static default cap behind the controllers' admission layer.
STATIC_GUARD = "guarded-static"
#: The controlkit controllers; their specs are policy files designed from identified telemetry.
CONTROLLERS: tuple[str, ...] = ("pid", "optimal", "mpc")

#: Research baselines as spec templates; ``{tpot_s}``, ``{ttft_s}``, ``{max_num_seqs}``,
#: ``{default_cap}`` are filled per plant.  ``bca`` is filled by the prepared setup (its
#: offline sweep), the controllers by their designed policy files.
POLICY_TEMPLATES: dict[str, str] = {
    STATIC_DEFAULT: "static:max_num_seqs={default_cap}",
    "pang-a1": "pang-a1",
    "pang-a2": "pang-a2:sla_s={tpot_s}",
    "pang-a1a2": "pang-a1a2:sla_s={tpot_s}",
    "trtllm-tuner": "trtllm-tuner",
    "sglang-ratio": "sglang-ratio",
    "bucketserve": "bucketserve",
    "uellm": "uellm",
    # ablation: vLLM's default cap behind the controllers' admission layer (memory guard + deadline order)
    STATIC_GUARD: "static-guard:max_num_seqs={default_cap},ttft_s={ttft_s}",
}

#: Every policy of DESIGN.md §7, in report order.
DEFAULT_POLICIES: tuple[str, ...] = (
    STATIC_DEFAULT,
    BEST_STATIC,
    "pang-a1",
    "pang-a2",
    "pang-a1a2",
    "trtllm-tuner",
    "sglang-ratio",
    "bucketserve",
    "uellm",
    "bca",
    *CONTROLLERS,
    STATIC_GUARD,
)

#: Workload names starting with these are non-stationary (load steps and ramps).
NON_STATIONARY_PREFIXES: tuple[str, ...] = ("step:", "ramp:")


def is_non_stationary(workload: str) -> bool:
    """Whether ``workload`` is a load step or ramp (the non-stationary rows of the report)."""
    return workload.startswith(NON_STATIONARY_PREFIXES)


def static_label(cap: int, token_budget: int | None = None) -> str:
    """Label of a static-sweep cell: ``"static-64"``, or ``"static-64-t512"`` with a token budget."""
    return f"static-{cap}" if token_budget is None else f"static-{cap}-t{token_budget}"


@dataclass(frozen=True, slots=True)
class SLOSpec:
    """How each plant's SLOs are set (documented in the report).

    Parameters
    ----------
    tpot_factor
        TPOT p99 SLO = ``tpot_factor`` x the plant's batch-1 decode step time.
    ttft_s
        TTFT p99 SLO floor in seconds.
    ttft_prefill_factor
        The TTFT SLO is raised to ``ttft_prefill_factor`` x the time of one full prefill
        chunk on slow plants, so that it stays attainable there.
    """

    tpot_factor: float = 3.0
    ttft_s: float = 2.0
    ttft_prefill_factor: float = 10.0

    def __post_init__(self) -> None:
        for name in ("tpot_factor", "ttft_s", "ttft_prefill_factor"):
            value = getattr(self, name)
            if not value > 0:
                raise PolicyError(f"SLOSpec.{name} must be > 0, got {value!r}")


@dataclass(frozen=True, slots=True)
class BenchGrid:
    """What one benchmark run covers.

    Parameters
    ----------
    plants, workloads
        Plant and workload names as :mod:`controlkit.sim` loads them.
    loads
        Load factors (multiples of each workload's nominal rate on each plant).
    policies
        Policy labels (see :data:`DEFAULT_POLICIES`) or raw spec strings.
    static_caps
        Admission caps of the static sweep from which the best static in hindsight is
        chosen (vLLM ``max_num_seqs``).  The plant's default cap is always added.
    static_token_budgets
        Per-step token budgets (vLLM ``max_num_batched_tokens``) swept with every cap, as
        vLLM's ``auto_tune`` does; the engine's default budget is always included.
    num_requests
        Requests per cell (caps the cost of a cell).
    horizon_s
        Simulated-time horizon per cell; requests still running then count as unfinished.
    seed
        Seed of every cell (common random numbers: all policies see the same arrivals).
    slo
        How per-plant SLOs are set.
    id_num_requests
        Requests in each plant's identification run (controllers are designed from it).
    """

    plants: tuple[str, ...]
    workloads: tuple[str, ...]
    loads: tuple[float, ...]
    policies: tuple[str, ...] = DEFAULT_POLICIES
    static_caps: tuple[int, ...] = (16, 32, 48, 64, 96, 128, 192, 256, 512)
    static_token_budgets: tuple[int, ...] = (512, 2048)
    num_requests: int = 600
    horizon_s: float = 600.0
    seed: int = 0
    slo: SLOSpec = field(default_factory=SLOSpec)
    id_num_requests: int = 600

    def __post_init__(self) -> None:
        for name in ("plants", "workloads", "loads", "policies"):
            if len(getattr(self, name)) == 0:
                raise PolicyError(f"BenchGrid.{name} is empty; give at least one")
        if any(not (x > 0) for x in self.loads):
            raise PolicyError(f"load factors must be > 0, got {self.loads}")
        if any(c < 1 for c in (*self.static_caps, *self.static_token_budgets)):
            raise PolicyError(
                f"static caps and token budgets must be >= 1, got {self.static_caps}, {self.static_token_budgets}"
            )
        if self.num_requests < 1 or self.id_num_requests < 1:
            raise PolicyError("num_requests and id_num_requests must be >= 1")
        if not self.horizon_s > 0:
            raise PolicyError(f"horizon_s must be > 0, got {self.horizon_s}")

    def with_overrides(self, **changes: Any) -> BenchGrid:
        """Return a copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def needs_static_sweep(self) -> bool:
        """Whether the static sweep must run (for the best static in hindsight)."""
        return BEST_STATIC in self.policies


@dataclass(frozen=True, slots=True)
class PlantSetup:
    """A plant prepared for the benchmark (computed once per plant, before the cells).

    Parameters
    ----------
    plant
        Plant name.
    tpot_slo_s, ttft_slo_s
        The plant's SLOs (p99 targets).
    batch1_step_s
        The plant's decode step time at batch 1 (what the TPOT SLO is a multiple of).
    default_cap
        vLLM's default ``max_num_seqs`` on this plant's GPU.
    max_num_seqs
        The engine ceiling given to the simulator and to policies.
    max_batched_tokens
        The engine's default per-step token budget (0 when unknown).
    nominal_rate_req_s
        Workload -> its nominal arrival rate on this plant (load factor 1.0), requests/s.
    native_rate_req_s
        Workload -> the trace's own mean arrival rate over the requests a cell replays
        (requests/s; absent for synthetic workloads).
    specs
        Policy label -> concrete spec (a spec string or a ``controlkit.policy/2`` mapping).
    errors
        Policy label -> why its spec could not be prepared (the cells report it).
    notes
        Free-form facts for the report (identified slope, BCA pick, design summaries).
    """

    plant: str
    tpot_slo_s: float
    ttft_slo_s: float
    batch1_step_s: float
    default_cap: int
    max_num_seqs: int
    nominal_rate_req_s: Mapping[str, float]
    native_rate_req_s: Mapping[str, float]
    specs: Mapping[str, str | Mapping[str, Any]]
    errors: Mapping[str, str] = field(default_factory=dict)
    notes: Mapping[str, Any] = field(default_factory=dict)
    max_batched_tokens: int = 0


@dataclass(frozen=True, slots=True)
class CellTask:
    """One simulation of the grid: everything a worker needs, all picklable.

    ``spec`` is empty and ``error`` set when the policy could not be prepared; the runner
    then reports the cell as failed without simulating it.

    The protocol's fields (:mod:`controlkit.app.bench.protocol`; all 0 / empty in the legacy
    grid): ``window_s`` > 0 measures over ``[warmup_s, warmup_s + window_s]`` and simulates
    to ``horizon_s``, replaying every request that arrives before it (``num_requests`` is
    then ignored); ``timeout_s`` is the client timeout; ``start_s`` the trace window's start;
    ``guard`` the admission layer's parameters when the policy runs behind it; ``rate_req_s``
    > 0 rescales a trace window so that its *own* mean arrival rate over the horizon is this
    (``rate_scale`` is then only the first guess of the window's length).
    """

    plant: str
    workload: str
    load: float
    workload_spec: str
    rate_scale: float
    policy: str
    spec: str | Mapping[str, Any]
    tpot_slo_s: float
    ttft_slo_s: float
    max_num_seqs: int
    num_requests: int
    horizon_s: float
    seed: int
    error: str = ""
    warmup_s: float = 0.0
    window_s: float = 0.0
    timeout_s: float = 0.0
    start_s: float = 0.0
    guard: Mapping[str, Any] | None = None
    rate_req_s: float = 0.0

    @property
    def key(self) -> tuple[str, str, float]:
        """The (plant, workload, load) operating point this cell belongs to."""
        return (self.plant, self.workload, self.load)


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
DEFAULT_GRID = BenchGrid(
    plants=(
        "vllm-h100:llama-2-7b",
        "vllm-h100:llama-2-13b",
        "vllm-h100:opt-2.7b",
        "vidur-a100:llama-2-7b",
        "splitwise-a100-tp4:llama2-70b",
    ),
    workloads=("azure-conv", "azure-code", "mooncake", "step:0.5:1.5", "ramp:0.3:1.7"),
    loads=(0.25, 0.5, 0.75, 1.0, 1.25),
)

#: A tiny grid for tests and CI: one plant, two workloads, two loads, seconds to run.
QUICK_GRID = BenchGrid(
    plants=("vllm-h100:llama-2-7b",),
    workloads=("azure-conv", "step:0.5:1.5"),
    loads=(0.6, 1.2),
    static_caps=(32, 128),
    static_token_budgets=(512,),
    num_requests=120,
    horizon_s=120.0,
    id_num_requests=200,
)
