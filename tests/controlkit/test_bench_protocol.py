"""The benchmark protocol: frozen split, cap grid, trace windows, statistics, a tiny real run."""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from controlkit.app.bench.grid import CellTask
from controlkit.app.bench.protocol import (
    HOLDOUT_SEEDS,
    QUICK_PROTOCOL,
    TUNE_SEEDS,
    Protocol,
    cap_grid,
    trace_start_s,
    vllm_default_limits,
)
from controlkit.app.bench.protocol_report import load_protocol_json, render_protocol, save_protocol_json
from controlkit.app.bench.protocol_run import BEST_GUARDED, BEST_STATIC_PLANT, choose_cap, run_protocol
from controlkit.app.bench.protocol_stats import median_ratio, t_interval
from controlkit.app.bench.results import CellResult
from controlkit.sim import load_workload
from identification.errors import PolicyError


def test_the_split_is_frozen_and_disjoint() -> None:
    assert not set(TUNE_SEEDS) & set(HOLDOUT_SEEDS) and len(HOLDOUT_SEEDS) >= 5
    with pytest.raises(PolicyError, match="frozen"):
        Protocol(plants=("p",), workloads=("w",), tune_seeds=(5,))
    with pytest.raises(PolicyError, match="frozen"):
        Protocol(plants=("p",), workloads=("w",), holdout_seeds=(0, 5))


def test_cap_grid_starts_at_one_and_is_fine_enough() -> None:
    grid = cap_grid(1024, extra=(300,))
    assert grid[:8] == tuple(range(1, 9)) and grid[-1] == 1024 and 300 in grid
    assert max(b / a for a, b in itertools.pairwise(grid) if a >= 8) <= 1.25
    with pytest.raises(PolicyError):
        cap_grid(100, ratio=1.5)


def test_vllm_defaults_match_the_installed_vllm_source() -> None:
    assert vllm_default_limits("vllm-h100:llama-2-7b") == (1024, 8192)
    assert vllm_default_limits("splitwise-a100-tp4:llama2-70b") == (256, 2048)
    vllm = pytest.importorskip("vllm")
    text = (Path(vllm.__file__).parent / "engine" / "arg_utils.py").read_text()
    h100 = text[text.index("For GPUs like H100 and H200") :][:600]
    assert re.search(r"OPENAI_API_SERVER: 8192", h100) and re.search(r"OPENAI_API_SERVER: 1024", h100)


def test_seeds_replay_different_windows_of_a_trace(shared_data: Path) -> None:
    starts = [trace_start_s(s, 400.0) for s in (*TUNE_SEEDS, *HOLDOUT_SEEDS)]
    assert len(set(starts)) == len(starts)
    a = load_workload("azure-conv", start_s=starts[0], num_requests=50)
    b = load_workload("azure-conv", start_s=starts[5], num_requests=50)
    assert a.arrival_s[0] == b.arrival_s[0] == 0.0
    assert not np.array_equal(a.prompt_tokens, b.prompt_tokens)


def _cell(policy: str, seed: int, goodput: float, load: float = 1.0, plant: str = "p") -> CellResult:
    task = CellTask(plant, "w", load, "w", 1.0, policy, "s", 0.05, 2.0, 8, 10, 60.0, seed)
    return CellResult(task, {"goodput_req_s": goodput, "slo_attainment": 0.9})


def test_choose_cap_takes_the_best_mean_normalised_goodput_and_ignores_other_loads() -> None:
    cells = [_cell(f"guarded-{c}", s, g) for s in (0, 1) for c, g in ((4, 1.0), (8, 2.0), (16, 1.5))]
    cells += [_cell("guarded-32", 0, 99.0, load=0.5)]  # outside the goal loads: never counts
    assert choose_cap(cells, "p", "guarded-") == 8


def test_median_ratio_is_paired_over_seeds_with_a_bootstrap_interval() -> None:
    rng = np.random.default_rng(0)
    cells = []
    for load in (0.8, 1.0, 1.2):
        for seed in HOLDOUT_SEEDS:
            base = 2.0 + rng.normal(0, 0.2)
            cells += [_cell("ref", seed, base, load), _cell("pol", seed, 1.2 * base, load)]
    r = median_ratio(cells, "pol", "ref", loads=(0.8, 1.2), boot=200)
    assert r.median == pytest.approx(1.2) and r.lo <= 1.2 <= r.hi
    lo, hi = t_interval([1.0, 2.0, 3.0])
    assert lo < 2.0 < hi and math.isnan(t_interval([1.0])[0])


TINY = replace(
    QUICK_PROTOCOL,
    loads=(1.0,),
    holdout_seeds=(5,),
    warmup_s=2.0,
    window_s=8.0,
    tail_s=2.0,
    baselines=("static-default", "static-default+guard"),
    controllers=(),
    capacity_requests=40,
)


def test_a_tiny_protocol_run_on_the_real_simulator(shared_data: Path, tmp_path: Path) -> None:
    res = run_protocol(replace(TINY, cap_ratio=1.25), jobs=1)
    assert res.tune and res.holdout and not [c.error for c in (*res.tune, *res.holdout) if c.error]
    # the hindsight choices were made on tune seeds; the report cells are hold-out only
    assert {c.task.seed for c in res.tune} <= set(TUNE_SEEDS)
    assert {c.task.seed for c in res.holdout} <= set(HOLDOUT_SEEDS)
    policies = {c.task.policy for c in res.holdout}
    assert {BEST_STATIC_PLANT, BEST_GUARDED, "static-default", "static-default+guard"} <= policies
    plant = TINY.plants[0]
    assert res.capacity[plant]["azure-conv"]["capacity_req_s"] > 0 and res.chosen[plant]["guarded"] >= 1
    for c in res.holdout:  # a fixed window, a client timeout, the admission layer only where labelled
        assert c.task.window_s == TINY.window_s and c.task.timeout_s > 0
        assert (c.task.guard is not None) == (c.task.policy.endswith("+guard") or c.task.policy == BEST_GUARDED)
        assert c.metric("window_s") == TINY.window_s
    path = tmp_path / "p.json"
    save_protocol_json(res, path)
    again = load_protocol_json(path)
    text = render_protocol(again)
    assert render_protocol(res) == text
    for section in ("## Headline", "## Issue 12 goal", "## Every cell where", "## Protocol", "## The whole table"):
        assert section in text
