"""Fidelity against the measured H100 vLLM runs (BCA data), on a few fast cells."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controlkit.sim.context_fit import fit_step_costs, pause_fraction, steady_table
from controlkit.sim.fidelity import bca_sharegpt_workload, bca_workload, measured_context_per_seq, replay_bca
from controlkit.sim.plants import Plant, vllm_h100_plant


@pytest.mark.parametrize(
    ("model", "n"),
    [
        ("llama-2-7b", 64),
        ("llama-2-7b", 256),
        ("llama-2-13b", 128),
        ("opt-2.7b", 128),
        ("opt-2.7b", 384),
        ("opt-1.3b", 768),
    ],
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


def _metrics_run(pauses_at: list[int], pause_s: float, n: int = 384, seconds: int = 100) -> pd.DataFrame:
    """Per-second engine gauges of a run: 16 decode iterations of 62.5 ms each second, with
    ``pause_s`` of each listed second lost to a stall (fewer iterations, same wall time)."""
    rows = []
    gen = 0.0
    for i in range(seconds + 1):
        rows.append({
            "model": "toy", "max_num_seqs": n, "time_s": float(i),
            "num_requests_waiting": 0.0 if i < 1 else 500.0, "num_requests_running": float(n if i >= 1 else 0),
            "request_success_total": 0.0, "generation_tokens_total": gen,
        })  # fmt: skip
        busy = 1.0 - (pause_s if i + 1 in pauses_at else 0.0)
        gen += n * busy / 0.0625 if i >= 1 else 0.0
    return pd.DataFrame(rows)


def test_pause_fraction_recovers_injected_stalls(tmp_path: Path) -> None:
    bca = tmp_path / "bca_memory_gap"
    bca.mkdir()
    pauses_at = list(range(10, 95, 7))  # 13 stalls of 0.2 s in ~98 s of steady state
    _metrics_run(pauses_at, 0.2).to_csv(bca / "background_engine_metrics.csv.gz", index=False)
    window_s = 100 - 2  # intervals after the arrival peak (t = 1) and with data
    assert pause_fraction(bca, "toy", 384) == pytest.approx(13 * 0.2 / window_s, rel=0.05)
    clean = tmp_path / "clean" / "bca_memory_gap"
    clean.mkdir(parents=True)
    _metrics_run([], 0.0).to_csv(clean / "background_engine_metrics.csv.gz", index=False)
    assert pause_fraction(clean, "toy", 384) == 0.0
    # a stall shorter than the detector's threshold (a 5 % slower second) is not a pause
    small = tmp_path / "small" / "bca_memory_gap"
    small.mkdir(parents=True)
    _metrics_run(pauses_at, 0.05).to_csv(small / "background_engine_metrics.csv.gz", index=False)
    assert pause_fraction(small, "toy", 384) == 0.0


def test_measured_pauses_grow_with_the_batch(shared_data: Path) -> None:
    bca = shared_data / "bca_memory_gap"
    for model in ("opt-2.7b", "llama-2-7b"):
        assert pause_fraction(bca, model, 1) < 0.002
        assert 0.01 < pause_fraction(bca, model, 128) < 0.06
    plant = vllm_h100_plant("opt-2.7b", shared_data)
    bare = vllm_h100_plant("opt-2.7b", shared_data, pauses=False)
    assert plant.step_s(383, 0, 140_000) / bare.step_s(383, 0, 140_000) == pytest.approx(
        1.0 / (1.0 - plant.pause_frac[-2]), rel=1e-3
    )
    assert plant.pause_frac[-1] == plant.pause_frac[-2]  # N = 512 preempted: carries N = 384


def test_pause_charge_scales_every_step_and_rejects_bad_fractions() -> None:
    from identification.errors import ControlkitError

    base = Plant("toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100)
    p = Plant("toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100, pause_frac=(0.0, 0.2))
    assert p.step_s(1, 0) == pytest.approx(base.step_s(1, 0))
    assert p.step_s(9, 0) == pytest.approx(base.step_s(9, 0) / 0.8)
    assert p.step_s(5, 0) == pytest.approx(base.step_s(5, 0) / 0.9)
    assert p.step_s(40, 0) == pytest.approx(base.step_s(40, 0) / 0.8)  # constant beyond the table
    # a prefill-only step with stalled running requests pays at the running count
    assert p.step_s(0, 1000, num_idle_seqs=9) == pytest.approx(base.step_s(0, 1000, num_idle_seqs=9) / 0.8)
    for bad in [(0.1,), (0.0, 0.6), (-0.1, 0.0), (0.0, float("nan"))]:
        with pytest.raises(ControlkitError, match="pause_frac"):
            Plant("toy", (1.0, 9.0), (0.010, 0.018), 0.005, 1e-5, kv_blocks_total=100, pause_frac=bad)
