"""WorkloadModel: length distributions, arrival rate and burstiness, sampling, counters fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from identification import TelemetryError, WorkloadModel
from identification.records import Telemetry


def _requests(n: int, rate: float, shape: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    return pd.DataFrame({"arrival_s": np.cumsum(gaps), "prompt_tokens": rng.integers(10, 2000, n),
                         "output_tokens": rng.geometric(1 / 200, n), "run": "r"})


@pytest.mark.parametrize(("shape", "cv2"), [(1.0, 1.0), (0.25, 4.0), (4.0, 0.25)])
def test_arrival_rate_and_burstiness_are_recovered(shape: float, cv2: float) -> None:
    w = WorkloadModel().fit(Telemetry(requests=_requests(40_000, 5.0, shape, seed=1)))
    assert w.arrival_rate_per_s_ == pytest.approx(5.0, rel=0.03)
    assert w.interarrival_cv2_ == pytest.approx(cv2, rel=0.1)
    assert w.gamma_shape_ == pytest.approx(shape, rel=0.1)


def test_length_distribution_is_sampled_from_its_quantiles() -> None:
    req = _requests(20_000, 1.0, 1.0, seed=2)
    w = WorkloadModel().fit(Telemetry(requests=req))
    p, o = w.sample(20_000, np.random.default_rng(0))
    assert p.dtype == np.int64 and p.shape == o.shape == (20_000,)
    assert np.mean(p) == pytest.approx(req["prompt_tokens"].mean(), rel=0.03)
    assert np.median(o) == pytest.approx(req["output_tokens"].median(), rel=0.05)
    assert p.min() >= 1 and o.min() >= 1


def test_means_come_from_counters_when_there_are_no_requests() -> None:
    t = np.arange(5.0)
    run = pd.DataFrame({"time_s": t, "request_success_total": t * 2, "prompt_tokens_total": t * 200,
                        "generation_tokens_total": t * 600, "num_requests_running": 4.0})
    two = pd.concat([run.assign(run="a"), run.assign(run="b")], ignore_index=True)
    w = WorkloadModel().fit(Telemetry(samples=two))
    assert (w.prompt_tokens_mean_, w.output_tokens_mean_) == (100.0, 300.0)
    assert w.arrival_rate_per_s_ is None and w.length_model_.startswith("geometric")
    p, _ = w.sample(50_000, np.random.default_rng(0))
    assert np.mean(p) == pytest.approx(100.0, rel=0.05)


def test_bad_lengths_and_missing_sources_are_refused() -> None:
    req = _requests(10, 1.0, 1.0, seed=3)
    req.loc[4, "output_tokens"] = -3
    with pytest.raises(TelemetryError, match="output_tokens"):
        WorkloadModel().fit(Telemetry(requests=req))
    with pytest.raises(TelemetryError, match="no request records"):
        WorkloadModel().fit(Telemetry())


def test_round_trip() -> None:
    w = WorkloadModel().fit(Telemetry(requests=_requests(500, 2.0, 1.0, seed=4)))
    assert WorkloadModel.from_dict(w.to_dict()).to_dict() == w.to_dict()
