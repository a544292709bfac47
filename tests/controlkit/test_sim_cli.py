"""The simulate command (in-process and one subprocess smoke test) and the telemetry round trip."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from controlkit.app.cli import main
from controlkit.contract import BatchLimits, Observation
from controlkit.policyfile import PolicyFile
from controlkit.sim import SLO, Plant, Workload, read_steps, simulate
from policies.registry import PolicyContext, register


class _Cap:
    def __init__(self, cap: int) -> None:
        self.limits = BatchLimits(cap)

    def decide(self, observation: Observation) -> BatchLimits:
        return self.limits

    def reset(self) -> None:
        pass


def _factory(pf: PolicyFile, ctx: PolicyContext) -> _Cap:
    return _Cap(int(pf.params.get("cap", ctx.max_num_seqs)))


register("test-sim-cap", _factory)


def test_simulate_command_writes_metrics_telemetry_and_plot(shared_data: Path, tmp_path: Path) -> None:
    out, steps, png = tmp_path / "m.json", tmp_path / "s.jsonl", tmp_path / "run.png"
    code = main(
        [
            "simulate",
            "--plant",
            "vllm-h100:llama-2-7b",
            "--workload",
            "sharegpt:poisson:5",
            "--num-requests",
            "100",
            "--policy",
            "test-sim-cap:cap=16",
            "-o",
            str(out),
            "--telemetry",
            str(steps),
            "--plot",
            str(png),
        ]
    )
    assert code == 0
    doc = json.loads(out.read_text())
    assert doc["schema"] == "controlkit.simmetrics/1" and doc["num_requests"] == 100
    assert doc["num_finished"] == 100 and doc["slo_tpot_s"] == pytest.approx(5 * 0.0108343, rel=1e-3)
    header, frame = read_steps(steps)
    assert header["schema"] == "controlkit.steps/1" and len(frame) == doc["num_steps"]
    assert frame["max_active_seqs"].max() == 16 and frame["num_running"].max() <= 16
    assert png.stat().st_size > 1000


def test_simulate_timeout_bounds_every_wait_and_timed_out_requests_are_not_good(tmp_path: Path) -> None:
    def run(*extra: str) -> dict[str, object]:
        out = tmp_path / f"m{len(extra)}.json"
        code = main(["simulate", "--plant", "vllm-h100:llama-2-7b", "--workload", "sharegpt:poisson:40",
                     "--num-requests", "300", "--policy", "test-sim-cap:cap=2", "--ttft-slo-s", "1",
                     "-o", str(out), *extra])
        assert code == 0
        doc: dict[str, object] = json.loads(out.read_text())
        return doc

    waits, bounded = run(), run("--timeout-s", "3")
    assert waits["num_timed_out"] == 0 and float(waits["ttft_p99_s"]) > 3  # type: ignore[arg-type]
    assert int(bounded["num_timed_out"]) > 0  # type: ignore[call-overload]
    n_good = float(bounded["slo_attainment"]) * int(bounded["num_requests"])  # type: ignore[arg-type,call-overload]
    assert n_good <= int(bounded["num_requests"]) - int(bounded["num_timed_out"]) + 1e-9  # type: ignore[call-overload]


def test_simulate_command_reports_a_bad_plant_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["simulate", "--plant", "vllm-h100:nope", "--workload", "sharegpt", "--policy", "test-sim-cap"]
    )
    assert code == 1
    assert "unknown vllm-h100 model" in capsys.readouterr().err


def test_simulate_subprocess_smoke(shared_data: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controlkit.app.cli", "simulate", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--telemetry" in proc.stdout


def test_identify_recovers_the_plant_slope_from_simulated_telemetry(tmp_path: Path) -> None:
    telemetry = pytest.importorskip("identification.telemetry")
    plant_mod = pytest.importorskip("identification.plant")
    slope_s = 2e-4
    plant = Plant(
        "affine", (1.0, 256.0), (0.010 + slope_s, 0.010 + 256 * slope_s), 0.010, 2e-5, kv_blocks_total=20000
    )
    rng = np.random.default_rng(3)
    n = 3000
    arrivals = np.sort(rng.uniform(0, 1, n)) ** 0.5 * 150  # a load ramp: the batch sweeps 1..64
    w = Workload("ramp", arrivals, rng.integers(20, 200, n), rng.integers(20, 300, n))
    path = tmp_path / "steps.jsonl"
    simulate(plant, w, _Cap(64), slo=SLO(1.0, 0.1), telemetry=path, step_noise_cv=0.05, seed=1)
    model = plant_mod.identify(telemetry.read_telemetry(path))
    lo, hi = model.latency.slope_interval_
    assert lo <= slope_s <= hi
    assert model.memory.capacity_blocks_ == 20000
