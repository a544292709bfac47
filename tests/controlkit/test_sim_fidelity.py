"""Fidelity against the measured H100 vLLM runs (BCA data), on a few fast cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controlkit.sim.context_fit import fit_step_costs, steady_table
from controlkit.sim.fidelity import bca_sharegpt_workload, bca_workload, measured_context_per_seq, replay_bca
from controlkit.sim.plants import Plant, vllm_h100_plant


@pytest.mark.parametrize(
    ("model", "n"),
    [("llama-2-7b", 64), ("llama-2-7b", 256), ("llama-2-13b", 128), ("opt-2.7b", 128), ("opt-1.3b", 768)],
)
def test_replay_matches_measured_throughput_and_median_tpot_within_5_percent(
    shared_data: Path, model: str, n: int
) -> None:
    row = replay_bca(model, n, data_dir=shared_data)
    assert abs(row.tok_s_error) < 0.05, row
    assert abs(row.tpot_error) < 0.05, row


def test_replay_preempts_where_vllm_preempted_and_not_below(shared_data: Path) -> None:
    assert replay_bca("llama-2-13b", 128, data_dir=shared_data).simulated_preemptions > 0
    assert replay_bca("llama-2-13b", 64, data_dir=shared_data).simulated_preemptions == 0


def test_replay_workload_matches_the_measured_token_totals_and_kv_per_request(shared_data: Path) -> None:
    """The sequence read off the N = 1 run reproduces quantities it was not fitted on."""
    for model, prompt_total, output_total in [("llama-2-7b", 225574, 646340), ("opt-1.3b", 221292, 583972)]:
        w = bca_workload(model, data_dir=shared_data)
        assert len(w) == 2000
        assert w.prompt_tokens.sum() == pytest.approx(prompt_total, rel=0.002)
        assert w.output_tokens.sum() == pytest.approx(output_total, rel=0.002)
        assert (w.prompt_tokens + w.output_tokens).max() <= 2048
        p, o = w.prompt_tokens.astype(float), w.output_tokens.astype(float)
        # steady KV per running request: context plus half a block of rounding per request
        ctx = float((o * (p + o / 2)).sum() / o.sum()) + 8.0
        assert ctx == pytest.approx(measured_context_per_seq(model, shared_data), rel=0.015)


def test_sharegpt_reconstruction_still_matches_its_fit_target(shared_data: Path) -> None:
    w = bca_sharegpt_workload("opt-1.3b", data_dir=shared_data)
    p, o = w.prompt_tokens.astype(float), w.output_tokens.astype(float)
    ctx = float((o * (p + o / 2)).sum() / o.sum())
    assert ctx == pytest.approx(measured_context_per_seq("opt-1.3b", shared_data), rel=0.01)


@pytest.mark.parametrize("model", ["opt-1.3b", "opt-2.7b", "llama-2-7b", "llama-2-13b"])
def test_engine_side_costs_predict_held_out_drain_steps_and_are_physical(shared_data: Path, model: str) -> None:
    bca = shared_data / "bca_memory_gap"
    plant = vllm_h100_plant(model, shared_data)
    table = steady_table(
        model, pd.read_csv(bca / "background_runs_index.csv"),
        pd.read_csv(bca / "derived_steady_state_step_times.csv"), plant.prefill_s_per_token,
    )  # fmt: skip
    fit = fit_step_costs(bca, model, table)
    assert fit.num_intervals > 100
    assert fit.heldout_mape < 0.05
    assert fit.context_s_per_token == pytest.approx(plant.context_s_per_token)
    # physically: KV bytes per token over an effective bandwidth of 1-3 TB/s (all four models)
    kv_bytes = {"opt-1.3b": 2 * 24 * 2048 * 2, "opt-2.7b": 2 * 32 * 2560 * 2, "llama-2-7b": 2 * 32 * 4096 * 2,
                "llama-2-13b": 2 * 40 * 5120 * 2}  # fmt: skip
    assert 1e12 < kv_bytes[model] / fit.context_s_per_token < 3e12
    # the per-stalled-request cost is the scheduler's CPU time per running request: 5-30 us
    assert 5e-6 < fit.idle_s_per_seq < 30e-6
    # where a prefill follows under a third of the decode steps, the engine-side table agrees
    # with the client-side median ITL (an independent check of the decomposition)
    low = (table.prefill_frac < 1 / 3) & ~table.preempted
    assert np.all(np.abs(fit.decode_step_s[low] / table.itl_s[low] - 1.0) < 0.05)


def test_context_cost_is_charged_on_decode_steps_only() -> None:
    p = Plant(
        "toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100,
        context_s_per_token=1e-6, context_ref_tokens=(100.0, 900.0),
    )  # fmt: skip
    assert p.step_s(0, 1000, num_context_tokens=50_000) == pytest.approx(0.015)
    assert p.step_s(1, 0, num_context_tokens=100) == pytest.approx(0.010)
    assert p.step_s(1, 0, num_context_tokens=1100) == pytest.approx(0.011)
