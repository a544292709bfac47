"""UELLM's batch scheduler, SLO-ODBS (arXiv 2409.14961; official code HYIUYOU/UELLM).

Official behaviour (``SLO_ODBS.py``, ``UELM-all/all.py``; SEEDS.md §3.3): sort the queries by
``key = a·SLO + b·L̂`` (a = 1, b = 0.5), then form groups greedily: a query joins the current
group while ``|group| < group_cap`` (10) and ``(L̂_q − max L̂_group)·(|group| + 1)·overhead ≤
threshold`` (overhead 1.2, threshold 15000); otherwise it opens a new group.  Each group runs
as one static batch.

Online adaptation (SEEDS.md §5.4) used here: at every decision the grouping is applied to the
waiting queue; ``admission_order`` is the sorted order (groups are contiguous in it), and

* ``mode="backfill"`` (default): ``max_active_seqs = num_running + |head group|``: each
  decision admits the next group while earlier groups still decode;
* ``mode="wave"``: the head group is admitted only when nothing runs
  (``max_active_seqs = |head group|``), else the cap holds at ``num_running``: UELLM's static
  batches.

With an empty queue the cap leaves room for one group (``num_running + group_cap``; in wave
mode only when idle).

Substitutes for signals the contract lacks:

* predicted output length ``L̂`` (UELLM's fine-tuned predictor; the oracle in the official
  runs) is ``output_ratio · prompt tokens``: requests with similar prompts group together;
* per-request SLO: every request gets the same budget ``slo_s`` from its arrival, so the
  remaining time is ``slo_s − age``; ages are interpolated linearly from
  ``oldest_wait_s`` (index 0) to 0 (last index), queue order being arrival order.
* the per-group generation cap ``max_new_tokens = max L̂ + 50`` cannot be expressed and is
  not applied.  HELR (placement) is a deployment knob and is out of scope.

Examples
--------
>>> form_groups([5, 7, 100, 3], cap=2, threshold=30.0, overhead=1.2)
[[0, 1], [2, 3]]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from controlkit.policyfile import PolicyFile
from policies.baselines._params import check_params, clamp, param, parse_params
from policies.registry import PolicyContext, register

__all__ = ["UellmParams", "UellmPolicy", "form_groups"]


def form_groups(
    predicted: Sequence[float], *, cap: int, threshold: float, overhead: float
) -> list[list[int]]:
    """UELLM's greedy grouping over requests already in sorted order.

    Parameters
    ----------
    predicted
        Predicted output lengths ``L̂`` in the sorted order.
    cap
        Maximum group size.
    threshold, overhead
        A request joins while ``(L̂_q − max L̂_group)·(|group| + 1)·overhead ≤ threshold``.

    Returns
    -------
    list of list of int
        Positions into ``predicted``, group by group.
    """
    groups: list[list[int]] = []
    group: list[int] = []
    cur_max = predicted[0] if predicted else 0.0
    for q, length in enumerate(predicted):
        if group and len(group) < cap and (length - cur_max) * (len(group) + 1) * overhead <= threshold:
            group.append(q)
            cur_max = max(cur_max, length)
        else:
            if group:
                groups.append(group)
            group = [q]
            cur_max = length
    if group:
        groups.append(group)
    return groups


@dataclass(frozen=True, slots=True)
class UellmParams:
    """Hyper-parameters of SLO-ODBS (defaults from the official code)."""

    KIND: ClassVar[str] = "uellm"
    a: float = param(1.0, kind="float", lo=0.0, hi=1e6, doc="SLO coefficient of the sort key")
    b: float = param(0.5, kind="float", lo=0.0, hi=1e6, doc="output-length coefficient of the sort key")
    overhead: float = param(1.2, kind="float", lo=0.0, hi=1e3, doc="parallel-execution overhead factor")
    threshold: float = param(15000.0, kind="float", lo=0.0, hi=1e12, doc="grouping threshold")
    group_cap: int = param(10, kind="int", lo=1, hi=100_000, doc="maximum group size")
    slo_s: float = param(10.0, kind="float", lo=1e-6, hi=1e7, doc="per-request latency SLO from arrival (s)")
    output_ratio: float = param(1.0, kind="float", lo=0.0, hi=1e4, doc="L̂ = output_ratio · prompt tokens")
    mode: str = param("backfill", kind="str", choices=("backfill", "wave"), doc="online adaptation")

    def __post_init__(self) -> None:
        check_params(self)


class UellmPolicy:
    """UELLM's SLO- and output-driven grouping as an admission order and a cap."""

    def __init__(self, params: UellmParams, ctx: PolicyContext) -> None:
        self.params = params
        self._ctx = ctx

    def reset(self) -> None:
        """Nothing to forget: each decision regroups the current queue."""

    def sorted_queue(self, observation: Observation) -> list[int]:
        """Queue indices sorted by ``a·(slo_s − age) + b·L̂`` (ties: queue order)."""
        p = self.params
        lengths = observation.waiting_prompt_tokens
        n = len(lengths)
        oldest = observation.oldest_wait_s
        step = oldest / (n - 1) if n > 1 else 0.0
        coef = p.b * p.output_ratio
        # age_i = oldest - i * step (linear from the head to the tail of the queue)
        keys = [p.a * (p.slo_s - (oldest - i * step)) + coef * prompt for i, prompt in enumerate(lengths)]
        return sorted(range(n), key=keys.__getitem__)

    def decide(self, observation: Observation) -> BatchLimits:
        """Group the waiting queue and admit the head group (see the module docstring)."""
        o, p = observation, self.params
        ceiling = self._ctx.max_num_seqs
        wave = p.mode == "wave"
        if not o.waiting_prompt_tokens:
            if wave and o.num_running > 0:
                return BatchLimits(clamp(o.num_running, 1, ceiling))
            return BatchLimits(clamp(o.num_running + p.group_cap, 1, ceiling))
        order = self.sorted_queue(o)
        # Only the head group is admitted: group the first group_cap + 1 sorted requests.
        predicted = [p.output_ratio * o.waiting_prompt_tokens[i] for i in order[: p.group_cap + 1]]
        head = form_groups(predicted, cap=p.group_cap, threshold=p.threshold, overhead=p.overhead)[0]
        cap = o.num_running + len(head)
        if wave:
            cap = len(head) if o.num_running == 0 else o.num_running
        return BatchLimits(clamp(cap, 1, ceiling), None, tuple(order))


def _factory(pf: PolicyFile, ctx: PolicyContext) -> BatchPolicy:
    return UellmPolicy(parse_params(UellmParams, pf.params), ctx)


register("uellm", _factory)
