"""LatencyModel: recovery, interval coverage, metamorphic unit scaling, knee, robustness, bad input."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identification import ExtrapolationWarning, FitQualityWarning, NotFittedError, TelemetryError
from identification.derive import observations_from_steps
from identification.fitdata import FitData, split_groups
from identification.latency import LatencyModel
from identification.records import Telemetry
from identification.robust import ArgumentError

Factory = Callable[..., pd.DataFrame]


def test_affine_fit_recovers_slope_intercept_and_costs(step_records: Factory) -> None:
    steps = step_records(3000, 2e-4, 3e-4, seed=1, context_cost=1e-8, prefill_cost=2e-5)
    m = LatencyModel(form="affine").fit(Telemetry(steps=steps))
    assert m.form_ == "affine"
    assert m.coef_["c_seq_s"] == pytest.approx(2e-4, rel=0.05)
    assert m.coef_["c_ctx_s"] == pytest.approx(1e-8, rel=0.1)
    assert m.coef_["c_prefill_s"] == pytest.approx(2e-5, rel=0.05)
    assert m.intercept_s_ == pytest.approx(0.01, abs=3e-4)
    true_slope = 2e-4 + 1e-8 * m.typical_context_tokens_
    lo, hi = m.slope_interval_
    assert lo <= true_slope <= hi
    assert m.slope_ == pytest.approx(true_slope, rel=0.02)
    assert m.dropped_terms_ == {}
    assert m.batch_range_ == (1.0, 128.0)
    assert m.r2_ > 0.9 and m.n_samples_fit_ == 3000


def test_prediction_is_vectorised_and_uses_typical_context(step_records: Factory) -> None:
    m = LatencyModel(form="affine").fit(Telemetry(steps=step_records(500, 1e-4, 1e-4, seed=2)))
    out = m.predict_step_s(np.array([1.0, 10.0, 100.0]))
    assert isinstance(out, np.ndarray) and out.shape == (3,)
    assert isinstance(m.predict_step_s(10), float)
    assert m.predict_step_s(10) == pytest.approx(out[1])
    grid = m.predict_step_s(np.array([[5.0], [50.0]]), context_tokens=np.array([100.0, 1000.0]))
    assert grid.shape == (2, 2)
    assert np.all(np.diff(out) > 0)



def test_slope_interval_covers_the_true_slope_at_about_its_nominal_rate(step_records: Factory) -> None:
    hits = 0
    n_seeds = 100
    for seed in range(n_seeds):
        steps = step_records(150, 3e-4, 2e-3, seed=seed, batch_max=64)
        steps = steps.assign(num_context_tokens=-1, num_prefill_tokens=0, kv_blocks_used=0)
        m = LatencyModel(form="affine", holdout_fraction=0.0).fit(Telemetry(steps=steps))
        # the parameter interval has the nominal rate; slope_interval_ adds the model-form error
        # (local slopes between batch bins), so on an affine truth it is conservative
        lo, hi = m.slope_interval_parameter_
        hits += lo <= 3e-4 <= hi
        assert m.slope_interval_[0] <= lo and hi <= m.slope_interval_[1]
    assert 0.85 <= hits / n_seeds <= 0.99, hits


@settings(max_examples=12)
@given(scale=st.sampled_from([1e-3, 0.5, 2.0, 1e3]), seed=st.integers(0, 1000))
def test_scaling_latency_units_scales_coefficients_and_keeps_form_and_range(
    step_records: Factory, scale: float, seed: int
) -> None:
    obs = observations_from_steps(step_records(600, 2e-4, 4e-4, seed, knee=40, slope_above=6e-4))
    a = LatencyModel().fit(obs)
    b = LatencyModel().fit(obs.scale_time(scale))
    assert b.form_ == a.form_
    assert b.batch_range_ == a.batch_range_
    assert b.dropped_terms_.keys() == a.dropped_terms_.keys()
    for name, value in a.coef_.items():
        assert b.coef_[name] == pytest.approx(value * scale, rel=1e-4, abs=1e-12 * scale)
    assert b.slope_ == pytest.approx(a.slope_ * scale, rel=1e-4)
    assert np.allclose(b.slope_interval_, np.array(a.slope_interval_) * scale, rtol=1e-3)
    assert b.mape_holdout_ == pytest.approx(a.mape_holdout_, rel=1e-4)
    if a.knee_batch_ is not None:
        assert b.knee_batch_ == pytest.approx(a.knee_batch_, rel=1e-3)


def test_knee_is_recovered_and_chosen_by_held_out_error(step_records: Factory) -> None:
    steps = step_records(4000, 5e-5, 2e-4, seed=3, knee=48, slope_above=4e-4, batch_max=160)
    m = LatencyModel().fit(Telemetry(steps=steps))
    assert m.form_ == "knee"
    assert m.knee_batch_ == pytest.approx(48, abs=3)
    assert m.coef_["c_seq_s"] == pytest.approx(5e-5, rel=0.15)
    assert m.coef_["c_seq_above_s"] == pytest.approx(4e-4, rel=0.05)
    lo, hi = m.slope_interval_
    assert lo <= 5e-5 and hi >= 4e-4  # the interval spans both segments' slopes
    assert m.form_scores_["knee"] < m.form_scores_["affine"]


def test_affine_data_keeps_the_affine_form(step_records: Factory) -> None:
    m = LatencyModel().fit(Telemetry(steps=step_records(2000, 2e-4, 3e-4, seed=4)))
    assert m.form_ == "affine"


def test_huber_loss_resists_outlier_steps(step_records: Factory) -> None:
    steps = step_records(2000, 2e-4, 2e-4, seed=5)
    rng = np.random.default_rng(0)
    bad = rng.choice(len(steps), 100, replace=False)
    steps.loc[bad, "step_s"] *= 10
    robust = LatencyModel(form="affine").fit(Telemetry(steps=steps))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitQualityWarning)  # the non-robust fit is doubtful, as it should be
        plain = LatencyModel(form="affine", loss="linear").fit(Telemetry(steps=steps))
    assert robust.coef_["c_seq_s"] == pytest.approx(2e-4, rel=0.05)
    assert abs(plain.coef_["c_seq_s"] - 2e-4) > abs(robust.coef_["c_seq_s"] - 2e-4)


def test_terms_without_evidence_are_dropped_and_said_so(step_records: Factory) -> None:
    steps = step_records(500, 2e-4, 2e-4, seed=6).assign(num_prefill_tokens=0, num_context_tokens=-1,
                                                         kv_blocks_used=0)
    m = LatencyModel().fit(Telemetry(steps=steps))
    assert set(m.dropped_terms_) == {"c_prefill_s", "c_ctx_s"}
    assert m.coef_["c_prefill_s"] == 0.0 and m.coef_interval_["c_ctx_s"] == (0.0, 0.0)


def test_predicting_outside_the_batch_range_warns(step_records: Factory) -> None:
    m = LatencyModel(form="affine").fit(Telemetry(steps=step_records(500, 2e-4, 2e-4, seed=7, batch_max=64)))
    with pytest.warns(ExtrapolationWarning, match="outside the fitted range"):
        m.predict_step_s(200)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m.predict_step_s(np.arange(1, 65))


def test_a_flat_noisy_plant_warns_fit_quality(step_records: Factory) -> None:
    steps = step_records(300, 0.0, 2e-3, seed=8)
    with pytest.warns(FitQualityWarning, match="doubtful latency fit"):
        LatencyModel(form="affine").fit(Telemetry(steps=steps))


def test_bootstrap_intervals_agree_with_the_sandwich(step_records: Factory) -> None:
    obs = observations_from_steps(step_records(800, 2e-4, 4e-4, seed=9))
    cov = LatencyModel(form="affine").fit(obs)
    boot = LatencyModel(form="affine", n_bootstrap=150).fit(obs)
    assert "bootstrap" in boot.interval_method_
    w_cov = cov.slope_interval_[1] - cov.slope_interval_[0]
    w_boot = boot.slope_interval_[1] - boot.slope_interval_[0]
    assert 0.6 < w_boot / w_cov < 1.6


def test_group_aware_split_holds_out_whole_runs(step_records: Factory) -> None:
    obs = observations_from_steps(step_records(1200, 2e-4, 2e-4, seed=10, runs=8))
    fd = FitData.build(obs, min_samples=8)
    train, hold = split_groups(fd, 0.25, np.random.default_rng(0))
    assert hold.size > 0
    assert not set(fd.group[train]) & set(fd.group[hold])


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"batch": [], "step_s": []}, "no usable step observations"),
        ({"batch": [1.0, 2.0, 3.0], "step_s": [0.01, 0.02, 0.03]}, "at least 8"),
        ({"batch": np.arange(1.0, 21.0), "step_s": np.r_[np.full(19, 0.01), np.nan]}, "non-finite step_s"),
        ({"batch": np.arange(1.0, 21.0), "step_s": np.r_[np.full(19, 0.01), -0.01]}, "negative step_s"),
        ({"batch": np.arange(1.0, 21.0)}, "missing array 'step_s'"),
        ({"batch": np.arange(1.0, 21.0), "step_s": np.ones(5)}, "expected 20"),
    ],
)
def test_bad_input_is_refused_with_a_telemetry_error(data: dict[str, object], match: str) -> None:
    with pytest.raises(TelemetryError, match=match):
        LatencyModel().fit(data)


def test_empty_telemetry_is_refused() -> None:
    with pytest.raises(TelemetryError, match="no step records and no sampled metrics"):
        LatencyModel().fit(Telemetry())


def test_knee_needs_distinct_batch_sizes() -> None:
    data = {"batch": np.tile([1.0, 2.0, 3.0], 10), "step_s": np.tile([0.01, 0.011, 0.012], 10)}
    with pytest.raises(TelemetryError, match="at least 5 distinct batch sizes"):
        LatencyModel(form="knee").fit(data)


def test_hyperparameters_are_checked_against_their_declared_bounds() -> None:
    with pytest.raises(ArgumentError, match=r"confidence=1\.5 is outside"):
        LatencyModel(confidence=1.5)
    with pytest.raises(ArgumentError, match="form='cubic' is not one of"):
        LatencyModel(form="cubic")
    with pytest.raises(NotFittedError):
        LatencyModel().predict_step_s(1)


def test_serialised_model_predicts_the_same(step_records: Factory) -> None:
    m = LatencyModel().fit(Telemetry(steps=step_records(600, 5e-5, 2e-4, seed=11, knee=30, slope_above=3e-4)))
    again = LatencyModel.from_dict(m.to_dict())
    b = np.arange(1.0, 129.0)
    assert np.array_equal(again.predict_step_s(b), m.predict_step_s(b))
    assert again.slope_interval_ == m.slope_interval_ and again.form_ == m.form_


def test_cluster_robust_interval_covers_when_each_run_is_one_batch_level_with_its_own_offset() -> None:
    levels = np.array([1, 2, 4, 8, 16, 32, 64, 96, 128, 192, 256, 384], dtype=float)
    hits = 0
    n_seeds = 100
    for seed in range(n_seeds):
        rng = np.random.default_rng(seed)
        offsets = rng.normal(0.0, 1e-3, levels.size)  # run-to-run variation, as between BCA runs
        batch = np.repeat(levels, 30)
        group = np.repeat(np.arange(levels.size), 30)
        step = 0.01 + 2e-4 * batch + offsets[group] + rng.normal(0.0, 5e-4, batch.size)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitQualityWarning)
            m = LatencyModel(form="affine").fit({"batch": batch, "step_s": step, "group": group})
        assert "cluster-robust" in m.interval_method_
        # parameter error has the nominal rate (slope_interval_ adds the model-form error on top)
        hits += m.slope_interval_parameter_[0] <= 2e-4 <= m.slope_interval_parameter_[1]
    assert 0.85 <= hits / n_seeds <= 0.995, hits
