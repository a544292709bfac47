"""The benchmark grid: plants x workloads x load factors x policies (DESIGN.md §7).

A :class:`BenchGrid` names what to run.  Each plant is first *prepared* once
(:class:`PlantSetup`: its SLOs, its engine limits, the nominal arrival rate of every
workload on it, and the concrete policy specs, including the controllers designed from
identified telemetry); :func:`controlkit.app.bench.cells.expand_cells` then turns the grid and
the setups into :class:`CellTask` records, one per simulation.

Load factors, not raw rate multipliers, span the grid: a load factor of 1.0 is the
workload's *nominal* rate on that plant (an estimate of the rate the plant saturates at
while meeting the TPOT SLO, see :mod:`controlkit.app.bench.backend`), so the same factors mean
"light" or "overload" on a 7B and on a 70B plant alike.  :func:`~controlkit.app.bench.cells.materialize_workload`
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
    "is_non_stationary",
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
