from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from identification import TelemetryError, read_telemetry
from identification.readers import SEGMENT_COLUMN, canonical_metric_name
from identification.records import SAMPLE_COLUMNS, SAMPLE_COUNTER_COLUMNS

HEADER = "model,max_num_seqs,time_s,scheduler_total_time,num_requests_running,generation_tokens_total\n"


def write(tmp_path: Path, text: str, name: str = "m.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


BASES = {
    "num_requests_running": "num_requests_running",
    "num_requests_waiting": "num_requests_waiting",
    "kv_cache_usage_perc": "kv_cache_usage_perc",
    "gpu_cache_usage_perc": "kv_cache_usage_perc",
    "num_preemptions": "num_preemptions_total",
    "request_success": "request_success_total",
    "prompt_tokens": "prompt_tokens_total",
    "generation_tokens": "generation_tokens_total",
    "scheduler_total_time": "scheduler_time_total_s",
    "model_forward_total_time": "model_forward_time_total_s",
}


@given(st.sampled_from(sorted(BASES)), st.booleans(), st.booleans())
def test_metric_name_maps_to_canonical_with_or_without_prefix_and_total_suffix(
    base: str, prefix: bool, suffix: bool
) -> None:
    name = ("vllm:" if prefix else "") + base + ("_total" if suffix else "")
    assert canonical_metric_name(name) == BASES[base]
    assert BASES[base] in SAMPLE_COLUMNS


@pytest.mark.parametrize(
    "name", ["vllm:iteration_tokens_total_bucket", "time_to_first_token_seconds_sum", "foo"]
)
def test_unrelated_metric_names_map_to_nothing(name: str) -> None:
    assert canonical_metric_name(name) is None


def test_renamed_columns_and_runs_from_key_columns(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "a,1,0.5,0.0,1,0\na,1,1.5,0.1,1,10\nb,2.0,0.2,0.0,2,0\nb,2.0,1.2,0.2,2,20\n",
    )
    tel = read_telemetry(path)
    s = tel.samples
    assert {"scheduler_time_total_s", "generation_tokens_total", "model", "max_num_seqs"} <= set(s.columns)
    assert list(s["run"].unique()) == ["model=a,max_num_seqs=1", "model=b,max_num_seqs=2"]
    assert tel.sources[0].kind == "samples" and tel.sources[0].rows == 4
    sel = read_telemetry(path, where=["max_num_seqs=2"])
    assert len(sel.samples) == 2 and set(sel.samples["model"]) == {"b"}
    assert len(read_telemetry(path, where={"max_num_seqs": 2.0}).samples) == 2


def test_returning_key_block_gets_numbered_run(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,1,0,0,1,0\nb,1,0,0,1,0\na,1,0,0,1,0\n")
    assert list(read_telemetry(path).samples["run"]) == [
        "model=a,max_num_seqs=1",
        "model=b,max_num_seqs=1",
        "model=a,max_num_seqs=1#2",
    ]


def test_counter_reset_starts_new_segment(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,1,0,0,1,0\na,1,1,0.1,1,50\na,1,2,0.2,1,3\na,1,3,0.3,1,9\n")
    s = read_telemetry(path).samples
    assert list(s[SEGMENT_COLUMN]) == [0, 0, 1, 1]


def test_no_key_columns_run_is_file_stem(tmp_path: Path) -> None:
    path = write(tmp_path, "time_s,vllm:num_requests_running\n0,1\n1,2\n", name="scrape.csv")
    assert set(read_telemetry(path).samples["run"]) == {"scrape"}


@pytest.mark.parametrize(
    ("body", "line", "field", "needle"),
    [
        ("a,1,0,0,1,0\na,1,1,0,x,0\n", 3, "num_requests_running", "unparsable number 'x'"),
        ("a,1,0,0,1,0\na,1,1,0,,0\n", 3, "num_requests_running", "missing value"),
        ("a,1,0,0,1,0\na,1,inf,0,1,0\n", 3, "time_s", "non-finite"),
        ("a,1,0,0,1,0\na,1,1,0,1,-4\n", 3, "generation_tokens_total", "below 0"),
        ("a,1,5,0,1,0\na,1,6,0,1,0\na,1,4,0,1,0\n", 4, "time_s", "does not increase"),
    ],
)
def test_bad_rows_raise_with_file_line_and_field(
    tmp_path: Path, body: str, line: int, field: str, needle: str
) -> None:
    path = write(tmp_path, HEADER + body)
    with pytest.raises(TelemetryError) as info:
        read_telemetry(path)
    err = info.value
    assert err.path == str(path) and err.line == line and err.field == field
    assert needle in str(err) and str(path) in str(err) and f"line {line}" in str(err)


def test_skip_bad_rows_records_every_skipped_row(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,1,0,0,1,0\na,1,1,0,x,0\na,1,2,0,1,-1\na,1,-0.5,0,1,5\na,1,3,0,1,6\n")
    tel = read_telemetry(path, skip_bad_rows=True)
    assert list(tel.samples["time_s"]) == [0.0, 3.0]
    assert [(r.line, r.field) for r in tel.skipped] == [
        (3, "num_requests_running"),
        (4, "generation_tokens_total"),
        (5, "time_s"),
    ]


def test_missing_time_column_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "model,num_requests_running,num_gpu_blocks_x\na,1,2\n")
    with pytest.raises(TelemetryError, match="matches no supported source"):
        read_telemetry(path)


def test_empty_selection_lists_available_values(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "a,1,0,0,1,0\nb,2,0,0,1,0\n")
    with pytest.raises(TelemetryError, match=r"model=zzz matches no rows; available values: \['a', 'b'\]"):
        read_telemetry(path, where=["model=zzz"])
    with pytest.raises(TelemetryError, match="no telemetry has a column 'gpu'"):
        read_telemetry(path, where=["gpu=h100"])


def test_nonexistent_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TelemetryError, match="no such file"):
        read_telemetry(tmp_path / "nope.csv")


# ---- the real BCA data ------------------------------------------------------------------


@pytest.fixture(scope="module")
def bca(shared_data: Path) -> tuple[Path, Path]:
    d = shared_data / "bca_memory_gap"
    return d / "background_engine_metrics.csv.gz", d / "background_runs_index.csv"


def test_bca_background_has_54_runs_and_counters_never_fall_within_a_segment(bca: tuple[Path, Path]) -> None:
    tel = read_telemetry(list(bca))
    s = tel.samples
    assert len(s) == 58088 and s["run"].nunique() == 54
    assert s["num_gpu_blocks"].notna().all() and len(tel.runs) == 54
    assert set(tel.runs["run"]) == set(s["run"])
    for c in SAMPLE_COUNTER_COLUMNS:
        d = s.groupby(["run", SEGMENT_COLUMN])[c].diff().dropna()
        assert (d >= 0).all(), c
    assert (s.groupby("run")["time_s"].diff().dropna() > 0).all()


def test_bca_selection_by_model(bca: tuple[Path, Path]) -> None:
    tel = read_telemetry(list(bca), where=["model=llama-2-7b"])
    assert set(tel.samples["model"]) == {"llama-2-7b"}
    assert tel.samples["run"].nunique() == 12 and len(tel.runs) == 12
    one = read_telemetry(bca[0], where=["model=llama-2-7b", "max_num_seqs=64"])
    assert list(one.samples["run"].unique()) == ["model=llama-2-7b,max_num_seqs=64"]


def test_bca_advisor_counter_resets_become_segments(shared_data: Path) -> None:
    d = shared_data / "bca_memory_gap"
    tel = read_telemetry([d / "advisor_engine_metrics.csv.gz", d / "advisor_runs_index.csv"])
    s = tel.samples
    assert s["run"].nunique() == 151 and "output_len" in s.columns
    raw = pd.read_csv(d / "advisor_engine_metrics.csv.gz")
    drops = raw.groupby(["output_len", "model", "max_num_seqs"])["generation_tokens_total"].diff() < 0
    assert int(s.groupby("run")[SEGMENT_COLUMN].max().sum()) == int(drops.sum()) > 0
    d_gen = s.groupby(["run", SEGMENT_COLUMN])["generation_tokens_total"].diff().dropna()
    assert (d_gen >= 0).all()
    assert np.isfinite(s["num_gpu_blocks"]).all()


BAD_CELLS = {"x": "unparsable number", "": "missing value", "-3": "below 0", "inf": "non-finite"}


@given(
    n=st.integers(min_value=1, max_value=40),
    bad=st.dictionaries(
        st.integers(min_value=0, max_value=39), st.sampled_from(sorted(BAD_CELLS)), max_size=10
    ),
)
def test_skip_bad_rows_skips_exactly_the_bad_rows_and_reports_their_lines(
    n: int, bad: dict[int, str]
) -> None:
    bad = {i: v for i, v in bad.items() if i < n}
    lines = [HEADER.strip()]
    for i in range(n):
        running = bad.get(i, str(i % 5))
        lines.append(f"a,1,{i},{i * 0.1},{running},{10 * i}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.csv"
        path.write_text("\n".join(lines) + "\n")
        tel = read_telemetry(path, skip_bad_rows=True)
        if bad:
            with pytest.raises(TelemetryError) as info:
                read_telemetry(path)
            first = min(bad)
            assert info.value.line == first + 2 and info.value.field == "num_requests_running"
            assert BAD_CELLS[bad[first]] in str(info.value)
    assert len(tel.samples) == n - len(bad)
    assert [r.line for r in tel.skipped] == sorted(i + 2 for i in bad)
    assert all(BAD_CELLS[bad[r.line - 2]] in r.reason for r in tel.skipped)
    assert np.isfinite(tel.samples["num_requests_running"]).all()
