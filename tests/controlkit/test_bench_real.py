"""The benchmark's quick grid on the real simulator, plants and policies (needs ../shared/data)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from controlkit.app.bench import BEST_STATIC, QUICK_GRID, STATIC_DEFAULT, BenchResults, run_bench, write_report
from controlkit.app.bench.backend import SimBackend
from controlkit.app.cli import main

POLICIES = (STATIC_DEFAULT, BEST_STATIC, "pang-a1a2", "sglang-ratio", "bca", "pid")
GRID = replace(QUICK_GRID, policies=POLICIES, workloads=("azure-conv", "step:0.5:1.5"), num_requests=80)
HAS_DESIGN = importlib.util.find_spec("controlkit.app.cli.design") is not None


@pytest.fixture(scope="module")
def results(shared_data: Path) -> BenchResults:
    return run_bench(GRID, backend=SimBackend(), jobs=1)


def test_quick_grid_on_the_real_simulator_runs_every_baseline(results: BenchResults) -> None:
    for policy in (STATIC_DEFAULT, BEST_STATIC, "pang-a1a2", "sglang-ratio", "bca"):
        cells = results.by_policy(policy)
        assert len(cells) == len(GRID.workloads) * len(GRID.loads)
        assert all(c.ok for c in cells), [c.error for c in cells if not c.ok]
        for c in cells:
            assert 0.0 <= c.slo_attainment <= 1.0
            assert c.goodput_req_s <= c.metric("offered_rate_req_s") * 1.5
            assert c.metric("num_requests") == GRID.num_requests


def test_controllers_are_designed_from_identified_telemetry_or_their_failure_is_reported(
    results: BenchResults,
) -> None:
    setup = results.setups[GRID.plants[0]]
    ident = setup.notes["identification"]
    assert ident["requests"] == GRID.id_num_requests and ident["workload"].startswith("ramp:")
    lo, hi = ident["summary"]["slope_interval_"]
    assert 0 < lo <= hi
    pid = results.by_policy("pid")
    if HAS_DESIGN:
        assert isinstance(setup.specs["pid"], dict) and setup.specs["pid"]["kind"] == "pid"
    else:
        assert all(not c.ok and "design" in c.error for c in pid)


def test_bca_runs_its_offline_sweep_on_the_plant(results: BenchResults) -> None:
    bca = results.setups[GRID.plants[0]].notes["bca"]
    assert results.setups[GRID.plants[0]].specs["bca"] == f"bca:b_opt={bca['b_opt']}"
    batches = [row[0] for row in bca["table"]]
    assert 1 in batches and bca["b_opt"] in batches


def test_the_real_quick_grid_is_deterministic_for_a_seed(results: BenchResults) -> None:
    grid = replace(GRID, plants=GRID.plants, policies=(STATIC_DEFAULT, "pang-a1a2"))
    again = run_bench(grid, backend=SimBackend(), jobs=1)
    table = results.lookup()
    for c in again.cells:
        assert c.metrics == table[(*c.task.key, c.task.policy)].metrics


def test_report_from_the_real_run_has_the_tables(results: BenchResults, tmp_path: Path) -> None:
    text = write_report(results, tmp_path / "benchmarks.md", plots=False).read_text()
    assert "## Headline" in text and "## The whole table" in text and "`vllm-h100:llama-2-7b`" in text


def test_cli_quick_bench_in_process(shared_data: Path, tmp_path: Path) -> None:
    out, js = tmp_path / "b.md", tmp_path / "b.json"
    code = main(
        [
            "bench",
            "--legacy-grid",
            "--quick",
            "--jobs",
            "1",
            "--no-plots",
            "--no-progress",
            "--policies",
            "static-default,pang-a1",
            "--workloads",
            "azure-conv",
            "--num-requests",
            "40",
            "-o",
            str(out),
            "--json",
            str(js),
        ]
    )
    assert code == 0
    assert "## Headline" in out.read_text()
    assert BenchResults.load_json(js).grid.workloads == ("azure-conv",)


def test_cli_subprocess_smoke() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controlkit.app.cli", "bench", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0 and "--ray" in proc.stdout
