"""Replay of the measured H100 vLLM benchmark (BCA data) in the simulator.

The BCA background runs sent 2,000 ShareGPT_V3 prompts at once to vLLM 0.5.2 (no chunked
prefill) with ``max_num_seqs = N``.  The prompt texts are not in the shared data, but the
request sequence is: with ``max_num_seqs = 1`` the engine serves the queue one request at a
time, in the order every run of the same model received it (same client seed, same
tokenizer), and its per-second counters (waiting gauge, prompt and generation token counters,
KV gauge) give each request's prompt and output length (:func:`bca_request_sequence`).
:func:`bca_workload` replays that sequence; :func:`bca_sharegpt_workload` is the earlier
reconstruction (a random draw from ``sharegpt/sharegpt_val_10k_llama2.csv`` shaped to the
measured totals), kept for comparison.  The engine runs with ``chunked_prefill=False`` and
the budget ``max(2048, max_model_len)``, as vLLM 0.5 did.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from controlkit.contract import BatchLimits, Observation
from controlkit.sim.engine import simulate
from controlkit.sim.metrics import SLO
from controlkit.sim.plants import BCA_MODELS, Plant, default_data_dir, vllm_h100_plant
from controlkit.sim.workloads import Workload, sharegpt_lengths

__all__ = [
    "FidelityRow",
    "FixedCap",
    "bca_request_sequence",
    "bca_runs",
    "bca_sharegpt_workload",
    "bca_workload",
    "measured_context_per_seq",
    "replay_bca",
]

NUM_PROMPTS = 2000


class FixedCap:
    """A policy that holds one admission cap (local, so the replay depends on nothing in :mod:`policies`).

    Examples
    --------
    >>> FixedCap(8).decide(None).max_active_seqs  # type: ignore[arg-type]
    8
    """

    def __init__(self, cap: int) -> None:
        self._limits = BatchLimits(cap)

    def decide(self, observation: Observation) -> BatchLimits:
        """Return the fixed cap, whatever the observation."""
        return self._limits

    def reset(self) -> None:
        """Do nothing: the policy has no state."""
        return None


@dataclass(frozen=True, slots=True)
class FidelityRow:
    """Measured and simulated figures for one (model, max_num_seqs) run."""

    model: str
    max_num_seqs: int
    measured_tok_s: float
    simulated_tok_s: float
    measured_tpot_s: float
    simulated_tpot_s: float
    measured_preemptions: int
    simulated_preemptions: int
    extrapolated_steps: int

    @property
    def tok_s_error(self) -> float:
        """Relative error of the simulated output throughput."""
        return self.simulated_tok_s / self.measured_tok_s - 1.0

    @property
    def tpot_error(self) -> float:
        """Relative error of the simulated median TPOT."""
        return self.simulated_tpot_s / self.measured_tpot_s - 1.0


def bca_runs(data_dir: Path | None = None) -> pd.DataFrame:
    """Return the background-run index joined with its preemption counts."""
    bca = (data_dir or default_data_dir()) / "bca_memory_gap"
    idx = pd.read_csv(bca / "background_runs_index.csv")
    ss = pd.read_csv(bca / "derived_steady_state_step_times.csv")[
        ["model", "max_num_seqs", "preemptions_total"]
    ]
    return idx.merge(ss, on=["model", "max_num_seqs"], how="left").sort_values(["model", "max_num_seqs"])


def _shape_outputs(p: np.ndarray, o: np.ndarray, total: float, beta: float, max_len: int) -> np.ndarray:
    """``o**beta`` rescaled to ``total`` tokens, each clipped to ``max_len - 1 - prompt``."""
    x = o**beta
    for _ in range(6):
        x = np.minimum(x * total / x.sum(), max_len - 1 - p)
    return np.asarray(x, dtype=float)


def _weighted_context(p: np.ndarray, o: np.ndarray) -> float:
    """Context per running request at steady state: ``sum(o * (p + o/2)) / sum(o)``."""
    return float(np.sum(o * (p + o / 2.0)) / np.sum(o))


def measured_context_per_seq(model: str, data_dir: Path | None = None) -> float:
    """KV tokens per running request in the steady state of the runs with 8 <= N <= 64.

    ``kv_usage_median * num_gpu_blocks * 16 / mean_running`` of
    ``derived_steady_state_step_times.csv``, averaged over those runs (none of them preempts).
    """
    bca = (data_dir or default_data_dir()) / "bca_memory_gap"
    ss = pd.read_csv(bca / "derived_steady_state_step_times.csv")
    s = ss[(ss["model"] == model) & (ss["max_num_seqs"] >= 8) & (ss["max_num_seqs"] <= 64)]
    return float((s["kv_usage_median"] * s["num_gpu_blocks"] * 16.0 / s["mean_running"]).mean())


def bca_sharegpt_workload(model: str, data_dir: Path | None = None, seed: int = 0) -> Workload:
    """2,000 random ShareGPT requests at t=0 with the model's measured token totals and KV footprint.

    Draws 2,000 (prompt, output) pairs from the Llama-2 ShareGPT lengths with
    ``benchmark_serving``'s filter, scales the prompts to the run's ``total_input_tokens``, and
    reshapes the outputs as ``output**beta`` scaled to ``total_output_tokens`` (clipped to
    ``max_model_len``), with ``beta`` chosen by bisection so that the steady-state context per
    running request, ``sum(o*(p+o/2))/sum(o)``, equals :func:`measured_context_per_seq`.
    For the Llama-2 models (whose tokenizer the lengths come from) this gives ``beta`` about
    1.0 (0.997 and 1.018); for OPT about 1.3: the OPT runs hold 6 % more KV per request than the
    Llama runs with 10 % fewer output tokens (early end-of-sequence stops, another tokenizer),
    so their long outputs are longer than a uniform scaling makes them.

    The replay used this reconstruction before :func:`bca_workload`; which 2,000 requests
    the draw picks (``seed``) moves the replayed median TPOT by up to 3 points at large N
    (``bench/fidelity_seeds.py``).
    """
    runs = bca_runs(data_dir)
    row = runs[runs["model"] == model].iloc[0]
    max_len = int(row["max_model_len"])
    prompt, output = sharegpt_lengths(data_dir)
    keep = (prompt < 1024) & (prompt + output < 2048) & (prompt >= 4) & (output >= 4)
    prompt, output = prompt[keep], output[keep]
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(prompt), size=NUM_PROMPTS, replace=False)
    p = prompt[pick].astype(float)
    o = output[pick].astype(float)
    p = np.maximum(1, np.rint(p * float(row["total_input_tokens"]) / p.sum()))
    total_out = float(row["total_output_tokens"])
    target = measured_context_per_seq(model, data_dir)
    lo, hi = 0.5, 2.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _weighted_context(p, _shape_outputs(p, o, total_out, mid, max_len)) < target:
            lo = mid
        else:
            hi = mid
    out = np.maximum(1, np.rint(_shape_outputs(p, o, total_out, lo, max_len))).astype(np.int64)
    return Workload(f"bca-sharegpt:{model}", np.zeros(NUM_PROMPTS), p.astype(np.int64), out)


def bca_request_sequence(model: str, data_dir: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output lengths of the 2,000 requests, in queue order, from the ``N = 1`` run.

    With ``max_num_seqs = 1`` vLLM serves one request at a time in arrival order.  In each
    1-s interval of that run's engine metrics, the waiting gauge falls by the number ``k`` of
    requests admitted and ``prompt_tokens_total`` rises by their prompt tokens (split evenly
    when ``k > 1``).  Outputs are measured along ``generation_tokens_total``: the request
    running at the end of the interval started ``age = KV - prompt - 8`` generated tokens
    before it (``KV = gpu_cache_usage_perc * num_gpu_blocks * 16``, rounded up to whole
    blocks, hence the half block), the other ``k - 1`` evenly before that, and each request's
    output is the generated tokens up to the next one's start.  The counters before the 2,000
    arrive (``benchmark_serving``'s single test prompt) are subtracted.  Nothing here uses
    time: the sequence is fitted on token counters and the KV gauge of one run.

    Returns
    -------
    prompt_tokens, output_tokens
        Integer arrays (as floats) of length 2,000, in queue order.
    """
    from controlkit.sim.context_fit import _engine_metrics

    bca = (data_dir or default_data_dir()) / "bca_memory_gap"
    runs = bca_runs(data_dir)
    row = runs[(runs["model"] == model) & (runs["max_num_seqs"] == 1)].iloc[0]
    d = _engine_metrics(bca / "background_engine_metrics.csv.gz")
    r = d[(d["model"] == model) & (d["max_num_seqs"] == 1)].sort_values("time_s")
    waiting = r["num_requests_waiting"].to_numpy(float)
    first = int(np.argmax(waiting > 0))  # the row before holds only the test prompt
    base = r.iloc[max(first - 1, 0)]
    prompt = r["prompt_tokens_total"].to_numpy(float) - (float(base["prompt_tokens_total"]) if first else 0.0)
    gen = r["generation_tokens_total"].to_numpy(float) - (float(base["generation_tokens_total"]) if first else 0.0)
    running = r["num_requests_running"].to_numpy(float)
    kv = r["gpu_cache_usage_perc"].to_numpy(float) * float(row["num_gpu_blocks"]) * float(row["block_size"])
    j0 = int(np.argmax(waiting))  # every request has arrived
    admitted = np.maximum.accumulate(np.where(np.arange(len(r)) >= j0, NUM_PROMPTS - waiting, 0.0))
    starts: list[float] = []
    prompts: list[float] = []

    def emit(k: int, tokens: float, g_lo: float, g_hi: float, j: int) -> None:
        p = tokens / k
        if running[j] >= 1:
            g_last = g_hi - float(np.clip(kv[j] - 0.5 * float(row["block_size"]) - p, 0.0, g_hi - g_lo))
        else:
            g_last = g_lo + (g_hi - g_lo) * k / (k + 1)
        starts.extend(g_lo + (g_last - g_lo) * m / k for m in range(1, k + 1))
        prompts.extend([p] * k)

    pend_k, pend_p, g_from = int(admitted[j0]), float(prompt[j0]), 0.0
    for j in range(j0, len(r)):
        if j > j0:
            pend_k += int(admitted[j] - admitted[j - 1])
            pend_p += float(prompt[j] - prompt[j - 1])
        if pend_k > 0 and (pend_p > 0 or j == len(r) - 1):
            emit(pend_k, pend_p, g_from, float(gen[j]), j)
            pend_k, pend_p = 0, 0.0
        if pend_k == 0 and pend_p <= 0:
            g_from = float(gen[j])
    g = np.asarray(starts)
    out = np.maximum(1.0, np.rint(np.diff(np.append(g, gen[-1]))))
    return np.maximum(1.0, np.rint(np.asarray(prompts))), out


