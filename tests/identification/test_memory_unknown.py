"""Latency-only telemetry: identify marks the memory unknown (loudly); design names the claim it cannot make."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from controlkit.design import design_mpc, design_optimal
from controlkit.plant import DesignPlant
from identification.errors import MemoryUnknownWarning
from identification.plant import identify, load_model
from identification.records import Telemetry
from identification.robust import ArgumentError


def _latency_only_steps(n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    b = rng.integers(1, 128, n)
    return pd.DataFrame(
        {
            "t_s": np.arange(n) * 0.03,
            "step_s": 0.01 + 2e-4 * b + rng.normal(0, 2e-4, n),
            "num_running": b,
            "num_waiting": 0,
            "num_prefill_tokens": 0,
            "num_decode_tokens": b,
            "kv_blocks_used": 0,  # the engine exported no KV numbers
            "kv_blocks_total": 0,
            "num_preempted": 0,
            "run": "r",
        }
    )


def test_identify_without_capacity_gives_a_latency_model_and_a_loud_warning(tmp_path):
    with pytest.warns(MemoryUnknownWarning, match="KV MEMORY UNKNOWN.*num_gpu_blocks"):
        model = identify(Telemetry(steps=_latency_only_steps()))
    assert abs(model.latency.slope_ / 2e-4 - 1) < 0.05
    assert model.memory.known_ is False and "KV-cache capacity" in model.memory.unknown_reason_
    with pytest.raises(ArgumentError, match="memory is unknown"):
        model.memory.max_batch(500)
    path = tmp_path / "model.json"
    model.save(path)
    again = load_model(path)
    assert again.memory.known_ is False and again.memory.capacity_blocks_ == 0


def test_design_says_which_claim_it_cannot_make(tmp_path):
    with pytest.warns(MemoryUnknownWarning):
        model = identify(Telemetry(steps=_latency_only_steps()))
    plant = DesignPlant.from_model(model)
    assert not plant.memory_known and plant.b_max == 127  # the top of the latency model's range
    for d in (design_optimal(plant, 0.03), design_mpc(plant, 0.03)):
        names = {c.name for c in d.certificate.claims}
        assert "memory_safety" not in names
        assert "memory_safety" in d.claims_not_made and "unknown" in d.claims_not_made["memory_safety"]
        pf = d.to_policy_file()  # certified on the claims it can make
        assert "memory_safety" in pf.certificate["assumptions"]["claims_not_made"]
    # with a known capacity nothing is dropped
    known = plant.replace(kv_capacity_blocks=8000)
    assert "memory_safety" in {c.name for c in design_optimal(known, 0.03).certificate.claims}


def test_memory_known_model_files_without_the_field_still_load():
    from identification.memory import MemoryModel

    steps = _latency_only_steps().assign(kv_blocks_used=lambda f: 20 * f.num_running, kv_blocks_total=8000)
    m = MemoryModel().fit(Telemetry(steps=steps))
    d = m.to_dict()
    d.pop("known")
    d.pop("unknown_reason")
    assert MemoryModel.from_dict(d).known_ is True
