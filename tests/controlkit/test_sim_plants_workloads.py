"""Plants from the shared measured data, and workloads by name and from files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controlkit.sim import Plant, Workload, load_plant, load_workload
from identification.errors import ControlkitError, TelemetryError


def test_plant_interpolates_the_table_and_extrapolates_the_last_segment() -> None:
    p = Plant("t", (1.0, 3.0, 5.0), (0.010, 0.014, 0.020), 0.005, 1e-5, kv_blocks_total=10)
    assert p.step_s(2, 0) == pytest.approx(0.012)
    assert p.step_s(7, 0) == pytest.approx(0.026)  # slope of (3, 5) continued
    assert p.is_extrapolated(7) and not p.is_extrapolated(4)
    assert p.step_s(0, 0) == 0.0
    assert p.step_s(2, 100) == pytest.approx(0.012 + 100e-5)  # prefill tokens ride on the decode step


def test_plant_rejects_non_increasing_or_non_positive_tables() -> None:
    with pytest.raises(ControlkitError, match="increase"):
        Plant("t", (2.0, 1.0), (0.01, 0.02), 0.0, 0.0, kv_blocks_total=10)
    with pytest.raises(ControlkitError, match="finite"):
        Plant("t", (1.0, 2.0), (0.01, float("nan")), 0.0, 0.0, kv_blocks_total=10)


@pytest.mark.parametrize("model", ["opt-1.3b", "opt-2.7b", "llama-2-7b", "llama-2-13b"])
def test_vllm_h100_plant_uses_the_measured_capacity_and_step_time(shared_data: Path, model: str) -> None:
    import pandas as pd

    idx = pd.read_csv(shared_data / "bca_memory_gap" / "background_runs_index.csv")
    runs = idx[idx["model"] == model].sort_values("max_num_seqs")
    p = load_plant(f"vllm-h100:{model}", data_dir=shared_data)
    assert p.kv_blocks_total == int(runs["num_gpu_blocks"].iloc[0])
    assert p.block_size == 16 and p.max_model_len == 2048
    # engine-side batch-1 step (wall per iteration less the prefill share) agrees with the client's ITL
    assert p.decode_s(1) == pytest.approx(runs["median_itl_ms"].iloc[0] / 1000.0, rel=0.01)
    steps = [p.decode_s(b) for b in (1, 8, 32, 64)]
    assert steps == sorted(steps)  # step time increases with the batch
    assert p.prefill_s_per_token > 0


@pytest.mark.parametrize(
    "name",
    [
        "vidur-h100:llama-2-7b",
        "vidur-a100:llama-2-70b",
        "vidur-a40:phi-2",
        "splitwise-h100-tp4:llama2-70b",
        "splitwise-a100-tp8:bloom-176b",
    ],
)
def test_profile_plants_load_with_positive_capacity_and_increasing_steps(
    shared_data: Path, name: str
) -> None:
    p = load_plant(name, data_dir=shared_data)
    assert p.kv_blocks_total > 0
    assert 0 < p.step_s(1, 0) < p.step_s(32, 0) < 1.0
    assert p.step_s(0, 2048) > p.step_s(0, 128)


def test_unknown_plants_name_the_known_ones() -> None:
    with pytest.raises(ControlkitError, match="known"):
        load_plant("vllm-h100:gpt-5")
    with pytest.raises(ControlkitError, match="vllm-h100"):
        load_plant("nonsense")


def test_named_traces_load_sorted_and_scaled(shared_data: Path) -> None:
    conv = load_workload("azure-conv", data_dir=shared_data)
    assert len(conv) == 19366 and 3000 < conv.duration_s < 3700
    fast = load_workload("azure-conv", rate_scale=2.0, num_requests=100, data_dir=shared_data)
    assert len(fast) == 100
    np.testing.assert_allclose(fast.arrival_s, conv.arrival_s[:100] / 2.0)
    moon = load_workload("mooncake", num_requests=50, data_dir=shared_data)
    assert moon.prompt_tokens.mean() > 1000  # long-context trace


def test_sharegpt_arrival_modes_and_seed(shared_data: Path) -> None:
    at_once = load_workload("sharegpt:all-at-once", num_requests=200, data_dir=shared_data)
    assert np.all(at_once.arrival_s == 0.0)
    pois = load_workload("sharegpt:poisson:10", num_requests=2000, seed=1, data_dir=shared_data)
    assert 2000 / pois.arrival_s[-1] == pytest.approx(10.0, rel=0.1)
    gam = load_workload("sharegpt:gamma:10:3", num_requests=2000, seed=1, data_dir=shared_data)
    gaps = np.diff(gam.arrival_s)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.25)
    again = load_workload("sharegpt:gamma:10:3", num_requests=2000, seed=1, data_dir=shared_data)
    np.testing.assert_array_equal(gam.arrival_s, again.arrival_s)


def test_step_and_ramp_change_the_arrival_rate(shared_data: Path) -> None:
    step = load_workload("step:2:20:100", seed=0, data_dir=shared_data)
    before = np.count_nonzero(step.arrival_s < 100)
    after = np.count_nonzero(step.arrival_s >= 100)
    assert before == pytest.approx(200, rel=0.3) and after == pytest.approx(2000, rel=0.15)
    ramp = load_workload("ramp:0:10:100", seed=0, data_dir=shared_data)
    assert np.count_nonzero(ramp.arrival_s > 50) > 2 * np.count_nonzero(ramp.arrival_s <= 50)


def test_request_file_round_trip_and_bad_rows(tmp_path: Path) -> None:
    good = tmp_path / "reqs.csv"
    good.write_text("arrival_s,prompt_tokens,output_tokens\n1.0,10,5\n0.5,20,6\n")
    w = load_workload(good)
    assert w.prompt_tokens.tolist() == [20, 10] and w.arrival_s.tolist() == [0.0, 0.5]
    bad = tmp_path / "bad.csv"
    bad.write_text("arrival_s,prompt_tokens,output_tokens\n1.0,10,5\n2.0,abc,6\n")
    with pytest.raises(TelemetryError, match=r"line 3.*prompt_tokens"):
        load_workload(bad)
    with pytest.raises(ControlkitError, match="unknown workload"):
        load_workload("weird-trace")


def test_clipping_to_max_model_len_is_counted() -> None:
    w = Workload("w", np.zeros(3), np.array([100, 2000, 5000]), np.array([100, 100, 100]))
    c, n = w.clipped(2048)
    assert n == 2
    assert np.all(c.prompt_tokens + c.output_tokens <= 2048) and np.all(c.output_tokens >= 1)


def test_public_api_is_pinned() -> None:
    import controlkit.sim as sim

    assert set(sim.__all__) == {
        "SLO",
        "WAITING_LIST_LIMIT",
        "Plant",
        "RequestOutcomes",
        "SimMetrics",
        "SimResult",
        "Workload",
        "default_slo",
        "load_plant",
        "load_workload",
        "read_steps",
        "simulate",
        "write_requests",
        "write_steps",
    }
    assert all(hasattr(sim, name) for name in sim.__all__)
