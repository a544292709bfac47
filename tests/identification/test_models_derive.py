"""Step quantities derived from sampled counters: the formula, run/reset boundaries, cross-checks."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identification import TelemetryError
from identification.derive import cross_check, derive_observations, observations_from_samples
from identification.records import Telemetry

Factory = Callable[..., pd.DataFrame]


def _run(name: str, step_s: float, running: int, seconds: int, *, t0: float = 0.0) -> pd.DataFrame:
    """Counters of a steady decode run: `running` sequences, one token each per step."""
    t = t0 + np.arange(seconds + 1, dtype=float)
    steps = t / step_s
    return pd.DataFrame({
        "run": name, "time_s": t, "num_requests_running": float(running),
        "generation_tokens_total": steps * running, "prompt_tokens_total": steps * 0.5,
        "model_forward_time_total_s": 0.9 * t, "scheduler_time_total_s": 0.02 * t,
        "kv_cache_usage_perc": running * 20 / 1000.0, "num_gpu_blocks": 1000.0,
        "num_preemptions_total": 0.0,
    })


@settings(max_examples=25)
@given(step_ms=st.floats(1.0, 200.0), running=st.integers(1, 512))
def test_decode_step_time_is_dt_times_running_over_generated_tokens(step_ms: float, running: int) -> None:
    obs = observations_from_samples(_run("a", step_ms / 1e3, running, 5))
    assert len(obs) == 5
    assert np.allclose(obs.step_s, step_ms / 1e3)
    assert np.allclose(obs.batch, running)
    assert np.allclose(obs.prefill_tokens, 0.5)
    assert np.allclose(obs.kv_blocks_used, running * 20)
    assert np.allclose(obs.context_tokens, 20 * 16 - 8)


def test_counters_are_never_differenced_across_runs() -> None:
    # two runs back to back: time restarts and counters start again from 0
    frame = pd.concat([_run("a", 0.01, 4, 10), _run("b", 0.02, 8, 10)], ignore_index=True)
    obs = observations_from_samples(frame)
    assert len(obs) == 20
    assert set(obs.group_names) == {"a", "b"}
    by_run = {obs.group_names[g]: obs.step_s[obs.group == g] for g in np.unique(obs.group)}
    assert np.allclose(by_run["a"], 0.01) and np.allclose(by_run["b"], 0.02)


def test_interleaved_rows_of_two_runs_are_grouped_not_mixed() -> None:
    frame = pd.concat([_run("a", 0.01, 4, 10), _run("b", 0.02, 8, 10)]).sort_values("time_s", kind="stable")
    obs = observations_from_samples(frame.reset_index(drop=True))
    assert len(obs) == 20 and np.all((np.isclose(obs.step_s, 0.01)) | np.isclose(obs.step_s, 0.02))


def test_a_counter_reset_interval_is_dropped() -> None:
    frame = _run("a", 0.01, 4, 10)
    at_reset = float(frame["generation_tokens_total"].iloc[6])
    frame.loc[6:, "generation_tokens_total"] = frame["generation_tokens_total"].iloc[6:] - at_reset  # restart
    obs = observations_from_samples(frame)
    assert len(obs) == 9
    assert np.allclose(obs.step_s, 0.01)


def test_unsteady_intervals_and_idle_engine_are_left_out() -> None:
    frame = _run("a", 0.01, 100, 6)
    frame.loc[3, "num_requests_running"] = 50.0  # ramp: intervals 2-3 and 3-4 are not steady
    frame.loc[6, "num_requests_running"] = 0.0
    obs = observations_from_samples(frame)
    assert len(obs) == 3


def test_forward_counter_cross_check_reads_the_forward_share() -> None:
    checks = cross_check(observations_from_samples(_run("a", 0.01, 4, 10)))
    assert checks["forward_over_wall"] == pytest.approx(0.9)
    assert checks["scheduler_over_wall"] == pytest.approx(0.02)


def test_missing_required_counter_is_named() -> None:
    frame = _run("a", 0.01, 4, 3).drop(columns="generation_tokens_total")
    with pytest.raises(TelemetryError, match="generation_tokens_total"):
        observations_from_samples(frame)


def test_nan_in_a_required_column_is_refused_with_its_row() -> None:
    frame = _run("a", 0.01, 4, 3)
    frame.loc[2, "num_requests_running"] = np.nan
    with pytest.raises(TelemetryError, match="num_requests_running") as err:
        observations_from_samples(frame)
    assert err.value.line == 4


def test_step_records_are_preferred_over_samples_and_empty_is_refused(step_records: Factory) -> None:
    tel = Telemetry(steps=step_records(50, 1e-4, 1e-5, seed=0), samples=_run("a", 0.01, 4, 3))
    assert derive_observations(tel).source == "steps"
    assert derive_observations(Telemetry(samples=_run("a", 0.01, 4, 3))).source == "samples"
    with pytest.raises(TelemetryError, match="no step records and no sampled metrics"):
        derive_observations(Telemetry())
