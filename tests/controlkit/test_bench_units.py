"""Unit and property tests of the benchmark's pieces: capacity, hindsight, grid, runner."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.app.bench import (
    BEST_STATIC,
    BenchGrid,
    CellResult,
    CellTask,
    best_static_in_hindsight,
    bisect_capacity,
    capacity_from_curve,
    materialize_workload,
    run_tasks,
)
from controlkit.app.bench.summary import ratio_of_sums
from identification.errors import ControlkitError, PolicyError


def _task(policy: str, load: float = 1.0) -> CellTask:
    return CellTask("p", "w", load, "w", 1.0, policy, "", 0.05, 2.0, 512, 10, 60.0, 0)


@given(
    st.lists(
        st.tuples(st.floats(0.05, 5.0), st.floats(0.0, 1.0)), min_size=1, max_size=8, unique_by=lambda t: t[0]
    )
)
def test_capacity_lies_between_the_last_passing_and_the_first_failing_load(
    points: list[tuple[float, float]],
) -> None:
    loads, atts = zip(*points, strict=True)
    cap = capacity_from_curve(loads, atts)
    ordered = sorted(points)
    first_fail = next((i for i, (_, a) in enumerate(ordered) if a < 0.9), None)
    if first_fail is None:
        assert cap.censored == "above" and cap.load == ordered[-1][0]
    elif first_fail == 0:
        assert cap.censored == "below" and cap.load == 0.0 and cap.lightest == ordered[0][0]
    else:
        assert cap.censored == ""
        assert ordered[first_fail - 1][0] <= cap.load <= ordered[first_fail][0]


def test_capacity_interpolates_the_threshold_crossing() -> None:
    # attainment 1.0 at load 1, 0.8 at load 2: crossing 0.9 halfway
    assert capacity_from_curve([1.0, 2.0], [1.0, 0.8]).load == pytest.approx(1.5)
    assert capacity_from_curve([2.0, 1.0], [0.8, 1.0]).render() == "1.50"
    assert capacity_from_curve([1.0, 2.0], [0.5, 0.95]).render() == "<1.00"
    assert capacity_from_curve([1.0, 2.0], [1.0, float("nan")]).load == 1.0


def test_capacity_rejects_mismatched_inputs() -> None:
    with pytest.raises(ControlkitError, match="non-empty"):
        capacity_from_curve([1.0], [])


@given(st.floats(0.2, 1.9))
def test_bisection_finds_a_step_threshold_within_tolerance(threshold_load: float) -> None:
    calls: list[float] = []

    def attainment(load: float) -> float:
        calls.append(load)
        return 0.99 if load <= threshold_load else 0.5

    cap = bisect_capacity(attainment, 0.1, 2.0, tol=0.01, max_evaluations=30)
    assert cap.load <= threshold_load <= cap.load + 0.02 + 1e-9
    assert cap.evaluations == len(calls)


def test_bisection_reports_censoring_and_rejects_a_bad_bracket() -> None:
    assert bisect_capacity(lambda x: 1.0, 0.5, 2.0).censored == "above"
    assert bisect_capacity(lambda x: 0.0, 0.5, 2.0).censored == "below"
    with pytest.raises(ControlkitError, match="bracket"):
        bisect_capacity(lambda x: 1.0, 2.0, 1.0)


@given(
    st.lists(
        st.tuples(st.sampled_from([8, 16, 32, 64, 128]), st.floats(0, 50), st.floats(0, 1)),
        min_size=1,
        max_size=5,
        unique_by=lambda t: t[0],
    )
)
def test_best_static_never_loses_to_any_swept_cap(sweep: list[tuple[int, float, float]]) -> None:
    cells = [
        CellResult(_task(f"static-{cap}"), {"goodput_req_s": g, "slo_attainment": a}) for cap, g, a in sweep
    ]
    (best,) = best_static_in_hindsight(cells)
    assert best.task.policy == BEST_STATIC
    assert all(best.goodput_req_s >= c.goodput_req_s for c in cells)
    ties = [c for c in cells if c.goodput_req_s == best.goodput_req_s]
    assert best.slo_attainment == max(c.slo_attainment for c in ties)


def test_best_static_ignores_failed_sweep_cells_and_fails_when_all_failed() -> None:
    ok = CellResult(_task("static-64"), {"goodput_req_s": 1.0, "slo_attainment": 1.0})
    bad = CellResult(_task("static-128"), {}, error="RuntimeError: boom")
    (best,) = best_static_in_hindsight([ok, bad])
    assert best.chosen == "static-64"
    (none,) = best_static_in_hindsight([bad])
    assert not none.ok and "boom" in none.error


def test_traces_are_scaled_to_the_nominal_rate_and_synthetic_loads_get_absolute_rates() -> None:
    assert materialize_workload("mooncake", 0.5, nominal_req_s=8.0, native_req_s=2.0, num_requests=10) == (
        "mooncake",
        2.0,
    )
    name, scale = materialize_workload(
        "ramp:0.3:1.7", 1.0, nominal_req_s=10.0, native_req_s=None, num_requests=300
    )
    assert (name, scale) == ("ramp:3:17:30", 1.0)  # mean rate 10/s over 30 s = 300 requests
    assert materialize_workload("sharegpt", 2.0, nominal_req_s=3.0, native_req_s=None, num_requests=5)[0] == (
        "sharegpt:poisson:6"
    )
    with pytest.raises(PolicyError, match="relative"):
        materialize_workload("step:1", 1.0, nominal_req_s=1.0, native_req_s=None, num_requests=5)
    with pytest.raises(PolicyError, match="native"):
        materialize_workload("azure-conv", 1.0, nominal_req_s=1.0, native_req_s=None, num_requests=5)


def test_grid_rejects_empty_or_nonpositive_axes() -> None:
    with pytest.raises(PolicyError, match="plants"):
        BenchGrid(plants=(), workloads=("w",), loads=(1.0,))
    with pytest.raises(PolicyError, match="load"):
        BenchGrid(plants=("p",), workloads=("w",), loads=(0.0,))


def _half(x: int) -> float:
    if x == 3:
        raise ValueError("three is not allowed")
    return x / 2


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_tasks_keeps_task_order_and_contains_errors(jobs: int) -> None:
    outcomes = run_tasks(_half, list(range(6)), jobs=jobs)
    assert [o.value for o in outcomes] == [0.0, 0.5, 1.0, None, 2.0, 2.5]
    assert (
        outcomes[3].error == "ValueError: three is not allowed" and "ValueError" in outcomes[3].traceback_tail
    )
    with pytest.raises(ControlkitError, match="jobs"):
        run_tasks(_half, [1], jobs=0)


def test_ratio_of_sums_handles_zero_references() -> None:
    assert ratio_of_sums([1.0], [0.0]) == math.inf
    assert ratio_of_sums([1.0, 3.0], [2.0, 2.0]) == 1.0
