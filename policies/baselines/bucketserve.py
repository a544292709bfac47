"""BucketServe (arXiv 2507.17120): adaptive length buckets, a memory-safe batch cap, priority order.

Reconstructed from two independent reading notes (SEEDS.md §2; the paper has no public code).
Each decision:

1. ``M_safe = mem_safe_fraction · free KV tokens`` (Eq. 5, 10% kept for the system);
2. the global safe cap ``N_max = floor(M_safe / S_avg)`` (Eq. 6 with every request at the
   mean waiting prompt length ``S_avg``, the Global Monitor's "average sequence length");
3. buckets over prompt length, starting as ``[0, L_max)``: if fewer than ``N_max`` requests
   wait, all buckets merge back into one; otherwise each bucket ``[lo, up)`` holding more than
   ``N_max`` requests, more than half of them below ``mid = (lo + up) // 2``, splits into
   ``[lo, mid)`` and ``[mid, up)`` (one pass per decision, not recursive);
4. the bucket holding the oldest waiting request (queue index 0) is served
   (``priority="online"``: FCFS inside; ``"sjf"``/``"ljf"``: shortest/longest prompt first);
5. its batch is at most ``N_b = floor(M_safe / S_max)`` requests, with ``S_max`` the bucket's
   longest prompt (Eq. 1: the batch is padded to its longest member).

Output: ``admission_order`` = the served bucket's requests, then the other buckets (ordered by
their oldest request, each in the same inner order); ``max_active_seqs = num_running +
min(|bucket|, N_b)``, so one length-homogeneous batch is admitted per decision.  With an empty
queue the cap is ``num_running + N_max`` from the last known ``S_avg`` (the engine ceiling
before any).  Optionally (``token_budget``) ``max_batched_tokens = N_b · S_max``.

Fidelity: the paper's system is prefill/decode-disaggregated; here bucketing is admission
ordering plus a per-decision prefill cap in one engine (SEEDS.md §5.3).  Prompts longer than
``L_max`` fall into the last bucket.  Queue order stands for arrival order (the contract has no
per-request arrival times or online/offline flags; ``priority`` is global).

Examples
--------
>>> from controlkit.contract import Observation
>>> policy = BucketServePolicy(BucketServeParams(l_max=1024), PolicyContext())
>>> limits = policy.decide(Observation(0.0, num_running=0, num_waiting=3, kv_blocks_used=0,
...     kv_blocks_total=1000, waiting_prompt_tokens=(100, 800, 120)))
>>> limits.max_active_seqs, limits.admission_order
(3, (0, 1, 2))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from policies.baselines._params import check_params, clamp, param, parse_params
from policies.registry import PolicyContext, register

__all__ = ["BucketServeParams", "BucketServePolicy"]


@dataclass(frozen=True, slots=True)
class BucketServeParams:
    """Hyper-parameters of BucketServe's batching controller."""

    KIND: ClassVar[str] = "bucketserve"
    mem_safe_fraction: float = param(
        0.9, kind="float", lo=0.01, hi=1.0, doc="share of free KV usable (Eq. 5)"
    )
    l_max: int | None = param(
        None, kind="int?", lo=2, hi=10_000_000, doc="upper edge of the first bucket (default: max_model_len)"
    )
    priority: str = param(
        "online", kind="str", choices=("online", "sjf", "ljf"), doc="order inside the served bucket"
    )
    token_budget: bool = param(
        False, kind="bool", doc="also set max_batched_tokens = N_b · S_max (engine budget at most)"
    )

    def __post_init__(self) -> None:
        check_params(self)


class BucketServePolicy:
    """BucketServe's adaptive bucketing and safe batch cap (see the module docstring)."""

    def __init__(self, params: BucketServeParams, ctx: PolicyContext) -> None:
        self.params = params
        self._ctx = ctx
        self.l_max = params.l_max if params.l_max is not None else max(ctx.max_model_len, 2)
        self.reset()

    def reset(self) -> None:
        """Merge back to one bucket and forget the last mean length."""
        self.edges: list[int] = [0, self.l_max]  # bucket k is [edges[k], edges[k+1])
        self._last_n_max: int | None = None

    def _bucket_index(self, arr: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        # bucket k is [edges[k], edges[k+1]); prompts >= L_max go to the last bucket
        idx = np.searchsorted(np.asarray(self.edges), arr, side="right") - 1
        return np.minimum(idx, len(self.edges) - 2)

    def _rebucket(self, arr: npt.NDArray[np.int64], n_max: int) -> None:
        if arr.size < n_max:
            self.edges = [0, self.l_max]
            return
        edges = np.asarray(self.edges)
        k_of = self._bucket_index(arr)
        mids = (edges[:-1] + edges[1:]) // 2
        count = np.bincount(k_of, minlength=len(mids))
        below = np.bincount(k_of, weights=(arr < mids[k_of]), minlength=len(mids))
        new_edges = [self.edges[0]]
        for k in range(len(self.edges) - 1):
            lo, up, mid = self.edges[k], self.edges[k + 1], int(mids[k])
            if lo < mid < up and count[k] > n_max and below[k] > 0.5 * count[k]:
                new_edges.append(mid)
            new_edges.append(up)
        self.edges = new_edges

    def decide(self, observation: Observation) -> BatchLimits:
        """Re-bucket the waiting queue and admit one bucket's safe batch."""
        o, p = observation, self.params
        ceiling = self._ctx.max_num_seqs
        block = o.block_size if o.block_size > 0 else self._ctx.block_size
        total = o.kv_blocks_total if o.kv_blocks_total > 0 else self._ctx.kv_blocks_total
        m_safe = p.mem_safe_fraction * max(total - o.kv_blocks_used, 0) * block
        if not o.waiting_prompt_tokens:
            extra = self._last_n_max if self._last_n_max is not None else ceiling
            return BatchLimits(clamp(o.num_running + extra, 1, ceiling))
        arr = np.asarray(o.waiting_prompt_tokens, dtype=np.int64)
        s_avg = max(float(arr.mean()), 1.0)
        n_max = math.floor(m_safe / s_avg)
        self._last_n_max = n_max
        self._rebucket(arr, n_max)
        k_of = self._bucket_index(arr)
        # Buckets ranked by their oldest member (smallest queue index); rank 0 is served.
        first_seen = np.full(len(self.edges) - 1, arr.size)
        np.minimum.at(first_seen, k_of, np.arange(arr.size))
        rank = np.argsort(np.argsort(first_seen, kind="stable"), kind="stable")[k_of]
        position = np.arange(arr.size)
        if p.priority == "sjf":
            order = np.lexsort((position, arr, rank))
        elif p.priority == "ljf":
            order = np.lexsort((position, -arr, rank))
        else:
            order = np.lexsort((position, rank))
        served = rank == 0
        s_max = max(int(arr[served].max()), 1)
        n_b = math.floor(m_safe / s_max)
        batch = min(int(served.sum()), n_b)
        tokens = clamp(n_b * s_max, 1, self._ctx.max_batched_tokens) if p.token_budget else None
        return BatchLimits(clamp(o.num_running + batch, 1, ceiling), tokens, tuple(order.tolist()))


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return BucketServePolicy(parse_params(BucketServeParams, pf.params), ctx)


register("bucketserve", _factory)
