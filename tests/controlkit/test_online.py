"""The online slope estimator and drift detector (controlkit.online): convergence, boundedness."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.online import DriftDetector, SlopeEstimator, _clip_covariance


def _bounded(est: SlopeEstimator) -> None:
    """The projection box and the covariance clip hold, and every number is finite."""
    assert est.lo[0] <= est.intercept_s <= est.hi[0]
    assert est.lo[1] <= est.slope_s_per_seq <= est.hi[1]
    d = np.diag(1.0 / np.asarray(est.sd0))
    w = np.linalg.eigvalsh(d @ est.covariance @ d)  # in units of the prior variances
    assert np.all(np.isfinite(w)) and w.min() >= -1e-9 and w.max() <= est.p_max * (1 + 1e-9)
    assert math.isfinite(est.r) and est.r >= est.r_floor


@settings(max_examples=40)
@given(
    a=st.floats(0.005, 0.05),
    k=st.floats(1e-5, 1e-3),
    prior_a=st.floats(0.8, 1.2),
    prior_k=st.floats(0.5, 2.0),
    noise=st.floats(0.0, 0.05),
    seed=st.integers(0, 2**16),
)
def test_estimator_converges_under_bounded_noise(a, k, prior_a, prior_k, noise, seed):
    """Exciting batches and noise bounded by 5 % of the mid step: the slope is found within 10 %."""
    rng = np.random.default_rng(seed)
    est = SlopeEstimator(a * prior_a, k * prior_k)
    bound = noise * (a + 128 * k)
    for _ in range(3000):
        n = float(rng.integers(1, 257))
        est.update(n, a + k * n + float(rng.uniform(-bound, bound)))
    _bounded(est)
    assert abs(est.slope_s_per_seq - k) <= 0.1 * k
    # the reported uncertainty is not absurdly small relative to the error actually made
    assert est.slope_sd_s_per_seq > 0


@settings(max_examples=40)
@given(
    data=st.lists(st.tuples(st.integers(0, 512), st.floats(0.0, 1.0, allow_nan=False)), min_size=1, max_size=400),
    constant_batch=st.booleans(),
)
def test_estimator_stays_bounded_on_any_bounded_data(data, constant_batch):
    """Arbitrary bounded steps, with or without excitation: estimate and covariance stay bounded."""
    est = SlopeEstimator(0.01, 1e-4)
    for n, y in data:
        est.update(64.0 if constant_batch else float(n), y)
        _bounded(est)


def test_estimator_soak_short():
    """20k steps of a drifting plant with bounded noise and a regulated (nearly constant) batch.

    The 1M-step version is ``bench/online_soak.py``.
    """
    rng = np.random.default_rng(7)
    est, det = SlopeEstimator(0.01, 1e-4), DriftDetector()
    worst = 0.0
    for t in range(20_000):
        k = 1e-4 * (2.0 if (t // 5000) % 2 else 1.0)  # the slope doubles and halves every 5000 steps
        n = 64.0 + float(rng.integers(-8, 9))
        e = est.update(n, 0.01 + k * n + float(rng.uniform(-5e-4, 5e-4)))
        if det.update(e.innovation_z):
            est.inflate()
        _bounded(est)
        if t % 5000 > 1500:  # tracked within 20 % once settled
            worst = max(worst, abs(est.slope_s_per_seq - k) / k)
    assert worst < 0.2
    assert det.alarms >= 3  # every change was detected


def test_nonfinite_steps_are_ignored():
    est = SlopeEstimator(0.01, 1e-4)
    for y in (math.nan, math.inf, -math.inf):
        est.update(10.0, y)
    est.update(math.nan, 0.02)
    assert est.updates == 0 and est.slope_s_per_seq == 1e-4


@settings(max_examples=60)
@given(st.floats(-10, 10), st.floats(-10, 10), st.floats(-10, 10), st.floats(0.1, 5))
def test_clip_covariance_matches_eigen_clipping(paa, pak, pkk, p_max):
    m = np.array([[paa, pak], [pak, pkk]])
    w, v = np.linalg.eigh(m)
    ref = (v * np.clip(w, 0.0, p_max)) @ v.T
    got = _clip_covariance(paa, pak, pkk, p_max)
    assert np.allclose(ref, [[got[0], got[1]], [got[1], got[2]]], atol=1e-9)


def test_drift_detector_false_alarms_are_rare_and_a_shift_is_caught():
    rng = np.random.default_rng(3)
    det = DriftDetector()
    assert sum(det.update(float(z)) for z in rng.normal(size=20_000)) == 0
    hits = [det.update(float(z) + 3.0) for z in rng.normal(size=100)]
    assert any(hits[:20])
