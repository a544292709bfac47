"""The benchmark on a local Ray instance (skipped cleanly without ray)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import replace

import pytest

from controlkit.app.bench import QUICK_GRID, run_bench, run_tasks

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    import test_bench_harness
    from ray import cloudpickle

    # the fake backend lives in a test module the Ray workers cannot import: ship it by value
    cloudpickle.register_pickle_by_value(test_bench_harness)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        cloudpickle.unregister_pickle_by_value(test_bench_harness)


def _square(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x * x


def test_ray_runs_tasks_in_order_and_reports_failures(local_ray: None) -> None:
    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    outcomes = run_tasks(_square, [3, -1, 2], ray_address="local")
    assert [o.value for o in outcomes] == [9, None, 4], [o.error for o in outcomes]
    assert "negative" in outcomes[1].error
    assert ray.is_initialized()  # an open session is reused, not shut down


def test_ray_bench_matches_the_serial_bench(local_ray: None) -> None:
    from test_bench_harness import FakeBackend

    grid = replace(QUICK_GRID, plants=("toy-a",), workloads=("azure-conv",), loads=(0.5, 1.5))
    serial = run_bench(grid, backend=FakeBackend(), jobs=1)
    on_ray = run_bench(grid, backend=FakeBackend(), ray_address="local")
    assert [(c.task, c.metrics, c.error) for c in on_ray.cells] == [
        (c.task, c.metrics, c.error) for c in serial.cells
    ]
    assert on_ray.executor == "ray local"
