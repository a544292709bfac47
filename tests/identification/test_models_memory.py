"""MemoryModel: capacity, blocks per sequence/token, the largest batch that fits, preemption onset."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identification import MemoryModel, NotFittedError, TelemetryError
from identification.records import Telemetry
from identification.robust import ArgumentError

Factory = Callable[..., pd.DataFrame]


def _fitted(step_records: Factory, **kw: Any) -> MemoryModel:
    steps = step_records(400, 1e-4, 1e-5, seed=0, blocks_per_seq=25.0, kv_blocks_total=5000)
    return MemoryModel(**kw).fit(Telemetry(steps=steps))


def test_capacity_blocks_per_seq_and_onset_from_step_records(step_records: Factory) -> None:
    m = _fitted(step_records)
    assert m.capacity_blocks_ == 5000 and m.block_size_ == 16
    assert m.blocks_per_seq_ == pytest.approx(25.0, rel=0.01)
    assert m.preemption_onset_ == 200
    assert m.observed_preemption_onset_ is None


def test_blocks_per_token_is_regressed_when_context_tokens_are_known() -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(1, 100, 300)
    ctx = b * rng.uniform(100, 900, 300)
    steps = pd.DataFrame({"t_s": np.arange(300.0), "step_s": 0.01, "num_running": b, "num_waiting": 0,
                          "num_prefill_tokens": 0, "num_decode_tokens": b,
                          "kv_blocks_used": np.ceil(ctx / 16 + 0.5 * b), "kv_blocks_total": 100_000,
                          "num_preempted": 0, "num_context_tokens": ctx.round(), "run": "r"})
    m = MemoryModel().fit(Telemetry(steps=steps))
    assert m.blocks_per_token_ == pytest.approx(1 / 16, rel=0.02)
    assert m.blocks_per_token_method_.startswith("regressed")


@settings(max_examples=40)
@given(tokens=st.integers(1, 4096), headroom=st.floats(0.0, 0.5))
def test_max_batch_fits_capacity_with_headroom_and_one_more_does_not(tokens: int, headroom: float) -> None:
    m = MemoryModel(capacity_blocks=5000).fit(Telemetry(steps=_steps()))
    n = m.max_batch(tokens, headroom=headroom)
    per_seq = int(np.ceil(tokens / 16))
    assert n * per_seq <= 5000 * (1 - headroom) + 1e-6
    assert (n + 1) * per_seq > 5000 * (1 - headroom) - 1e-6
    assert m.max_batch(tokens, headroom=min(headroom + 0.1, 0.99)) <= n


def test_max_batch_of_a_length_distribution_uses_its_mean_block_count() -> None:
    m = MemoryModel(capacity_blocks=1000).fit(Telemetry(steps=_steps()))
    assert m.max_batch(np.array([16, 48]), headroom=0.0) == 500  # 1 and 3 blocks: mean 2
    with pytest.raises(ArgumentError, match="headroom"):
        m.max_batch(16, headroom=1.0)
    with pytest.raises(ArgumentError, match="tokens_per_seq"):
        m.max_batch([16, -1])


def test_missing_capacity_and_unfitted_use_are_errors() -> None:
    steps = _steps().assign(kv_blocks_total=0)
    with pytest.raises(TelemetryError, match="num_gpu_blocks"):
        MemoryModel().fit(Telemetry(steps=steps))
    with pytest.raises(NotFittedError):
        MemoryModel().max_batch(100)


def test_observed_onset_is_the_smallest_run_level_that_preempted() -> None:
    frames = []
    for level in (8, 16, 32):
        s = _steps(level=level)
        s["run"] = f"n{level}"
        s["num_preempted"] = 1 if level >= 16 else 0
        frames.append(s)
    m = MemoryModel().fit(Telemetry(steps=pd.concat(frames, ignore_index=True)))
    assert m.observed_preemption_onset_ == 16


def test_round_trip_keeps_the_fitted_state(step_records: Factory) -> None:
    m = _fitted(step_records)
    again = MemoryModel.from_dict(m.to_dict())
    assert again.to_dict() == m.to_dict()
    assert again.max_batch(500) == m.max_batch(500)


def _steps(level: int = 20) -> pd.DataFrame:
    b = np.full(30, level)
    return pd.DataFrame({"t_s": np.arange(30.0), "step_s": 0.01, "num_running": b, "num_waiting": 0,
                         "num_prefill_tokens": 0, "num_decode_tokens": b, "kv_blocks_used": 10 * b,
                         "kv_blocks_total": 5000, "num_preempted": 0, "run": "r"})
