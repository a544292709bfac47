"""Plants: the step time of an engine as a function of what the step schedules.

A :class:`Plant` answers one question fast, ``step_s(num_decode_seqs, num_prefill_tokens,
num_context_tokens)``, and carries the engine's memory facts (KV capacity in blocks, block
size, maximum sequence length).  Every plant here interpolates *measured* tables; outside
the measured batch range it extrapolates linearly from the last measured segment, and the
simulator counts those steps and warns once per run (never silently).

The step-time model shared by all plants is

* a decode-only step with ``b`` sequences: ``decode_s(b)`` (a table, index ``b``);
* a step with ``p`` prefill tokens: ``decode_s(b) + prefill_s_per_token * p`` when ``b > 0``,
  else ``prefill_base_s + prefill_s_per_token * p`` (the weights are read once per step, so
  the fixed cost is shared);
* plus ``idle_s_per_seq * num_idle_seqs`` for running requests that the step does not compute
  (vLLM 0.5's prefill-only steps still pay per-running-request bookkeeping);
* plus, in steps that decode, ``context_s_per_token * (num_context_tokens - ref(b))``
  (attention over the KV cache beyond the context ``ref(b)`` the table was measured at;
  ``ref = 0`` when the plant gives no ``context_ref_tokens``);
* all of it divided by ``1 - pause_frac(running)`` when the plant gives ``pause_frac``: the
  share of wall time the engine loses to stalls outside the step itself (garbage collection
  of vLLM 0.5's Python engine loop), interpolated on ``decode_batch`` and constant beyond it.

Builders for named plants: ``vllm-h100:<model>`` here; ``vidur-…``, ``splitwise-…`` and model
files in :mod:`controlkit.sim.profiles`; :func:`controlkit.sim.catalog.load_plant` picks one by name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from identification.errors import ControlkitError, TelemetryError

__all__ = ["BCA_MODELS", "Plant", "default_data_dir", "vllm_h100_plant"]

#: Models measured in the BCA (Memory-Gap) H100 runs, with their parameter counts.
BCA_MODELS: dict[str, float] = {
    "opt-1.3b": 1.3e9,
    "opt-2.7b": 2.7e9,
    "llama-2-7b": 6.7e9,
    "llama-2-13b": 13.0e9,
}

#: Largest batch the decode lookup table covers; beyond it the last segment is extended.
_LUT_MAX = 4096


def default_data_dir() -> Path:
    """Return the shared data folder: ``$CONTROLKIT_SHARED_DATA`` or ``../shared/data``."""
    import os

    env = os.environ.get("CONTROLKIT_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


@dataclass(frozen=True, slots=True)
class Plant:
    """An engine's step time and memory, from measured tables.

    Parameters
    ----------
    name
        Plant name, e.g. ``"vllm-h100:llama-2-7b"``.
    decode_batch, decode_step_s
        Measured decode-step times (seconds) at the measured batch sizes (increasing).
    prefill_base_s, prefill_s_per_token
        Prefill-only step cost ``base + per_token * tokens`` (seconds); in a mixed step only
        the per-token part is added to the decode time.
    context_s_per_token
        Seconds per context token held by the running batch (attention reads the KV cache).
    context_ref_tokens
        Context tokens held at each measured point (aligned with ``decode_batch``): the
        decode table already includes attention over them, so only the difference
        ``num_context_tokens - ref(b)`` is charged.  Empty: reference 0.
    idle_s_per_seq
        Extra seconds per running request that a step does not compute (stalled decodes in
        a prefill-only step).
    kv_blocks_total, block_size
        KV-cache capacity in blocks and tokens per block.
    max_model_len
        Longest sequence (prompt + output) the engine accepts, tokens.
    max_num_seqs_default
        The engine's default ceiling for running requests.
    max_batched_tokens_default
        The engine's default per-step token budget.
    chunked_prefill
        Whether the measured engine ran chunked prefill (vLLM v1 style); ``False`` means
        prefill-only steps of whole prompts (vLLM 0.5 default).
    source
        Where the numbers came from (files, derivation), for reports.
    pause_frac
        Fraction of wall time lost to engine pauses at each measured batch (aligned with
        ``decode_batch``, each in ``[0, 0.5)``); every step is divided by ``1 - frac`` at its
        running count.  Empty: no pauses.
    """

    name: str
    decode_batch: tuple[float, ...]
    decode_step_s: tuple[float, ...]
    prefill_base_s: float
    prefill_s_per_token: float
    kv_blocks_total: int
    block_size: int = 16
    max_model_len: int = 2048
    max_num_seqs_default: int = 256
    max_batched_tokens_default: int = 8192
    context_s_per_token: float = 0.0
    context_ref_tokens: tuple[float, ...] = ()
    idle_s_per_seq: float = 0.0
    chunked_prefill: bool = True
    source: str = ""
    pause_frac: tuple[float, ...] = ()
    _lut: tuple[float, ...] = field(default=(), repr=False, compare=False)
    _ctx_lut: tuple[float, ...] = field(default=(), repr=False, compare=False)
    _pause_lut: tuple[float, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        xs, ys = self.decode_batch, self.decode_step_s
        if len(xs) < 2 or len(xs) != len(ys):
            raise ControlkitError(
                f"plant {self.name!r}: need >= 2 measured (batch, step_s) points, got {len(xs)}"
            )
        if any(b <= a for a, b in itertools.pairwise(xs)):
            raise ControlkitError(f"plant {self.name!r}: measured batch sizes must increase, got {xs}")
        if any(not (math.isfinite(y) and y > 0) for y in ys):
            raise ControlkitError(f"plant {self.name!r}: step times must be finite and > 0, got {ys}")
        if self.kv_blocks_total < 1 or self.block_size < 1 or self.max_model_len < 2:
            raise ControlkitError(
                f"plant {self.name!r}: kv_blocks_total={self.kv_blocks_total}, block_size={self.block_size}, "
                f"max_model_len={self.max_model_len} must be >= 1, >= 1, >= 2"
            )
        grid = np.arange(_LUT_MAX + 1, dtype=float)
        lut = np.interp(grid, np.asarray(xs, float), np.asarray(ys, float))
        lo_slope = (ys[1] - ys[0]) / (xs[1] - xs[0])
        hi_slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        below = grid < xs[0]
        lut[below] = ys[0] + lo_slope * (grid[below] - xs[0])
        above = grid > xs[-1]
        lut[above] = ys[-1] + hi_slope * (grid[above] - xs[-1])
        lut = np.maximum(lut, 0.05 * min(ys))
        lut[0] = 0.0
        object.__setattr__(self, "_lut", tuple(float(v) for v in lut))
        if self.context_ref_tokens:
            if len(self.context_ref_tokens) != len(xs):
                raise ControlkitError(f"plant {self.name!r}: context_ref_tokens must align with decode_batch")
            ref = np.interp(grid, np.asarray(xs, float), np.asarray(self.context_ref_tokens, float))
            per_seq = self.context_ref_tokens[-1] / xs[-1]
            ref[above] = self.context_ref_tokens[-1] + per_seq * (grid[above] - xs[-1])
            ref[below] = grid[below] * (self.context_ref_tokens[0] / xs[0])
            object.__setattr__(self, "_ctx_lut", tuple(float(v) for v in ref))
        if self.pause_frac:
            fr = np.asarray(self.pause_frac, float)
            if len(fr) != len(xs) or not np.all((fr >= 0.0) & (fr < 0.5)):
                raise ControlkitError(
                    f"plant {self.name!r}: pause_frac must align with decode_batch and lie in [0, 0.5), "
                    f"got {self.pause_frac}"
                )
            # constant beyond the measured range: no extrapolation of the pause rate
            mult = 1.0 / (1.0 - np.interp(grid, np.asarray(xs, float), fr))
            object.__setattr__(self, "_pause_lut", tuple(float(v) for v in mult))

    @property
    def batch_range(self) -> tuple[float, float]:
        """The measured decode batch range ``(min, max)``; outside it step times are extrapolated."""
        return (self.decode_batch[0], self.decode_batch[-1])

    def decode_s(self, num_decode_seqs: int) -> float:
        """Decode-only step time at ``num_decode_seqs`` sequences (seconds)."""
        lut = self._lut
        if num_decode_seqs < len(lut):
            return lut[num_decode_seqs]
        xs, ys = self.decode_batch, self.decode_step_s
        slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
        return ys[-1] + slope * (num_decode_seqs - xs[-1])

    def step_s(
        self,
        num_decode_seqs: int,
        num_prefill_tokens: int,
        num_context_tokens: int = 0,
        num_idle_seqs: int = 0,
    ) -> float:
        """Duration of one engine step (seconds).

        Examples
        --------
        >>> p = Plant("toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100)
        >>> round(p.step_s(5, 0), 6)
        0.014
        >>> round(p.step_s(0, 1000), 6)
        0.015
        """
        if num_decode_seqs > 0:
            lut = self._lut
            t = lut[num_decode_seqs] if num_decode_seqs < len(lut) else self.decode_s(num_decode_seqs)
            if num_prefill_tokens:
                t += self.prefill_s_per_token * num_prefill_tokens
        elif num_prefill_tokens > 0:
            t = self.prefill_base_s + self.prefill_s_per_token * num_prefill_tokens
        else:
            return 0.0
        if self.context_s_per_token and num_decode_seqs > 0:
            ref = self._ctx_lut
            extra = num_context_tokens - (ref[num_decode_seqs] if num_decode_seqs < len(ref) else 0.0)
            t = max(0.5 * t, t + self.context_s_per_token * extra)
        if num_idle_seqs:
            t += self.idle_s_per_seq * num_idle_seqs
        if self._pause_lut:
            running = min(num_decode_seqs + num_idle_seqs, _LUT_MAX)
            t *= self._pause_lut[running]
        return t

    def is_extrapolated(self, num_decode_seqs: int) -> bool:
        """Return True when a decode batch of this size lies outside the measured range."""
        return num_decode_seqs > 0 and not (
            self.decode_batch[0] - 1e-9 <= num_decode_seqs <= self.decode_batch[-1] + 1e-9
        )


# --------------------------------------------------------------------------- vllm-h100


def _read_csv(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise TelemetryError(
            "file not found; set CONTROLKIT_SHARED_DATA or check ../shared/data", path=str(path)
        )
    return pd.read_csv(path)


def _prefill_fit_opt27(bca: Path) -> tuple[float, float]:
    """Fit ``prefill_s = a + c * tokens`` on the clean offline opt-2.7b runs (no profiler)."""
    off = _read_csv(bca / "offline_prefill_decode_times.csv")
    rows = off[(off["profiler_attached"] == "none") & (off["model"] == "opt-2.7b")]
    if len(rows) < 2:
        raise TelemetryError(
            "no clean opt-2.7b prefill rows", path=str(bca / "offline_prefill_decode_times.csv")
        )
    tokens = (rows["prompt_len"] * rows["batch_size"]).to_numpy(float)
    secs = rows["prefill_elapsed_s"].to_numpy(float)
    c, a = np.polyfit(tokens, secs, 1)
    return float(a), float(c)


def vllm_h100_plant(
    model: str,
    data_dir: Path | None = None,
    *,
    drain_runs: Collection[int] | None = None,
    pause_threshold: float | None = None,
    pause_window: int | None = None,
    pause_runs: Collection[int] | None = None,
    pauses: bool = True,
) -> Plant:
    """Build the measured vLLM 0.5.2 plant on the 64 GB H100 of the BCA runs.

    Engine-side step costs (:mod:`controlkit.sim.context_fit`):

    * Decode table at each run's steady-state running batch (``mean_running`` of
      ``derived_steady_state_step_times.csv``, runs with >= 20 steady samples): the engine's
      wall time per decode iteration (``est_wall_ms_per_step``) minus the prefill steps that
      refill finished slots; runs with preemption keep the client-side ``median_itl_ms``.
    * Prefill per token ``c``: the slope of a linear fit on the clean offline opt-2.7b runs
      (``offline_prefill_decode_times.csv``), scaled by parameter count (compute-bound).
    * Prefill fixed cost ``a``, per-stalled-request cost ``k`` and attention cost per context
      token ``kappa`` (charged as ``kappa * (C - C_ref(b))`` against each table point's
      steady-state context): non-negative least squares on the drain intervals of the
      per-second engine metrics, the phase of each run without prefills.
    * Engine pauses: the fraction of each run's steady-state wall time lost to the engine's
      0.15-0.2 s stalls (:func:`~controlkit.sim.context_fit.pause_fraction`), charged on every
      step as ``step / (1 - frac(running))``; runs with preemption carry the last clean run's
      fraction, and beyond the measured range it stays constant.
    * KV capacity: ``num_gpu_blocks`` of the run at ``max_num_seqs=1``.

    The table and the fit come from the same runs that the fidelity replay compares against
    (other quantities: engine counters, not the client's throughput or TPOT); the replay
    validates the engine dynamics, not an independent plant.

    Parameters
    ----------
    model
        One of :data:`BCA_MODELS`.
    data_dir
        The shared data folder (default :func:`default_data_dir`).
    drain_runs
        Fit ``(a, k, kappa)`` on the drain intervals of these runs only (``max_num_seqs``
        values; default all), for held-out checks.
    pause_threshold, pause_window
        Detector settings of :func:`~controlkit.sim.context_fit.pause_fraction` (default
        :data:`~controlkit.sim.context_fit.PAUSE_THRESHOLD`, ``PAUSE_WINDOW``), for the
        sensitivity check ``bench/fidelity_pauses.py``.
    pause_runs
        Measure the pauses on these runs only (``max_num_seqs`` values; default all) and
        interpolate the others in batch, for held-out checks.
    pauses
        Charge the engine pauses (default); False gives the plant without them.
    """
    if model not in BCA_MODELS:
        raise ControlkitError(f"unknown vllm-h100 model {model!r}; known: {', '.join(BCA_MODELS)}")
    bca = (data_dir or default_data_dir()) / "bca_memory_gap"
    idx = _read_csv(bca / "background_runs_index.csv")
    ss = _read_csv(bca / "derived_steady_state_step_times.csv")
    runs = idx[idx["model"] == model].sort_values("max_num_seqs")
    _, c27 = _prefill_fit_opt27(bca)
    c = c27 * BCA_MODELS[model] / BCA_MODELS["opt-2.7b"]
    from controlkit.sim.context_fit import PAUSE_THRESHOLD, PAUSE_WINDOW, fit_step_costs, pause_fraction, steady_table

    fit = fit_step_costs(bca, model, steady_table(model, idx, ss, c), drain_runs=drain_runs)
    pause: tuple[float, ...] = ()
    if pauses:
        thr = PAUSE_THRESHOLD if pause_threshold is None else pause_threshold
        win = PAUSE_WINDOW if pause_window is None else pause_window
        # runs with preemption: recompute prefills and stalls perturb the per-interval step rate
        # the pause detector reads, so they carry the last clean run's fraction; with
        # ``pause_runs`` the other runs are interpolated (in batch) from the listed ones
        tb = fit.table
        use = ~tb.preempted
        if pause_runs is not None:
            use &= np.isin(tb.max_num_seqs, list(pause_runs))
        if not use.any():
            raise ControlkitError(f"vllm-h100:{model}: no clean run to measure the engine pauses on")
        measured = [pause_fraction(bca, model, int(n), threshold=thr, window=win) for n in tb.max_num_seqs[use]]
        pause = tuple(float(v) for v in np.interp(tb.batch, tb.batch[use], measured))
    max_len = int(runs["max_model_len"].iloc[0])
    return Plant(
        name=f"vllm-h100:{model}",
        decode_batch=tuple(float(v) for v in fit.table.batch),
        decode_step_s=tuple(float(v) for v in fit.decode_step_s),
        prefill_base_s=fit.prefill_base_s,
        prefill_s_per_token=c,
        idle_s_per_seq=fit.idle_s_per_seq,
        context_s_per_token=fit.context_s_per_token,
        context_ref_tokens=tuple(float(v) for v in fit.table.context_ref_tokens),
        pause_frac=pause,
        kv_blocks_total=int(runs["num_gpu_blocks"].iloc[0]),
        block_size=int(runs["block_size"].iloc[0]),
        max_model_len=max_len,
        max_num_seqs_default=256,
        max_batched_tokens_default=8192,
        chunked_prefill=False,
        source=(
            "bca_memory_gap: derived_steady_state_step_times.csv (mean_running, est_wall_ms_per_step, "
            "kv_usage_median), background_runs_index.csv (num_gpu_blocks; median_itl_ms of runs with "
            "preemption), offline_prefill_decode_times.csv (opt-2.7b prefill slope, scaled by parameters), "
            "background_engine_metrics.csv.gz (prefill fixed and per-stalled-request costs, attention cost "
            "per context token: drain phases; engine-pause fraction per run: steady-state outlier seconds)"
        ),
    )
