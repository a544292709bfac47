from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from identification import StepRecord, TelemetryError, read_telemetry
from identification.records import STEP_COLUMNS, STEP_OPTIONAL_COLUMNS

counts = st.integers(min_value=0, max_value=10_000)
durations = st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False)


@st.composite
def step_logs(draw: st.DrawFn) -> list[StepRecord]:
    n = draw(st.integers(min_value=1, max_value=30))
    t = 0.0
    out = []
    for _ in range(n):
        step = draw(durations)
        out.append(
            StepRecord(
                t,
                step,
                draw(counts),
                draw(counts),
                draw(counts),
                draw(counts),
                draw(counts),
                draw(counts),
                draw(counts),
                draw(st.integers(-1, 5000)),
            )
        )
        t += step + draw(durations)
    return out


def write_steps(records: list[StepRecord], path: Path) -> None:
    rows = [dataclasses.asdict(r) for r in records]
    if path.suffix == ".jsonl":
        lines = [json.dumps({"schema": "controlkit.steps/1", "engine": "sim"})]
        lines += [json.dumps(r) for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".csv":
        pd.DataFrame(rows).to_csv(path, index=False)
    else:
        pd.DataFrame(rows).to_parquet(path)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
@settings(max_examples=20)
@given(records=step_logs())
def test_step_records_round_trip_through_every_format(suffix: str, records: list[StepRecord]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"hook_log{suffix}"
        write_steps(records, path)
        tel = read_telemetry(path)
    cols = [*STEP_COLUMNS, *STEP_OPTIONAL_COLUMNS]
    got = tel.steps[cols].reset_index(drop=True)
    want = pd.DataFrame([dataclasses.asdict(r) for r in records])[cols]
    pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-12)
    assert set(tel.steps["run"]) == {"hook_log"}
    assert tel.sources[0].kind == "steps" and tel.sources[0].rows == len(records)
    if suffix == ".jsonl":
        assert tel.meta["schema"] == "controlkit.steps/1" and tel.meta["engine"] == "sim"


def row(**over: object) -> dict[str, object]:
    base: dict[str, object] = dict.fromkeys(STEP_COLUMNS, 1)
    base["t_s"] = 0.0
    base.update(over)
    return base


def test_jsonl_bad_json_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(row()) + "\n{not json\n")
    with pytest.raises(TelemetryError, match="not valid JSON") as info:
        read_telemetry(path)
    assert info.value.line == 2


@pytest.mark.parametrize(
    ("bad", "field", "needle"),
    [
        ({"num_running": -1}, "num_running", "below 0"),
        ({"step_s": "fast"}, "step_s", "unparsable number"),
        ({"num_waiting": 2.5}, "num_waiting", "not a whole number"),
        ({"t_s": -5.0}, "t_s", "goes backwards"),
    ],
)
def test_bad_step_is_reported_with_line_and_field(
    tmp_path: Path, bad: dict[str, object], field: str, needle: str
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text(
        "\n".join(json.dumps(r) for r in [row(t_s=0.0), row(**{"t_s": 1.0, **bad}), row(t_s=2.0)]) + "\n"
    )
    with pytest.raises(TelemetryError, match=needle) as info:
        read_telemetry(path)
    assert (info.value.line, info.value.field) == (2, field)
    tel = read_telemetry(path, skip_bad_rows=True)
    assert len(tel.steps) == 2 and [(r.line, r.field) for r in tel.skipped] == [(2, field)]


def test_missing_step_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    frame = pd.DataFrame([row()]).drop(columns=["kv_blocks_total"])
    frame.to_csv(path, index=False)
    with pytest.raises(TelemetryError, match="missing required column") as info:
        read_telemetry(path)
    assert info.value.field == "kv_blocks_total" and info.value.line == 1


def test_run_column_splits_runs_and_where_selects_one(tmp_path: Path) -> None:
    path = tmp_path / "s.csv"
    rows = [row(t_s=float(i), run="a" if i < 2 else "b", policy="pid") for i in range(4)]
    rows.append(row(t_s=1.5, run="a", policy="pid"))  # later in the file, but in run a
    pd.DataFrame(rows).to_csv(path, index=False)
    tel = read_telemetry(path, where=["run=b"])
    assert list(tel.steps["t_s"]) == [2.0, 3.0] and set(tel.steps["policy"]) == {"pid"}


def test_rotated_logs_form_one_run_in_time_order(tmp_path: Path) -> None:
    old, new = tmp_path / "steps.jsonl.1", tmp_path / "steps.jsonl"
    old.write_text("\n".join(json.dumps(row(t_s=t)) for t in (0.0, 1.0)) + "\n")
    new.write_text("\n".join(json.dumps(row(t_s=t)) for t in (2.0, 3.0)) + "\n")
    tel = read_telemetry([new, old])
    assert list(tel.steps["t_s"]) == [0.0, 1.0, 2.0, 3.0] and set(tel.steps["run"]) == {"steps"}
