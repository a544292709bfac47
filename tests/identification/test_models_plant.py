"""identify / PlantModel / load_model: end to end, the model file, and the real-data validation."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identification import PlantModel, TelemetryError, identify, load_model
from identification.records import Telemetry
from identification.report import plot_fit, summary_table

Factory = Callable[..., pd.DataFrame]
REPO = Path(__file__).resolve().parents[2]


def _plant(step_records: Factory) -> PlantModel:
    steps = step_records(2000, 2e-4, 3e-4, seed=0, runs=6, kv_blocks_total=8000)
    return identify(Telemetry(steps=steps), seed=3)


def test_identify_fits_all_three_parts_and_records_provenance(step_records: Factory) -> None:
    plant = _plant(step_records)
    assert plant.latency.form_ == "affine"
    assert plant.memory.capacity_blocks_ == 8000
    assert plant.workload is None  # step records say nothing about requests
    assert plant.meta["rows"]["steps"] == 2000 and plant.meta["n_runs"] == 6
    assert plant.latency.mape_holdout_ < 0.1


def test_save_and_load_round_trip_predicts_the_same(step_records: Factory, tmp_path: Path) -> None:
    plant = _plant(step_records)
    path = tmp_path / "model.json"
    plant.save(path)
    assert json.loads(path.read_text())["schema"] == "controlkit.model/1"
    again = load_model(path)
    b = np.arange(1.0, 129.0)
    assert np.array_equal(again.latency.predict_step_s(b), plant.latency.predict_step_s(b))
    assert again.latency.slope_interval_ == plant.latency.slope_interval_
    assert again.memory.max_batch(700) == plant.memory.max_batch(700)
    assert again.to_dict() == json.loads(plant.to_json())


@pytest.mark.parametrize(
    ("content", "match", "field"),
    [
        ("{not json", "not JSON", None),
        ('{"schema": "controlkit.policy/1"}', "expected 'controlkit.model/1'", "schema"),
        ('{"schema": "controlkit.model/1", "memory": {}, "workload": null}', "missing section 'latency'",
         "latency"),
        ("[1, 2]", "JSON object", None),
    ],
)
def test_a_bad_model_file_names_the_file_and_field(tmp_path: Path, content: str, match: str,
                                                   field: str | None) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TelemetryError, match=match) as err:
        load_model(path)
    assert err.value.path == str(path) and err.value.field == field


def test_a_missing_field_inside_a_section_is_named(step_records: Factory, tmp_path: Path) -> None:
    d = _plant(step_records).to_dict()
    del d["memory"]["capacity_blocks"]
    path = tmp_path / "m.json"
    path.write_text(json.dumps(d))
    with pytest.raises(TelemetryError, match="capacity_blocks") as err:
        load_model(path)
    assert err.value.field == "memory.capacity_blocks"
    with pytest.raises(TelemetryError, match="cannot read"):
        load_model(tmp_path / "absent.json")


def test_report_table_and_plot(step_records: Factory, tmp_path: Path) -> None:
    from identification.derive import derive_observations

    steps = step_records(1500, 5e-5, 2e-4, seed=1, knee=40, slope_above=4e-4)
    plant = identify(Telemetry(steps=steps))
    table = summary_table(plant)
    assert table.row_count >= 12
    plot_fit(plant, derive_observations(Telemetry(steps=steps)), tmp_path / "fit.png")
    assert (tmp_path / "fit.png").stat().st_size > 10_000


def test_bca_held_out_step_time_and_preemption_onset(shared_data: Path) -> None:
    """The must-show on the real H100 logs: held-out MAPE <= 5% and onset within one grid step."""
    spec = importlib.util.spec_from_file_location("validate_bca", REPO / "bench" / "validate_bca.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("validate_bca", module)  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    for model in module.MODELS:
        r = module.validate_model(shared_data / "bca_memory_gap", model)
        assert r.mape_wall <= 0.05, (model, r)
        assert r.mape_tpot <= 0.05, (model, r)
        assert r.onset_ok, (model, r.onset_pred, r.onset_obs)
        assert r.slope_interval_ms[0] <= r.slope_ms <= r.slope_interval_ms[1]
