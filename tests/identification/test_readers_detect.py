from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from identification import TelemetryError, read_telemetry

HEADER = "model,max_num_seqs,time_s,vllm:generation_tokens_total\n"


def test_unknown_format_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.bin"
    path.write_bytes(b"hello world\n")
    with pytest.raises(TelemetryError, match="unknown telemetry format") as info:
        read_telemetry(path)
    assert info.value.path == str(path)


def test_unknown_csv_header_is_an_error_naming_the_header(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(TelemetryError, match=r"header \['a', 'b'\] matches no supported source") as info:
        read_telemetry(path)
    assert info.value.line == 1


def test_directory_and_empty_list_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TelemetryError, match="not a regular file"):
        read_telemetry(tmp_path)
    with pytest.raises(TelemetryError, match="no telemetry files"):
        read_telemetry([])


def test_empty_and_corrupt_gzip_files(tmp_path: Path) -> None:
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(TelemetryError, match="not a readable CSV"):
        read_telemetry(empty)
    corrupt = tmp_path / "c.csv.gz"
    corrupt.write_bytes(gzip.compress(b"time_s,num_requests_running\n0,1\n")[:20])
    with pytest.raises(TelemetryError, match="cannot read"):
        read_telemetry(corrupt)


def test_gzip_is_transparent_and_bad_where_clause_is_named(tmp_path: Path) -> None:
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "a,1,0,0\na,1,1,5\n").encode()))
    assert len(read_telemetry(path, where="model=a").samples) == 2
    with pytest.raises(TelemetryError, match="expected COLUMN=VALUE"):
        read_telemetry(path, where=["model"])


def test_run_index_joins_blocks_by_shared_keys(tmp_path: Path) -> None:
    metrics = tmp_path / "m.csv"
    metrics.write_text(HEADER + "a,1,0,0\na,1,1,5\nb,1,0,0\n")
    index = tmp_path / "idx.csv"
    index.write_text(
        "model,max_num_seqs,num_gpu_blocks,block_size,median_tpot_ms\na,1,100,16,20.0\nb,1,,16,\n"
    )
    tel = read_telemetry([metrics, index])
    assert list(tel.samples["num_gpu_blocks"].fillna(-1)) == [100, 100, -1]
    assert list(tel.runs["run"]) == ["model=a,max_num_seqs=1", "model=b,max_num_seqs=1"]
    assert tel.runs["median_tpot_ms"].iloc[0] == 20.0
    dup = tmp_path / "dup.csv"
    dup.write_text("model,max_num_seqs,num_gpu_blocks\na,1,100\na,1.0,200\n")
    with pytest.raises(TelemetryError, match="duplicate run") as info:
        read_telemetry([metrics, dup])
    assert info.value.line == 3


def test_two_files_with_the_same_run_names_are_kept_apart(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(HEADER + "x,1,0,0\n")
    b.write_text(HEADER + "x,1,0,0\n")
    assert list(read_telemetry([a, b]).samples["run"]) == [
        "model=x,max_num_seqs=1",
        "model=x,max_num_seqs=1@b",
    ]


def test_progress_bar_goes_to_stderr(shared_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_data / "bca_memory_gap" / "advisor_engine_metrics.csv.gz"
    tel = read_telemetry(path, progress=True, where=["model=opt-1.3b", "output_len=130", "max_num_seqs=2"])
    assert tel.samples["run"].nunique() == 1
    assert capsys.readouterr().out == ""
