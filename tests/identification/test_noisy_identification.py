"""Identification under measured-style noise: intervals that cover the truth at their nominal rate."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from controlkit.sim.telemetry import BCA_H100_NOISE, MeasurementNoise, add_measurement_noise, sample_metrics
from identification.errors import FitQualityWarning, MemoryUnknownWarning
from identification.latency import LatencyModel
from identification.plant import identify
from identification.records import Telemetry

Z95 = float(stats.norm.ppf(0.975))


def _truth(slopes: list[float], a_s: float = 0.01):
    knots = np.linspace(0.0, 256.0, len(slopes) + 1)
    vals = a_s + np.r_[0.0, np.cumsum(np.diff(knots) * np.asarray(slopes))]
    return lambda b: np.interp(b, knots, vals)


def _run(seed: int, f, n: int = 4000) -> pd.DataFrame:
    """One run whose batch wanders over [1, 256] (a reflected random walk), noiseless step times."""
    rng = np.random.default_rng(seed)
    steps = np.clip(rng.normal(0.1, 3.0, n), -50, 50)
    b = np.empty(n)
    x = 1.0
    for i, d in enumerate(steps):
        x = min(max(x + d, 1.0), 256.0)
        b[i] = round(x)
    y = f(b)
    bi = b.astype(np.int64)
    return pd.DataFrame(
        {
            "t_s": np.cumsum(y), "step_s": y, "num_running": bi, "num_waiting": 0, "num_prefill_tokens": 0,
            "num_decode_tokens": bi, "kv_blocks_used": 20 * bi, "kv_blocks_total": 8000, "num_preempted": 0,
        }
    )


def _fit(frame: pd.DataFrame, **kw) -> LatencyModel:
    obs = {"batch": frame["num_running"].to_numpy(float), "step_s": frame["step_s"].to_numpy(float)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitQualityWarning)
        return LatencyModel(form="affine", **kw).fit(obs)


@settings(max_examples=4)
@given(
    slopes=st.lists(st.floats(1e-4, 4e-4), min_size=1, max_size=3),
    window_cv=st.sampled_from([0.02, BCA_H100_NOISE.window_cv, 0.08]),
    base=st.integers(0, 10_000),
)
def test_local_slope_intervals_cover_the_true_secants_at_the_nominal_rate(slopes, window_cv, base):
    """95 % intervals of the local slopes (model-form error) cover the true secants ~95 % of the time."""
    f = _truth(slopes)
    noise = MeasurementNoise(window_cv=window_cv)
    hits = total = 0
    for seed in range(base, base + 12):
        m = _fit(add_measurement_noise(_run(seed, f), noise, seed=seed))
        ls = m.local_slopes_
        c = np.asarray(ls.centres)
        truth = np.diff(f(c)) / np.diff(c)
        hits += int(np.sum(np.abs(np.asarray(ls.slope_s_per_seq) - truth) <= Z95 * np.asarray(ls.se_s_per_seq)))
        total += truth.size
    assert hits / total >= 0.85, (hits, total)  # nominal 0.95; 0.85 is > 3 sd below it at ~60 secants


def test_parameter_interval_covers_an_affine_truth_despite_correlated_noise():
    """The slope interval (parameter error, widened by sqrt(tau)) covers an affine truth ~95 %."""
    f = _truth([2e-4])
    covered = [
        lo <= 2e-4 <= hi
        for lo, hi in (
            _fit(add_measurement_noise(_run(s, f), BCA_H100_NOISE, seed=s)).slope_interval_parameter_
            for s in range(30)
        )
    ]
    assert np.mean(covered) >= 0.8


def test_curvature_widens_the_interval_and_parameter_error_alone_misses_it():
    f = _truth([3e-4, 2e-4, 1.6e-4])
    frame = add_measurement_noise(_run(2, f), BCA_H100_NOISE, seed=2)
    with_mf, without = _fit(frame), _fit(frame, model_form=False)
    assert with_mf.slope_interval_[0] <= 1.7e-4 and with_mf.slope_interval_[1] >= 2.8e-4
    lo, hi = without.slope_interval_
    assert not (lo <= 1.6e-4 and hi >= 3e-4)  # a certificate over a point: the curvature is missed


def test_noise_keeps_the_schedule_and_adds_pauses():
    frame = _run(0, _truth([2e-4]), n=20_000)
    noisy = add_measurement_noise(frame, BCA_H100_NOISE, seed=1)
    assert (noisy["num_running"] == frame["num_running"]).all()
    assert np.all(np.diff(noisy["t_s"]) > 0)
    long = int(np.sum(noisy["step_s"] > frame["step_s"] * 1.3 + 0.1))
    expected = BCA_H100_NOISE.pause_rate_per_s * float(noisy["t_s"].iloc[-1])
    assert 0.5 * expected <= long <= 1.5 * expected
    ratio = noisy["step_s"] / frame["step_s"]
    body = ratio[ratio < 1.3]
    assert 0.02 < float(body.std()) < 0.07  # the 1-s spread of the BCA logs (4 %), plus per-step noise


def test_sampled_metrics_identify_and_without_capacity_the_memory_is_unknown():
    frame = add_measurement_noise(_run(3, _truth([2e-4]), n=30_000), BCA_H100_NOISE, seed=3)
    with_blocks = sample_metrics(frame, interval_s=1.0, kv_blocks_total=8000)
    model = identify(Telemetry(samples=with_blocks))
    assert model.memory.known_ and model.memory.capacity_blocks_ == 8000
    lo, hi = model.latency.slope_interval_
    assert lo <= 2e-4 <= hi
    with pytest.warns(MemoryUnknownWarning):
        blind = identify(Telemetry(samples=sample_metrics(frame, interval_s=1.0)))
    assert not blind.memory.known_
