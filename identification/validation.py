"""Physical sanity rules for fitted and loaded models (``docs/validation.md``).

A model that breaks one of these rules says something no engine can do (a step that gets
faster as the batch grows, a negative fixed cost, a batch of two trillion sequences, an
infinite KV cache).  :func:`model_problems` lists the broken rules; :func:`check_model` raises
:class:`~identification.errors.TelemetryError` naming each one.  ``identify`` and
``load_model`` both call :func:`check_model`, so nothing absurd becomes a model file or is read
back from one.

Examples
--------
>>> from identification.latency import LatencyModel
>>> m = LatencyModel(form="affine").fit({"batch": [1, 2, 4, 8, 16] * 4,
...     "step_s": [0.010, 0.011, 0.012, 0.014, 0.018] * 4})
>>> latency_problems(m)
[]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from identification.errors import TelemetryError

if TYPE_CHECKING:
    from identification.latency import LatencyModel
    from identification.memory import MemoryModel
    from identification.workload import WorkloadModel

__all__ = [
    "MAX_BATCH",
    "MAX_KV_BLOCKS",
    "MAX_STEP_S",
    "MAX_TOKENS",
    "check_model",
    "latency_problems",
    "memory_problems",
    "model_problems",
    "strict_json",
    "workload_problems",
]

#: Largest batch (running sequences) any engine runs; vLLM's ``max_num_seqs`` is at most a few thousand.
MAX_BATCH = 65_536
#: Longest credible engine step, seconds (a whole-minute step is a stalled engine, not a plant).
MAX_STEP_S = 60.0
#: Largest KV cache, blocks (10^9 blocks of 16 tokens: 16 G tokens, far beyond any GPU node).
MAX_KV_BLOCKS = 10**9
#: Largest credible request length, tokens.
MAX_TOKENS = 10**8


def strict_json(obj: Any) -> Any:
    """Replace NaN/inf floats by ``None`` (recursively) so ``json.dumps(allow_nan=False)`` succeeds."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [strict_json(v) for v in obj]
    return obj


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def latency_problems(m: LatencyModel) -> list[str]:
    """Broken rules of a fitted :class:`LatencyModel` (empty when it is physically plausible)."""
    out: list[str] = []
    if not _finite(m.slope_) or m.slope_ <= 0:
        out.append(f"latency slope {m.slope_!r} s/seq is not > 0 (a bigger batch cannot step faster)")
    if not _finite(m.intercept_s_) or m.intercept_s_ < 0:
        out.append(f"latency intercept {m.intercept_s_!r} s is not >= 0 (a step has a fixed cost)")
    bad = sorted(k for k, v in m.coef_.items() if not _finite(v))
    if bad:
        out.append(f"latency coefficients {bad} are not finite")
    lo, hi = m.batch_range_
    if not (_finite(lo) and _finite(hi) and 0 < lo <= hi <= MAX_BATCH):
        out.append(f"batch range [{lo:g}, {hi:g}] is not within [1, {MAX_BATCH}] sequences (what an engine runs)")
    elif out == []:
        try:
            step_hi = float(m.predict_step_s(hi))
        except (ValueError, ArithmeticError, IndexError, TypeError, KeyError) as exc:
            step_hi = float("nan")
            out.append(f"the model cannot predict a step at batch {hi:g} ({exc})")
        if not (math.isfinite(step_hi) and 0 < step_hi <= MAX_STEP_S):
            out.append(f"predicted step at batch {hi:g} is {step_hi!r} s, not within (0, {MAX_STEP_S:g}] s")
    if not (_finite(m.residual_scale_s_) and m.residual_scale_s_ >= 0) and not math.isnan(m.residual_scale_s_):
        out.append(f"residual scale {m.residual_scale_s_!r} s is not a finite value >= 0")
    return out


