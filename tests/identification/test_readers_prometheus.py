from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from identification import TelemetryError, read_telemetry
from identification.readers.prometheus import split_scrapes

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "telemetry" / "vllm_scrapes.prom"


def test_scrapes_are_summed_over_label_sets_and_mapped_to_canonical_names() -> None:
    s = read_telemetry(FIXTURE).samples
    assert list(s["time_s"]) == [0.0, 1.5]
    assert list(s["num_requests_running"]) == [5.0, 6.0]
    assert list(s["generation_tokens_total"]) == [150.0, 240.0]
    assert list(s["request_success_total"]) == [7.0, 10.0]
    assert list(s["kv_cache_usage_perc"]) == [0.1875, 0.375]  # averaged, a fraction
    assert list(s["num_gpu_blocks"]) == [2200.0, 2200.0] and list(s["block_size"]) == [16.0, 16.0]
    assert list(s["time_to_first_token_seconds_count"]) == [5.0, 7.0]
    assert not any(c.endswith(("_bucket", "_created")) for c in s.columns)


def test_where_on_a_label_selects_that_label_set() -> None:
    s = read_telemetry(FIXTURE, where=["engine=1"]).samples
    assert list(s["num_requests_running"]) == [2.0, 2.0]
    assert list(s["num_gpu_blocks"]) == [1200.0, 1200.0]
    assert set(s["engine"]) == {"1"}


def test_gzipped_scrape_with_timestamps_and_no_time_comments(tmp_path: Path) -> None:
    text = (
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3 1700000000000\n"
        "# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total 10 1700000000000\n"
        "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 4 1700000002500\n"
        "# TYPE vllm:generation_tokens counter\nvllm:generation_tokens_total 30 1700000002500\n"
    )
    path = tmp_path / "scrape.prom.gz"
    path.write_bytes(gzip.compress(text.encode()))
    s = read_telemetry(path).samples
    assert list(s["time_s"]) == [0.0, 2.5]
    assert list(s["generation_tokens_total"]) == [10.0, 30.0]


def test_several_scrapes_without_any_time_are_an_error(tmp_path: Path) -> None:
    one = "# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running 3\n"
    path = tmp_path / "s.prom"
    path.write_text(one + one)
    with pytest.raises(TelemetryError, match="no time") as info:
        read_telemetry(path)
    assert info.value.line == 1 and info.value.field == "time_s"


def test_single_untimed_scrape_is_at_time_zero(tmp_path: Path) -> None:
    path = tmp_path / "one.txt"
    path.write_text("# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting 2\n")
    assert list(read_telemetry(path).samples["time_s"]) == [0.0]


def test_malformed_exposition_names_the_scrape_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.prom"
    path.write_text("# time_s=0\n# TYPE a gauge\na 1\n# time_s=1\n# TYPE a gauge\na{x=1} 2\n")
    with pytest.raises(TelemetryError, match="Prometheus text") as info:
        read_telemetry(path)
    assert info.value.line == 4


def test_split_scrapes_starts_a_new_scrape_on_a_repeated_type_line() -> None:
    text = "# TYPE a gauge\na 1\n# TYPE b gauge\nb 2\n# TYPE a gauge\na 3\n"
    assert [(start, t) for start, t, _ in split_scrapes(text, "<memory>")] == [(1, None), (5, None)]
