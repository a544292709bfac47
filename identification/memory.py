"""MemoryModel: KV-cache blocks vs batch, capacity, the largest batch that fits, preemption onset.

vLLM's paged KV cache stores ``block_size`` tokens per block, so a sequence holding ``t``
tokens needs ``ceil(t / block_size)`` blocks.  From telemetry the model estimates:

* ``capacity_blocks_``: the cache size (``kv_blocks_total`` in step records, ``num_gpu_blocks``
  joined from a run index for sampled metrics);
* ``blocks_per_seq_``: KV blocks held per running sequence in the observed workload, a
  batch-weighted ratio of blocks in use to running sequences over steady intervals that are
  not saturated (usage below 97 % of capacity), in runs that never preempted (when any did
  not: a run that preempts is past the onset and its sequences are cut short);
* ``blocks_per_token_``: regressed from blocks in use against context tokens in flight where
  step records carry ``num_context_tokens``; where only usage *fractions* are known (sampled
  metrics) it is taken as ``1 / block_size`` (paged attention's layout), and
  ``blocks_per_token_method_`` says so;
* ``preemption_onset_``: the batch at which the observed workload's KV fills the cache,
  ``floor(capacity_blocks_ / blocks_per_seq_)``; beyond it vLLM must preempt.

Examples
--------
>>> import pandas as pd
>>> steps = pd.DataFrame({"t_s": [0.0, 0.1], "step_s": [0.02, 0.02], "num_running": [10, 20],
...     "num_waiting": [0, 0], "num_prefill_tokens": [0, 0], "num_decode_tokens": [10, 20],
...     "kv_blocks_used": [200, 400], "kv_blocks_total": [1000, 1000], "num_preempted": [0, 0]})
>>> from identification.records import Telemetry
>>> m = MemoryModel().fit(Telemetry(steps=steps))
>>> m.capacity_blocks_, m.blocks_per_seq_, m.preemption_onset_
(1000, 20.0, 50)
>>> m.max_batch(320, headroom=0.05)
47
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from identification.derive import StepObservations, derive_observations
from identification.errors import NotFittedError, TelemetryError
from identification.records import RUN_COLUMN, Telemetry
from identification.robust import ArgumentError, check_hyperparameters

__all__ = ["MemoryModel", "MemoryParams"]

_SATURATED = 0.97


@dataclass(frozen=True, slots=True)
class MemoryParams:
    """Hyper-parameters of :class:`MemoryModel`, each with its default and bounds."""

    block_size: int = field(default=16, metadata={"bounds": (1, 4096)})
    capacity_blocks: int = field(default=0, metadata={"bounds": (0, 10**10)})  # 0: from telemetry


class MemoryModel:
    """KV-cache capacity and usage per sequence, and what they imply for the batch.

    Parameters
    ----------
    **params
        Fields of :class:`MemoryParams`: ``block_size`` (tokens per KV block, 16) and
        ``capacity_blocks`` (override; 0 reads it from the telemetry).

    Attributes
    ----------
    capacity_blocks_ : int
    block_size_ : int
    blocks_per_seq_ : float
    blocks_per_token_ : float
    blocks_per_token_method_ : str
    tokens_per_seq_ : float
        Typical tokens held per running sequence.
    preemption_onset_ : int or None
    observed_preemption_onset_ : int or None
        The smallest run batch level (largest running count of a run) with any preemption.
    known_ : bool
        False for a model made by :meth:`unknown` (no KV capacity in the telemetry): capacity 0,
        per-sequence numbers NaN, and :meth:`max_batch` refuses; ``unknown_reason_`` says why.
    """

    def __init__(self, **params: Any) -> None:
        self.params = MemoryParams(**params)
        check_hyperparameters(self.params)

    def get_params(self) -> dict[str, Any]:
        """Hyper-parameters as a dict."""
        return asdict(self.params)

    def fit(self, data: Telemetry | StepObservations) -> MemoryModel:
        """Fit from telemetry (or already derived observations); returns ``self``.

        Raises
        ------
        TelemetryError
            No KV capacity anywhere (give ``capacity_blocks`` or join ``num_gpu_blocks``), or
            no interval with KV usage.
        """
        bs = self.params.block_size
        obs = data if isinstance(data, StepObservations) else derive_observations(data, block_size=bs)
        capacity = self.params.capacity_blocks
        if capacity <= 0:
            total = obs.kv_blocks_total[np.isfinite(obs.kv_blocks_total) & (obs.kv_blocks_total > 0)]
            if total.size == 0:
                raise TelemetryError(
                    "no KV-cache capacity in the telemetry; expected 'kv_blocks_total' (step records) or "
                    "'num_gpu_blocks' (join the run index), or pass capacity_blocks", field="num_gpu_blocks")
            capacity = round(float(np.median(total)))
        used = obs.kv_blocks_used
        ok = np.isfinite(used) & (used > 0) & (obs.batch >= 1) & ~(obs.num_preempted > 0)
        ok &= used < _SATURATED * capacity
        preempted_runs = np.unique(obs.group[obs.num_preempted > 0])
        clean = ok & ~np.isin(obs.group, preempted_runs)
        if clean.any():  # runs that preempted are past the onset: not the workload's steady state
            ok = clean
        if not ok.any():
            raise TelemetryError("no step or interval with KV blocks in use below saturation; "
                                 "expected 'kv_blocks_used' or 'kv_cache_usage_perc'", field="kv_blocks_used")
        _, inverse, counts = np.unique(obs.group[ok], return_inverse=True, return_counts=True)
        w = obs.batch[ok] / counts[inverse]
        self.capacity_blocks_ = capacity
        self.block_size_ = bs
        self.blocks_per_seq_ = float(np.sum(w * used[ok] / obs.batch[ok]) / np.sum(w))
        self.blocks_per_token_, self.blocks_per_token_method_ = self._blocks_per_token(data, obs, ok)
        self.tokens_per_seq_ = max(self.blocks_per_seq_ - 0.5, 0.0) / self.blocks_per_token_
        self.preemption_onset_: int | None = int(np.floor(capacity / self.blocks_per_seq_))
        self.observed_preemption_onset_ = _observed_onset(data, obs)
        self.n_samples_fit_ = int(ok.sum())
        self.known_ = True
        self.unknown_reason_ = ""
        return self

    @classmethod
    def unknown(cls, reason: str, *, block_size: int = 16) -> MemoryModel:
        """Return a fitted model that records that the KV memory is unknown (``known_`` False).

        For telemetry with latency data only: the latency model can still be identified, and
        ``controlkit design`` then states which claims it cannot make (memory safety).
        """
        m = cls(block_size=block_size)
        m.capacity_blocks_ = 0
        m.block_size_ = int(block_size)
        m.blocks_per_seq_ = float("nan")
        m.blocks_per_token_ = 1.0 / block_size
        m.blocks_per_token_method_ = "unknown: no KV-cache capacity in the telemetry"
        m.tokens_per_seq_ = float("nan")
        m.preemption_onset_ = None
        m.observed_preemption_onset_ = None
        m.n_samples_fit_ = 0
        m.known_ = False
        m.unknown_reason_ = str(reason)
        return m

    def _blocks_per_token(self, data: Telemetry | StepObservations, obs: StepObservations,
                          ok: npt.NDArray[np.bool_]) -> tuple[float, str]:
        steps = data.steps if isinstance(data, Telemetry) else None
        if steps is not None and "num_context_tokens" in steps.columns and obs.source == "steps":
            ctx_total = obs.context_tokens * obs.batch
            sel = ok & np.isfinite(ctx_total)
            if sel.sum() >= 3 and np.ptp(ctx_total[sel]) > 0:
                a = np.column_stack([ctx_total[sel], obs.batch[sel]])
                y = obs.kv_blocks_used[sel]
                coef, *_ = np.linalg.lstsq(a, y, rcond=None)
                total = max(float(np.sum((y - y.mean()) ** 2)), 1e-300)
                r2 = 1.0 - float(np.sum((y - a @ coef) ** 2)) / total
                paged = 1.0 / self.params.block_size  # a regressed ratio far from it is a fit artefact
                if 0.25 * paged <= coef[0] <= min(4.0 * paged, 1.0) and r2 > 0.9:
                    return float(coef[0]), "regressed: blocks used on context tokens and running sequences"
        return 1.0 / self.params.block_size, (
            f"assumed 1/block_size = 1/{self.params.block_size} "
            "(only KV usage is known, not tokens in flight)")

    def _check(self) -> None:
        if not hasattr(self, "capacity_blocks_"):
            raise NotFittedError("this MemoryModel is not fitted yet; call fit(telemetry) first")

    def blocks_for(self, tokens_per_seq: npt.ArrayLike) -> float:
        """Mean KV blocks per sequence for a length (or an array of lengths), tokens."""
        self._check()
        t = np.asarray(tokens_per_seq, dtype=np.float64).ravel()
        if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t <= 0):
            raise ArgumentError("tokens_per_seq must be one or more finite lengths > 0 (tokens)")
        return float(np.mean(np.maximum(np.ceil(t * self.blocks_per_token_ - 1e-9), 1.0)))

    def max_batch(self, tokens_per_seq: npt.ArrayLike, headroom: float = 0.05) -> int:
        """Largest batch whose predicted KV fits ``capacity_blocks_·(1 − headroom)``.

        Parameters
        ----------
        tokens_per_seq
            Tokens per sequence: a scalar, or an array of per-request lengths (a length
            distribution; its mean block count is used).
        headroom
            Fraction of the cache kept free, in [0, 1).
        """
        if not 0.0 <= headroom < 1.0:
            raise ArgumentError(f"headroom={headroom!r} is outside its allowed range [0, 1)")
        per_seq = self.blocks_for(tokens_per_seq)  # checks it is fitted
        if not self.known_:
            raise ArgumentError(f"the KV memory is unknown ({self.unknown_reason_}): no memory-safe batch")
        return int(np.floor(self.capacity_blocks_ * (1.0 - headroom) / per_seq + 1e-9))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of the hyper-parameters and the fitted state."""
        self._check()
        return {
            "params": self.get_params(),
            "capacity_blocks": self.capacity_blocks_,
            "block_size": self.block_size_,
            "blocks_per_seq": self.blocks_per_seq_,
            "blocks_per_token": self.blocks_per_token_,
            "blocks_per_token_method": self.blocks_per_token_method_,
            "tokens_per_seq": self.tokens_per_seq_,
            "preemption_onset": self.preemption_onset_,
            "observed_preemption_onset": self.observed_preemption_onset_,
            "n_samples_fit": self.n_samples_fit_,
            "known": self.known_,
            "unknown_reason": self.unknown_reason_,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryModel:
        """Rebuild a fitted model from :meth:`to_dict` output."""
        m = cls(**d["params"])
        m.capacity_blocks_ = int(d["capacity_blocks"])
        m.block_size_ = int(d["block_size"])
        m.known_ = bool(d.get("known", True))  # files before the field: memory was always known
        m.unknown_reason_ = str(d.get("unknown_reason", ""))
        nan = float("nan")
        m.blocks_per_seq_ = nan if d["blocks_per_seq"] is None else float(d["blocks_per_seq"])
        m.blocks_per_token_ = float(d["blocks_per_token"])
        m.blocks_per_token_method_ = str(d["blocks_per_token_method"])
        m.tokens_per_seq_ = nan if d["tokens_per_seq"] is None else float(d["tokens_per_seq"])
        m.preemption_onset_ = None if d["preemption_onset"] is None else int(d["preemption_onset"])
        obs = d["observed_preemption_onset"]
        m.observed_preemption_onset_ = None if obs is None else int(obs)
        m.n_samples_fit_ = int(d["n_samples_fit"])
        return m


def _observed_onset(data: Telemetry | StepObservations, obs: StepObservations) -> int | None:
    """Smallest batch level (a run's largest running count) of a run that preempted."""
    if isinstance(data, Telemetry) and len(data.steps) == 0 and len(data.samples) > 0:
        s = data.samples
        if "num_preemptions_total" not in s.columns:
            return None
        run = s[RUN_COLUMN] if RUN_COLUMN in s.columns else np.zeros(len(s))
        g = s.groupby(run, sort=False)
        pre = g["num_preemptions_total"].max() - g["num_preemptions_total"].min()
        level = g["num_requests_running"].max()
    elif isinstance(data, Telemetry) and len(data.steps) > 0:
        s = data.steps
        run = s[RUN_COLUMN] if RUN_COLUMN in s.columns else np.zeros(len(s))
        g = s.groupby(run, sort=False)
        pre, level = g["num_preempted"].sum(), g["num_running"].max()
    else:
        levels = np.array([obs.batch[obs.group == k].max() for k in np.unique(obs.group)])
        hits = np.array([(obs.num_preempted[obs.group == k] > 0).any() for k in np.unique(obs.group)])
        return int(levels[hits].min()) if hits.any() else None
    hit = pre.to_numpy(dtype=np.float64) > 0
    return int(level.to_numpy(dtype=np.float64)[hit].min()) if hit.any() else None
