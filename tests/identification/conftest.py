"""Factories for the identification model tests: synthetic step records with a known plant."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from identification.records import RUN_COLUMN, STEP_COLUMNS


def make_step_records(
    n: int,
    slope: float,
    noise: float,
    seed: int,
    *,
    intercept: float = 0.01,
    batch_max: int = 128,
    knee: float | None = None,
    slope_above: float | None = None,
    context_cost: float = 0.0,
    prefill_cost: float = 0.0,
    runs: int = 1,
    blocks_per_seq: float = 20.0,
    kv_blocks_total: int = 100_000,
) -> pd.DataFrame:
    """Step records (STEP_COLUMNS + num_context_tokens + run) from a known plant.

    ``step_s = intercept + slope·b`` (below ``knee``; ``slope_above`` beyond it)
    ``+ context_cost·context_tokens + prefill_cost·prefill_tokens + N(0, noise²)``, with the batch
    uniform on 1..batch_max and context tokens per sequence uniform on 50..1500.
    """
    rng = np.random.default_rng(seed)
    b = rng.integers(1, batch_max + 1, n).astype(np.float64)
    ctx_per_seq = rng.uniform(50, 1500, n)
    prefill = np.where(rng.random(n) < 0.2, rng.integers(16, 2048, n), 0).astype(np.float64)
    if knee is None:
        base = intercept + slope * b
    else:
        above = slope if slope_above is None else slope_above
        base = intercept + slope * np.minimum(b, knee) + above * np.maximum(b - knee, 0.0)
    step = base + context_cost * b * ctx_per_seq + prefill_cost * prefill + rng.normal(0.0, noise, n)
    step = np.maximum(step, 1e-6)
    frame = pd.DataFrame({
        "t_s": np.cumsum(step),
        "step_s": step,
        "num_running": b.astype(np.int64),
        "num_waiting": rng.integers(0, 10, n),
        "num_prefill_tokens": prefill.astype(np.int64),
        "num_decode_tokens": b.astype(np.int64),
        "kv_blocks_used": np.round(b * blocks_per_seq).astype(np.int64),
        "kv_blocks_total": kv_blocks_total,
        "num_preempted": 0,
        "num_context_tokens": np.round(b * ctx_per_seq).astype(np.int64),
    })
    frame[RUN_COLUMN] = [f"run{i % runs}" for i in range(n)]
    assert set(STEP_COLUMNS) <= set(frame.columns)
    return frame


@pytest.fixture(scope="session")
def step_records() -> Callable[..., pd.DataFrame]:
    """The :func:`make_step_records` factory."""
    return make_step_records
