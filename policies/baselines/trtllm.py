"""TensorRT-LLM's ``DynamicBatchTuner``: moving-average lengths → KV capacity → step table.

Source: ``cpp/tensorrt_llm/executor/dynamicBatchTuner.{h,cpp}`` and its caller
``Executor::Impl::forwardAsync`` in NVIDIA/TensorRT-LLM (read 2025 versions).  Per iteration:

1. ``avg_in``, ``avg_out`` = moving averages of the input and output lengths of the last
   ``window`` (default 128) finished requests, truncated to integers;
2. ``capacity = num_kv_blocks // ceil((avg_in + avg_out) / tokens_per_block)``
   (``KVCacheManager::getMaxCapacityBatchSize``, one beam, no sink tokens, full attention);
3. the runtime batch size is the value of the first table row ``(limit, size)`` with
   ``capacity < limit``; past the table, ``capacity`` rounded down to a multiple of 512 when it
   is less than 128 above that multiple, else ``capacity`` itself;
4. the applied cap is ``min(engine max batch size, runtime batch size)``.

Optionally (``tune_max_num_tokens``) the token budget follows ``getRuntimeMaxNumTokens``:
``max(2^ceil(log2(b·avg_in/avg_out + b)), threshold)`` with threshold 8192 / 4096 / 2048
for ISL/OSL above 2 / above 0.5 / otherwise, capped by the engine's budget.

Substitute for a signal the contract lacks: TensorRT-LLM learns the lengths of *finished*
requests; an :class:`~controlkit.contract.Observation` carries only per-step token counts.
The tuner therefore accumulates prefill and decode tokens between steps that finish
requests, and records each such step as ``num_finished`` requests with mean input
``Σprefill/finished`` and mean output ``(Σdecode + finished)/finished`` (the first output
token comes from prefill).  Over a window this ratio estimator equals the mean lengths in
steady state; recomputed (preempted) prefills inflate ``avg_in``.  Fixed values can be given
with ``avg_input_tokens`` / ``avg_output_tokens``.  Before any length is known the cap stays
at the engine's ``max_num_seqs``.

Examples
--------
>>> runtime_batch_size(143), runtime_batch_size(1665), runtime_batch_size(2049)
(128, 1665, 2048)
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.baselines._params import check_params, clamp, param, parse_params
from policies.registry import PolicyContext, register

__all__ = [
    "DEFAULT_BATCH_SIZE_TABLE",
    "TrtllmTunerParams",
    "TrtllmTunerPolicy",
    "parse_batch_size_table",
    "runtime_batch_size",
    "runtime_max_num_tokens",
]

#: ``DynamicBatchConfig::kDefaultBatchSizeTable``: (capacity limit, batch size).
DEFAULT_BATCH_SIZE_TABLE: tuple[tuple[int, int], ...] = (
    (144, 128),
    (336, 256),
    (672, 512),
    (832, 768),
    (1280, 1024),
    (1664, 1536),
)
_FALLBACK_GRANULARITY = 512
_FALLBACK_THRESHOLD = 128


def runtime_batch_size(
    max_capacity_batch_size: int, table: Sequence[tuple[int, int]] = DEFAULT_BATCH_SIZE_TABLE
) -> int:
    """``DynamicBatchTuner::getRuntimeBatchSize``: map the KV capacity to a batch size."""
    for limit, size in table:
        if max_capacity_batch_size < limit:
            return size
    threshold = max_capacity_batch_size // _FALLBACK_GRANULARITY * _FALLBACK_GRANULARITY
    if max_capacity_batch_size < threshold + _FALLBACK_THRESHOLD:
        return threshold
    return max_capacity_batch_size


def runtime_max_num_tokens(batch_size: int, avg_input: float, avg_output: float) -> int:
    """``DynamicBatchTuner::getRuntimeMaxNumTokens`` (fully overlapped prefill/decode)."""
    ratio = avg_input / avg_output
    adjusted = int(batch_size * ratio + batch_size)
    if ratio > 2.0:
        threshold = 8192
    elif ratio > 0.5:
        threshold = 4096
    else:
        threshold = 2048
    return max(1 << math.ceil(math.log2(max(adjusted, 1))), threshold)


def parse_batch_size_table(value: Any) -> tuple[tuple[int, int], ...]:
    """Parse a table given as ``"144:128;336:256"`` or as a list of ``[limit, size]`` pairs.

    Raises
    ------
    PolicyError
        Malformed entries, non-positive values, or limits not strictly increasing.
    """
    rows: list[tuple[int, int]] = []
    try:
        if isinstance(value, str):
            for item in value.split(";"):
                limit, _, size = item.partition(":")
                rows.append((int(limit), int(size)))
        else:
            for pair in value:
                limit, size = pair
                if isinstance(limit, bool) or isinstance(size, bool):
                    raise ValueError
                rows.append((int(limit), int(size)))
    except (TypeError, ValueError):
        raise PolicyError(
            f"trtllm-tuner: parameter batch_size_table={value!r} must look like '144:128;336:256' "
            "or [[144, 128], [336, 256]]"
        ) from None
    if not rows or any(limit < 1 or size < 1 for limit, size in rows):
        raise PolicyError(f"trtllm-tuner: parameter batch_size_table={value!r} needs positive entries")
    if any(a[0] >= b[0] for a, b in itertools.pairwise(rows)):
        raise PolicyError(
            f"trtllm-tuner: parameter batch_size_table={value!r} limits must be strictly increasing"
        )
    return tuple(rows)


@dataclass(frozen=True, slots=True)
class TrtllmTunerParams:
    """Hyper-parameters of the TensorRT-LLM tuner (defaults are TensorRT-LLM's)."""

    KIND: ClassVar[str] = "trtllm-tuner"
    window: int = param(128, kind="int", lo=1, hi=1_000_000, doc="finished requests in the moving average")
    batch_size_table: str = param(
        "144:128;336:256;672:512;832:768;1280:1024;1664:1536",
        kind="str",
        doc="capacity-limit:batch-size rows, ';'-separated (or a list of pairs in a file)",
    )
    avg_input_tokens: float = param(
        0.0, kind="float", lo=0.0, hi=1e7, doc="fixed mean input length (0: measure)"
    )
    avg_output_tokens: float = param(
        0.0, kind="float", lo=0.0, hi=1e7, doc="fixed mean output length (0: measure)"
    )
    tune_max_num_tokens: bool = param(False, kind="bool", doc="also tune the per-step token budget")

    def __post_init__(self) -> None:
        check_params(self)
        parse_batch_size_table(self.batch_size_table)


class TrtllmTunerPolicy:
    """TensorRT-LLM's dynamic batch-size tuner behind the controlkit contract.

    Parameters
    ----------
    params
        Checked hyper-parameters.
    ctx
        Engine context: ``max_num_seqs`` is the engine's max batch size, and
        ``kv_blocks_total`` is used when the observation does not carry the capacity.
    table
        The parsed batch-size table (default: from ``params``).
    """

    def __init__(
        self, params: TrtllmTunerParams, ctx: PolicyContext, table: Sequence[tuple[int, int]] | None = None
    ) -> None:
        self.params = params
        self._ctx = ctx
        self.table = tuple(table) if table is not None else parse_batch_size_table(params.batch_size_table)
        self.reset()

    def reset(self) -> None:
        """Forget the length statistics."""
        self._acc_prefill = 0
        self._acc_decode = 0
        # Each entry: (finished requests, their input tokens, their output tokens).
        self._window: deque[tuple[int, int, int]] = deque()
        self._sum = [0, 0, 0]

    def _observe(self, o: Observation) -> None:
        self._acc_prefill += max(o.num_prefill_tokens, 0)
        self._acc_decode += max(o.num_decode_tokens, 0)
        if o.num_finished <= 0:
            return
        entry = (o.num_finished, self._acc_prefill, self._acc_decode + o.num_finished)
        self._acc_prefill = self._acc_decode = 0
        self._window.append(entry)
        for i in range(3):
            self._sum[i] += entry[i]
        while len(self._window) > 1 and self._sum[0] - self._window[0][0] >= self.params.window:
            old = self._window.popleft()
            for i in range(3):
                self._sum[i] -= old[i]

    def average_lengths(self) -> tuple[float, float]:
        """Return the current mean input and output lengths (0.0 where unknown)."""
        n = self._sum[0]
        avg_in = self.params.avg_input_tokens or (self._sum[1] / n if n else 0.0)
        avg_out = self.params.avg_output_tokens or (self._sum[2] / n if n else 0.0)
        return avg_in, avg_out

    def decide(self, observation: Observation) -> BatchLimits:
        """Update the length statistics and return the tuned cap (and budget, if enabled)."""
        self._observe(observation)
        ceiling = self._ctx.max_num_seqs
        avg_in, avg_out = self.average_lengths()
        seq_tokens = int(avg_in) + int(avg_out)
        total = observation.kv_blocks_total if observation.kv_blocks_total > 0 else self._ctx.kv_blocks_total
        block = observation.block_size if observation.block_size > 0 else self._ctx.block_size
        if seq_tokens <= 0 or total <= 0:
            return BatchLimits(ceiling)
        capacity = total // math.ceil(seq_tokens / block)
        cap = clamp(runtime_batch_size(capacity, self.table), 1, ceiling)
        tokens: int | None = None
        if self.params.tune_max_num_tokens and avg_out > 0:
            tokens = min(runtime_max_num_tokens(cap, avg_in, avg_out), self._ctx.max_batched_tokens)
        return BatchLimits(cap, tokens)


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    raw = dict(pf.params)
    table: tuple[tuple[int, int], ...] | None = None
    if "batch_size_table" in raw and not isinstance(raw["batch_size_table"], str):
        table = parse_batch_size_table(raw.pop("batch_size_table"))
    return TrtllmTunerPolicy(parse_params(TrtllmTunerParams, raw), ctx, table)


register("trtllm-tuner", _factory)