def bca_workload(model: str, data_dir: Path | None = None) -> Workload:
    """Return the measured request sequence (:func:`bca_request_sequence`), all arriving at t=0.

    No parameter is fitted to the replayed runs: the totals (within 0.1 % of the index's
    ``total_input_tokens`` / ``total_output_tokens``) and the steady-state KV per running
    request of the runs with 8 <= N <= 64 (:func:`measured_context_per_seq`, within 1.5 %)
    are held-out checks.
    """
    p, o = bca_request_sequence(model, data_dir)
    runs = bca_runs(data_dir)
    max_len = int(runs[runs["model"] == model]["max_model_len"].iloc[0])
    o = np.maximum(1.0, np.minimum(o, max_len - 1 - p))
    return Workload(f"bca-n1:{model}", np.zeros(len(p)), p.astype(np.int64), o.astype(np.int64))


def replay_bca(
    model: str,
    max_num_seqs: int,
    *,
    data_dir: Path | None = None,
    plant: Plant | None = None,
    workload: Workload | None = None,
) -> FidelityRow:
    """Simulate one BCA run and return measured vs simulated figures."""
    if model not in BCA_MODELS:
        raise ValueError(f"unknown model {model!r}")
    runs = bca_runs(data_dir)
    row = runs[(runs["model"] == model) & (runs["max_num_seqs"] == max_num_seqs)]
    if row.empty:
        raise ValueError(f"no measured run for {model} at max_num_seqs={max_num_seqs}")
    r = row.iloc[0]
    plant = plant or vllm_h100_plant(model, data_dir)
    workload = workload or bca_workload(model, data_dir)
    import warnings

    from identification.errors import ExtrapolationWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        res = simulate(
            plant,
            workload,
            FixedCap(max_num_seqs),
            slo=SLO(1e9, 1e9),
            max_num_seqs=max_num_seqs,
            chunked_prefill=False,
        )
    m = res.metrics
    pre = r["preemptions_total"]
    return FidelityRow(
        model=model,
        max_num_seqs=int(max_num_seqs),
        measured_tok_s=float(r["output_throughput"]),
        simulated_tok_s=m.throughput_tok_s,
        measured_tpot_s=float(r["median_tpot_ms"]) / 1000.0,
        simulated_tpot_s=m.tpot_p50_s,
        measured_preemptions=int(pre) if pd.notna(pre) else -1,
        simulated_preemptions=m.num_preemptions,
        extrapolated_steps=m.extrapolated_steps,
    )