def memory_problems(m: MemoryModel) -> list[str]:
    """Broken rules of a fitted :class:`MemoryModel`."""
    out: list[str] = []
    if not getattr(m, "known_", True):  # memory marked unknown (no capacity in the telemetry): no numbers to check
        if not (isinstance(m.block_size_, int) and 1 <= m.block_size_ <= 4096):
            out.append(f"block size {m.block_size_!r} is not within [1, 4096] tokens")
        return out
    cap = m.capacity_blocks_
    if not (isinstance(cap, int) and not isinstance(cap, bool) and 1 <= cap <= MAX_KV_BLOCKS):
        out.append(f"KV capacity {cap!r} blocks is not a whole number in [1, {MAX_KV_BLOCKS:.0e}]")
    if not (isinstance(m.block_size_, int) and 1 <= m.block_size_ <= 4096):
        out.append(f"block size {m.block_size_!r} is not within [1, 4096] tokens")
    if not (_finite(m.blocks_per_seq_) and m.blocks_per_seq_ > 0):
        out.append(f"blocks per sequence {m.blocks_per_seq_!r} is not > 0")
    elif isinstance(cap, int) and m.blocks_per_seq_ > cap:
        out.append(f"blocks per sequence {m.blocks_per_seq_:g} exceeds the capacity {cap} blocks")
    if not (_finite(m.blocks_per_token_) and 0 < m.blocks_per_token_ <= 1):
        out.append(f"blocks per token {m.blocks_per_token_!r} is not within (0, 1]")
    if not (_finite(m.tokens_per_seq_) and 0 <= m.tokens_per_seq_ <= MAX_TOKENS):
        out.append(f"tokens per sequence {m.tokens_per_seq_!r} is not within [0, {MAX_TOKENS:.0e}]")
    onset = m.preemption_onset_
    if onset is not None and not (0 <= onset <= MAX_KV_BLOCKS):
        out.append(f"preemption onset {onset!r} is not a batch >= 0")
    return out


def workload_problems(m: WorkloadModel) -> list[str]:
    """Broken rules of a fitted :class:`WorkloadModel`."""
    out: list[str] = []
    for name in ("prompt_tokens_mean_", "output_tokens_mean_"):
        v = getattr(m, name)
        if not (_finite(v) and 0 <= v <= MAX_TOKENS):
            out.append(f"workload {name[:-1]} {v!r} is not within [0, {MAX_TOKENS:.0e}] tokens")
    for name in ("prompt_tokens_quantiles_", "output_tokens_quantiles_"):
        q = getattr(m, name)
        if q is not None and not all(_finite(x) and 0 <= x <= MAX_TOKENS for x in q):
            out.append(f"workload {name[:-1]} hold values outside [0, {MAX_TOKENS:.0e}] tokens")
    for name in ("arrival_rate_per_s_", "interarrival_cv2_", "gamma_shape_"):
        v = getattr(m, name)
        if v is not None and not (_finite(v) and v >= 0):
            out.append(f"workload {name[:-1]} {v!r} is not a finite value >= 0")
    if not (isinstance(m.n_requests_, int) and m.n_requests_ >= 0):
        out.append(f"workload n_requests {m.n_requests_!r} is not a count >= 0")
    return out


class _PlantLike(Protocol):
    """What the sanity rules read of a plant model (:class:`identification.plant.PlantModel`)."""

    @property
    def latency(self) -> LatencyModel: ...

    @property
    def memory(self) -> MemoryModel: ...

    @property
    def workload(self) -> WorkloadModel | None: ...


_Plant = TypeVar("_Plant", bound=_PlantLike)


def model_problems(model: _PlantLike) -> list[str]:
    """Every broken sanity rule of a plant model (latency, memory, workload)."""
    out = latency_problems(model.latency) + memory_problems(model.memory)
    if model.workload is not None:
        out += workload_problems(model.workload)
    return out


def check_model(model: _Plant, *, path: str = "<telemetry>") -> _Plant:
    """Return ``model`` if it is physically plausible, else raise naming every broken rule.

    Raises
    ------
    TelemetryError
        At least one rule of ``docs/validation.md`` is broken; the message lists them and
        suggests where outlier rows come from.
    """
    problems = model_problems(model)
    if problems:
        raise TelemetryError(
            "the model is physically implausible: " + "; ".join(problems)
            + " (look for outlier or corrupt rows, e.g. a running count of 1e15; select runs with "
            "--where or skip bad rows with --skip-bad-rows)",
            path=path,
        )
    return model
