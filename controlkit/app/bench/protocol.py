"""The benchmark protocol (docs/benchmarks.md states it; this module enforces it).

- **Loads relative to measured capacity.**  Each (plant, workload) has its capacity
  *measured* on the plant (:func:`~controlkit.app.bench.protocol_run.measure_capacity`: the
  highest rate at which vLLM's default configuration meets both SLOs for >= 90% of the
  requests of a tune window, by bisection).  Load factors (default 0.5 ... 1.3) multiply it.
- **A fixed measurement window.**  Every cell simulates ``warmup_s + window_s + tail_s``
  seconds of arrivals; goodput counts the good requests that finish inside
  ``[warmup_s, warmup_s + window_s]`` divided by ``window_s``; attainment, rejection rate,
  timeout rate and the all-request TTFT p99 are over the requests arriving in the window.
- **Bounded waiting.**  Every request has a client timeout (``timeout_factor`` x the TTFT
  SLO): a request without its first token by then is aborted by its client.
- **Every baseline with and without the admission layer** (:mod:`controlkit.app.bench.guarded`,
  the guard numbers of the plant's designed controllers).
- **Static caps swept from 1 upward** (:func:`cap_grid`: 1..8, then geometric with ratio
  <= 1.25, up to the plant's KV-bound batch and the engine ceiling).
- **A frozen split.**  :data:`TUNE_SEEDS` (0-4) choose everything chosen in hindsight (the
  best static caps, per plant); :data:`HOLDOUT_SEEDS` (5-9) are the only seeds the report
  table is computed on.  A protocol can use fewer seeds of each, never move one across.
- **Seeds are trace windows.**  Seed ``k`` replays a trace from ``start_s`` =
  :func:`trace_start_s` (distinct windows of the trace), and draws new arrivals for
  synthetic workloads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from controlkit.app.bench.grid import CellTask, PlantSetup, SLOSpec
from identification.errors import PolicyError

__all__ = [
    "DEFAULT_PROTOCOL",
    "GOAL_LOADS",
    "HOLDOUT_SEEDS",
    "QUICK_PROTOCOL",
    "TUNE_SEEDS",
    "Protocol",
    "cap_grid",
    "trace_start_s",
    "vllm_default_limits",
]

#: The frozen split: hindsight choices are made on these seeds only ...
TUNE_SEEDS: tuple[int, ...] = (0, 1, 2, 3, 4)
#: ... and the report table is computed on these only.
HOLDOUT_SEEDS: tuple[int, ...] = (5, 6, 7, 8, 9)
#: Loads of the issue's goal (x measured capacity).
GOAL_LOADS: tuple[float, float] = (0.8, 1.2)
#: Trace length assumed when spacing trace windows (the bundled traces are about an hour).
TRACE_SPAN_S = 3400.0
#: Number of distinct trace windows (one per seed of both splits).
NUM_WINDOWS = len(TUNE_SEEDS) + len(HOLDOUT_SEEDS)


def vllm_default_limits(plant: str) -> tuple[int, int]:
    """``(max_num_seqs, max_num_batched_tokens)`` that vLLM 0.33 sets for ``vllm serve`` on the plant's GPU.

    ``EngineArgs._set_default_max_num_seqs_and_batched_tokens_args``: H100/H200 (>= 70 GiB,
    not A100) get 1024 and 8192 for the OpenAI server; other GPUs (A100) 256 and 2048.

    Examples
    --------
    >>> vllm_default_limits("vllm-h100:llama-2-7b"), vllm_default_limits("vidur-a100:llama-2-7b")
    ((1024, 8192), (256, 2048))
    """
    gpu = plant.split(":")[0].lower()
    if "h100" in gpu or "h200" in gpu:
        return 1024, 8192
    return 256, 2048


def cap_grid(upper: int, *, ratio: float = 1.25, extra: Sequence[int] = ()) -> tuple[int, ...]:
    """Return static caps from 1 to ``upper``: every integer to 8, then geometric with ``ratio``.

    Examples
    --------
    >>> cap_grid(40)
    (1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 18, 22, 27, 33, 40)
    """
    if not 1.0 < ratio <= 1.25:
        raise PolicyError(f"cap grid ratio must be in (1, 1.25], got {ratio}")
    caps = set(range(1, min(8, upper) + 1))
    c = 8
    while c < upper:  # floor: consecutive caps never differ by more than ``ratio``
        c = min(upper, max(c + 1, math.floor(c * ratio)))
        caps.add(c)
    caps.update(x for x in extra if 1 <= x <= upper)
    return tuple(sorted(caps))


def trace_start_s(seed: int, needed_trace_s: float, span_s: float = TRACE_SPAN_S) -> float:
    """Start of seed ``seed``'s window in a trace: windows spread evenly over the trace.

    Windows of ``needed_trace_s`` trace seconds start at ``k * (span - needed) / 9``; they
    are disjoint when ten fit in the trace and overlap partly otherwise (never identical).
    Tune and hold-out windows interleave (tune seed ``s`` is window ``k = 2s``, hold-out seed
    ``5 + s`` is window ``k = 2s + 1``), so a trace whose burstiness drifts over the hour does not
    put every calm window on one side of the split.

    Examples
    --------
    >>> trace_start_s(0, 300.0), trace_start_s(9, 300.0)
    (0.0, 3100.0)
    """
    half = NUM_WINDOWS // 2
    k = 2 * seed if seed < half else 2 * (seed - half) + 1
    return max(span_s - needed_trace_s, 0.0) * k / (NUM_WINDOWS - 1)


@dataclass(frozen=True, slots=True)
class Protocol:
    """What one protocol run covers (see the module docstring for the rules it enforces).

    Parameters
    ----------
    plants, workloads
        Plants and workloads; trace workloads (``azure-conv``, ``azure-code``, ``mooncake``)
        or ``step:<a>:<b>`` (Poisson, rates ``a``, ``b`` x the load, switching half-way).
    loads
        Load factors x each (plant, workload)'s measured capacity.
    tune_seeds, holdout_seeds
        Subsets of :data:`TUNE_SEEDS` and :data:`HOLDOUT_SEEDS`.
    warmup_s, window_s, tail_s
        The measurement window ``[warmup_s, warmup_s + window_s]`` and the simulated time after
        it (arrivals continue to the end; at least the client timeout).
    timeout_factor
        Client timeout = this x the plant's TTFT SLO.
    late_action
        What the admission layer does with late requests (``"reject"`` or ``"demote"``),
        for every policy behind it.
    baselines
        Policy labels run on the hold-out seeds besides the static sweeps' choices and the
        controllers (see :data:`controlkit.app.bench.protocol_run.BASELINES`).
    controllers
        The designed controllers (``pid``, ``optimal``, ``mpc``).
    cap_ratio
        Ratio of the static cap grid (<= 1.25).
    slo
        How per-plant SLOs are set.
    capacity_requests, id_num_requests
        Requests of each capacity measurement, and of each identification run.
    sweep_loads
        Loads of the tune sweep (default: :attr:`loads`); the hindsight choice uses only the
        goal loads, so sweeping just those saves time without changing it.
    """

    plants: tuple[str, ...]
    workloads: tuple[str, ...]
    loads: tuple[float, ...] = (0.5, 0.8, 1.0, 1.2, 1.3)
    tune_seeds: tuple[int, ...] = TUNE_SEEDS
    holdout_seeds: tuple[int, ...] = HOLDOUT_SEEDS
    warmup_s: float = 30.0
    window_s: float = 120.0
    tail_s: float = 30.0
    timeout_factor: float = 3.0
    late_action: str = "reject"
    baselines: tuple[str, ...] = (
        "static-default", "static-default+guard", "pang-a1a2", "pang-a1a2+guard", "bca", "bca+guard"
    )
    controllers: tuple[str, ...] = ("pid", "optimal", "mpc")
    cap_ratio: float = 1.25
    slo: SLOSpec = field(default_factory=SLOSpec)
    capacity_requests: int = 300
    id_num_requests: int = 600
    sweep_loads: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not set(self.tune_seeds) <= set(TUNE_SEEDS) or not set(self.holdout_seeds) <= set(HOLDOUT_SEEDS):
            raise PolicyError(
                f"the split is frozen: tune seeds must come from {TUNE_SEEDS}, hold-out seeds from {HOLDOUT_SEEDS}; "
                f"got {self.tune_seeds} and {self.holdout_seeds}"
            )
        if not self.tune_seeds or not self.holdout_seeds:
            raise PolicyError("a protocol needs at least one tune seed and one hold-out seed")
        if not (self.plants and self.workloads and self.loads) or any(not x > 0 for x in self.loads):
            raise PolicyError("a protocol needs plants, workloads and loads > 0")
        if not (self.window_s > 0 and self.warmup_s >= 0 and self.tail_s >= 0 and self.timeout_factor > 0):
            raise PolicyError("window_s must be > 0; warmup_s, tail_s >= 0; timeout_factor > 0")
        if self.late_action not in ("reject", "demote"):
            raise PolicyError(f"late_action must be 'reject' or 'demote', got {self.late_action!r}")

    def with_overrides(self, **changes: Any) -> Protocol:
        """Return a copy with the given fields replaced (``None`` values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def horizon_s(self, ttft_slo_s: float) -> float:
        """Return the simulated seconds per cell: warm-up, window, and a tail of at least the client timeout."""
        return self.warmup_s + self.window_s + max(self.tail_s, self.timeout_factor * ttft_slo_s)

    def cell(
        self,
        setup: PlantSetup,
        workload: str,
        load: float,
        seed: int,
        policy: str,
        spec: str | Mapping[str, Any],
        *,
        capacity_req_s: float,
        native_req_s: float | None,
        guard: Mapping[str, Any] | None,
        error: str = "",
    ) -> CellTask:
        """One protocol cell: the workload at ``load`` x capacity, seed ``seed``'s window."""
        horizon = self.horizon_s(setup.ttft_slo_s)
        rate = load * capacity_req_s
        kind, *parts = workload.split(":")
        start = 0.0
        if kind == "step":
            a, b = float(parts[0]) * rate, float(parts[1]) * rate
            spec_wl, scale = f"step:{a:.6g}:{b:.6g}:{horizon / 2.0:.6g}", 1.0
        elif kind == "sharegpt":
            spec_wl, scale = f"sharegpt:poisson:{rate:.6g}", 1.0
        else:
            if not (native_req_s and native_req_s > 0):
                error = error or f"workload {workload!r}: its native arrival rate is unknown"
                native_req_s = 1.0
            scale = rate / native_req_s
            start = trace_start_s(seed, horizon * scale)
            spec_wl = workload
        return CellTask(
            plant=setup.plant,
            workload=workload,
            load=load,
            workload_spec=spec_wl,
            rate_scale=scale,
            policy=policy,
            spec=spec,
            tpot_slo_s=setup.tpot_slo_s,
            ttft_slo_s=setup.ttft_slo_s,
            max_num_seqs=setup.max_num_seqs,
            num_requests=max(1, math.ceil(rate * horizon * 2)),
            horizon_s=horizon,
            seed=seed,
            error=error,
            warmup_s=self.warmup_s,
            window_s=self.window_s,
            timeout_s=self.timeout_factor * setup.ttft_slo_s,
            start_s=start,
            guard=guard,
            rate_req_s=rate if kind not in ("step", "sharegpt") else 0.0,
        )


#: The protocol's table: what docs/benchmarks.md is rendered from (sized for <= 25 min on 2 cores).
DEFAULT_PROTOCOL = Protocol(
    plants=("vllm-h100:llama-2-7b", "splitwise-a100-tp4:llama2-70b"),
    workloads=("azure-conv", "mooncake"),
    tune_seeds=(0, 1),
    warmup_s=20.0,
    window_s=60.0,
    sweep_loads=(0.8, 1.0, 1.2),
)

#: A tiny protocol for tests and CI (seconds).
QUICK_PROTOCOL = Protocol(
    plants=("vllm-h100:llama-2-7b",),
    workloads=("azure-conv",),
    loads=(0.8, 1.2),
    tune_seeds=(0,),
    holdout_seeds=(5, 6),
    warmup_s=5.0,
    window_s=20.0,
    tail_s=5.0,
    baselines=("static-default", "pang-a1a2"),
    controllers=("pid",),
    cap_ratio=1.25,
    capacity_requests=80,
    id_num_requests=200,
)
