"""The benchmark harness end to end on a fake simulator (dependency injection)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest

from controlkit.app.bench import (
    BEST_STATIC,
    QUICK_GRID,
    STATIC_DEFAULT,
    BenchGrid,
    BenchResults,
    CellTask,
    PlantSetup,
    run_bench,
    summarize,
    write_report,
)
from controlkit.app.bench.cells import expand_cells
from controlkit.app.bench.grid import CONTROLLERS, POLICY_TEMPLATES
from controlkit.app.bench.hindsight import parse_static_cap
from controlkit.app.cli import main


@dataclass(frozen=True, slots=True)
class FakeBackend:
    """A toy plant: goodput rises with the cap until the cap's latency limit, then collapses."""

    broken_plant: str = "broken-plant"

    def prepare_plant(self, request: tuple[str, BenchGrid]) -> PlantSetup:
        name, grid = request
        if name == self.broken_plant:
            raise RuntimeError("no such measured data")
        specs: dict[str, object] = {
            label: f"static:max_num_seqs={40 + 10 * i}" for i, label in enumerate(POLICY_TEMPLATES)
        }
        specs[STATIC_DEFAULT] = "static:max_num_seqs=256"
        specs["bca"] = "static:max_num_seqs=96"
        for c in CONTROLLERS:
            specs[c] = {"kind": "static", "params": {"max_num_seqs": 100}}
        for label in grid.policies:
            if ":" in label:
                specs[label] = label
        return PlantSetup(
            plant=name,
            tpot_slo_s=0.03,
            ttft_slo_s=2.0,
            batch1_step_s=0.01,
            default_cap=256,
            max_num_seqs=512,
            nominal_rate_req_s={w: 10.0 for w in grid.workloads},
            native_rate_req_s={w: 5.0 for w in grid.workloads},
            specs=specs,
        )

    def run_cell(self, task: CellTask) -> dict[str, float]:
        spec = task.spec
        if isinstance(spec, str) and spec.startswith("raise"):
            raise RuntimeError(f"policy {spec} exploded")
        cap = int(spec["params"]["max_num_seqs"]) if isinstance(spec, dict) else int(spec.rpartition("=")[2])
        rng = np.random.default_rng([task.seed, cap, int(task.load * 1000)])
        good_cap = 100.0 if not task.workload.startswith("step") else 80.0
        # attainment falls when the cap exceeds the latency-safe batch, and with overload
        att = max(0.0, min(1.0, 1.0 - 0.004 * max(0.0, cap - good_cap) - 0.5 * max(0.0, task.load - cap / 100.0)))
        att = float(np.clip(att + rng.normal(0, 0.001), 0.0, 1.0))
        rate = 10.0 * task.load
        return {
            "goodput_req_s": rate * att,
            "slo_attainment": att,
            "throughput_tok_s": 200.0 * rate,
            "num_preemptions": float(max(0, cap - 200)),
            "kv_usage_mean": min(1.0, cap / 300.0),
        }


GRID = replace(
    QUICK_GRID,
    plants=("toy-a", "toy-b"),
    workloads=("azure-conv", "step:0.5:1.5"),
    loads=(0.5, 1.0, 1.5),
    static_caps=(32, 64, 128, 256),
)


def _run(grid: BenchGrid = GRID, **kw: object) -> BenchResults:
    return run_bench(grid, backend=FakeBackend(), jobs=1, **kw)  # type: ignore[arg-type]


def test_quick_grid_runs_end_to_end_and_the_report_has_every_table(tmp_path: Path) -> None:
    results = _run()
    out = write_report(results, tmp_path / "docs" / "benchmarks.md")
    text = out.read_text()
    for heading in (
        "## Headline",
        "## Issue 4 goals",
        "## Non-stationary",
        "## The whole table",
        "## Failures",
        "## Setup",
    ):
        assert heading in text
    for policy in GRID.policies:
        assert f"| {policy} |" in text or f"| **{policy}** |" in text
    assert (tmp_path / "docs" / "img" / "bench_goodput.png").stat().st_size > 1000
    assert "None: every cell ran." in text
    assert {s.policy for s in summarize(results)} >= set(GRID.policies)


def test_every_policy_has_one_result_per_operating_point() -> None:
    results = _run()
    points = {(p, w, x) for p in GRID.plants for w in GRID.workloads for x in GRID.loads}
    for policy in GRID.policies:
        keys = [c.task.key for c in results.by_policy(policy)]
        assert sorted(keys) == sorted(points), policy


def test_best_static_in_hindsight_is_the_best_static_cap_at_each_point() -> None:
    results = _run()
    table = results.lookup()
    for cell in results.by_policy(BEST_STATIC):
        sweep = [c for c in results.cells if c.task.key == cell.task.key and parse_static_cap(c.task.policy)]
        assert cell.goodput_req_s == max(c.goodput_req_s for c in sweep)
        assert cell.chosen in {c.task.policy for c in sweep}
        default = table[(*cell.task.key, STATIC_DEFAULT)]
        assert cell.goodput_req_s >= default.goodput_req_s


