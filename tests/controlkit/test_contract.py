from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation, sanitize_limits

SAFE = BatchLimits(8, 512)


def test_observation_kv_usage_is_fraction_of_capacity() -> None:
    assert Observation(0.0, 3, 0, 25, 100).kv_usage == 0.25
    assert Observation(0.0, 3, 0, 25, 0).kv_usage == 0.0


def test_valid_limits_are_clamped_into_the_engine_range_without_fault() -> None:
    out = sanitize_limits(
        BatchLimits(400, 10), last_safe=SAFE, max_seqs_ceiling=256, min_batched_tokens=64,
        max_batched_tokens_ceiling=8192,
    )
    assert out.fault == ""
    assert out.limits == BatchLimits(256, 64)


@pytest.mark.parametrize(
    "raw",
    [None, 3, float("nan"), "256", BatchLimits(-1), BatchLimits(10**9), BatchLimits(float("nan"))],  # type: ignore[arg-type]
)
def test_nonsense_falls_back_to_last_safe_with_a_fault(raw: object) -> None:
    out = sanitize_limits(raw, last_safe=SAFE, max_seqs_ceiling=256)
    assert out.limits == SAFE
    assert out.fault


def test_admission_order_outside_queue_is_a_fault() -> None:
    out = sanitize_limits(BatchLimits(4, None, (0, 5)), last_safe=SAFE, max_seqs_ceiling=16, num_waiting=3)
    assert out.limits == SAFE and "admission_order" in out.fault


@given(
    cap=st.one_of(st.integers(-10, 10**7), st.floats(allow_nan=True, allow_infinity=True)),
    ceiling=st.integers(1, 4096),
)
def test_sanitized_cap_is_always_within_one_and_the_ceiling(cap: float, ceiling: int) -> None:
    out = sanitize_limits(BatchLimits(cap), last_safe=BatchLimits(1), max_seqs_ceiling=ceiling)  # type: ignore[arg-type]
    assert 1 <= out.limits.max_active_seqs <= ceiling
    if isinstance(cap, float) and not math.isfinite(cap):
        assert out.fault