def test_static_default_is_aliased_from_the_sweep_not_simulated_twice() -> None:
    results = _run()
    defaults = results.by_policy(STATIC_DEFAULT)
    assert defaults and all(c.chosen == "static-256" for c in defaults)
    simulated = [c for c in results.cells if c.task.policy == STATIC_DEFAULT and not c.chosen]
    assert simulated == []


def test_a_failing_cell_is_reported_and_the_rest_of_the_grid_runs(tmp_path: Path) -> None:
    grid = replace(GRID, policies=(*GRID.policies, "raise:now"))
    results = _run(grid)
    failed = results.failures
    assert failed and all(c.task.policy == "raise:now" for c in failed)
    assert all("exploded" in c.error for c in failed)
    assert all(c.ok for c in results.cells if c.task.policy != "raise:now")
    text = write_report(results, tmp_path / "b.md", plots=False).read_text()
    assert "FAILED" in text and "exploded" in text


def test_a_plant_that_cannot_be_prepared_fails_its_cells_only() -> None:
    grid = replace(GRID, plants=("toy-a", "broken-plant"))
    results = _run(grid)
    broken = [c for c in results.cells if c.task.plant == "broken-plant"]
    assert broken and all(not c.ok and "no such measured data" in c.error for c in broken)
    assert all(c.ok for c in results.cells if c.task.plant == "toy-a")


def test_the_same_seed_gives_the_same_results_and_another_seed_differs() -> None:
    a, b = _run().to_dict(), _run().to_dict()
    c = _run(replace(GRID, seed=7)).to_dict()
    for doc in (a, b, c):
        doc.pop("wall_s")
        for cell in doc["cells"]:
            cell.pop("wall_s")
    assert a == b
    assert a["cells"] != c["cells"]


def test_process_pool_gives_the_serial_results_in_grid_order() -> None:
    grid = replace(GRID, plants=("toy-a",), workloads=("azure-conv",))
    serial = run_bench(grid, backend=FakeBackend(), jobs=1)
    pooled = run_bench(grid, backend=FakeBackend(), jobs=2)
    assert [(c.task, c.metrics) for c in serial.cells] == [(c.task, c.metrics) for c in pooled.cells]
    assert pooled.executor == "process pool x2"


def test_progress_callback_sees_every_task() -> None:
    seen: list[tuple[int, int]] = []
    _run(progress=lambda done, total: seen.append((done, total)))
    cells = [t for t in seen if t[1] > len(GRID.plants)]
    assert cells[-1][0] == cells[-1][1]


def test_results_round_trip_through_json_and_rerender(tmp_path: Path) -> None:
    results = _run(replace(GRID, policies=(*GRID.policies, "raise:now")))
    path = tmp_path / "r.json"
    results.save_json(path)
    again = BenchResults.load_json(path)
    assert again.grid == results.grid
    assert [c.task for c in again.cells] == [c.task for c in results.cells]
    assert [c.error for c in again.cells] == [c.error for c in results.cells]
    out = tmp_path / "bench.md"
    assert main(["bench", "--from-json", str(path), "-o", str(out), "--no-plots"]) == 0
    assert "## Headline" in out.read_text()


def test_goal_rows_report_measured_ratios_for_each_controller() -> None:
    rows = {s.policy: s for s in summarize(_run())}
    for c in CONTROLLERS:
        assert math.isfinite(rows[c].goodput_vs_static) and rows[c].goodput_vs_static > 0
    assert rows[STATIC_DEFAULT].goodput_vs_static == pytest.approx(1.0)
    assert rows[BEST_STATIC].goodput_vs_best == pytest.approx(1.0)
    assert rows[BEST_STATIC].goodput_vs_static >= 1.0


def test_expand_cells_marks_unprepared_policies_as_failed_cells() -> None:
    setup = FakeBackend().prepare_plant(("toy-a", GRID))
    setup = replace(setup, specs={k: v for k, v in setup.specs.items() if k != "pid"}, errors={"mpc": "design refused"})
    cells = expand_cells(GRID, {"toy-a": setup, "toy-b": setup})
    assert all(c.error == "design refused" for c in cells if c.policy == "mpc")
    assert all("no spec prepared" in c.error for c in cells if c.policy == "pid")
    assert all(c.error == "" for c in cells if c.policy not in ("pid", "mpc"))


def test_rich_progress_bar_runs_and_json_goes_into_a_new_folder(tmp_path: Path) -> None:
    results = _run(replace(GRID, plants=("toy-a",)), progress=True)
    results.save_json(tmp_path / "new" / "r.json")
    assert BenchResults.load_json(tmp_path / "new" / "r.json").executor == "serial"
