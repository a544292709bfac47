"""``controlkit scrape``: a local HTTP server serves real vLLM exposition text.

``tests/fixtures/vllm_metrics.txt`` is the ``vllm:`` and ``controlkit_`` part of
``prometheus_client.generate_latest()`` after a real vLLM 0.33.0 ``LLM`` engine (fake
executor, 20 prompts x 16 tokens, ``tests/policies/vllm/fake_engine.py``) finished; the
vLLM engine test checks that a fresh run still exposes the same metric names.
"""

from __future__ import annotations

import csv
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.app.cli import main
from controlkit.scrape import DEFAULT_METRICS, parse_exposition, scrape_to_csv
from identification import read_telemetry
from identification.errors import TelemetryError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "vllm_metrics.txt"
GEN = re.compile(r'^(vllm:generation_tokens_total\{[^}]*\}) 320\.0$', re.M)


class _Server:
    """Serves the fixture; the k-th GET reports 320 * k generated tokens; can be failed."""

    def __init__(self) -> None:
        self.text = FIXTURE.read_text()
        self.hits = 0
        self.down = False
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.hits += 1
                if owner.down:
                    self.send_error(503, "engine restarting")
                    return
                body = GEN.sub(lambda m: f"{m.group(1)} {320.0 * owner.hits}", owner.text).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/metrics"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    yield srv
    srv.close()


class _FakeTime:
    """A clock that only moves when slept on."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_scrape_records_real_vllm_metrics_that_identify_reads(server: _Server, tmp_path: Path) -> None:
    out = tmp_path / "metrics.csv"
    t = _FakeTime()
    res = scrape_to_csv(server.url, out, interval_s=1.0, duration_s=3.0, clock=t.clock, sleep=t.sleep)
    assert res.rows == 4 and res.failures == 0 and server.hits == 4
    rows = _rows(out)
    assert [float(r["time_s"]) for r in rows] == [0.0, 1.0, 2.0, 3.0]
    assert [float(r["vllm:generation_tokens_total"]) for r in rows] == [320.0, 640.0, 960.0, 1280.0]
    assert {float(r["num_gpu_blocks"]) for r in rows} == {16384.0}
    assert {float(r["vllm:request_success_total"]) for r in rows} == {20.0}  # summed over finish reasons
    tel = read_telemetry(out)
    samples = tel.samples
    assert list(samples["generation_tokens_total"]) == [320.0, 640.0, 960.0, 1280.0]
    assert (samples["num_gpu_blocks"] == 16384).all()
    assert (samples["kv_cache_usage_perc"] == 0.0).all()


def test_first_scrape_failure_is_a_clear_error(server: _Server, tmp_path: Path) -> None:
    server.down = True
    with pytest.raises(TelemetryError, match="cannot fetch metrics"):
        scrape_to_csv(server.url, tmp_path / "m.csv", max_samples=3, sleep=lambda s: None)


def test_scraper_rides_out_failures_and_stops_when_the_engine_stays_down(
    server: _Server, tmp_path: Path
) -> None:
    t = _FakeTime()
    outages = {3: True, 4: False, 6: True}

    def sleep(seconds: float) -> None:
        t.sleep(seconds)
        server.down = outages.get(server.hits, server.down)

    res = scrape_to_csv(server.url, tmp_path / "m.csv", interval_s=0.5, max_consecutive_failures=3,
                        clock=t.clock, sleep=sleep)
    # hits 1-3 ok, 4 fails, 5-6 ok, then 7, 8, 9 fail -> give up
    assert (res.rows, res.failures, server.hits) == (5, 4, 9)
    assert len(_rows(tmp_path / "m.csv")) == 5


def test_scraper_does_not_burst_after_falling_behind(server: _Server, tmp_path: Path) -> None:
    t = _FakeTime()

    def slow_fetch(url: str) -> str:
        t.now += 2.5  # each fetch takes longer than the interval
        return FIXTURE.read_text()

    res = scrape_to_csv(server.url, tmp_path / "m.csv", interval_s=1.0, max_samples=4, fetch=slow_fetch,
                        clock=t.clock, sleep=t.sleep)
    assert res.rows == 4 and t.slept == []
    times = [float(r["time_s"]) for r in _rows(tmp_path / "m.csv")]
    assert times == [0.0, 2.5, 5.0, 7.5]


def test_cli_scrape_writes_the_csv(
    server: _Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.csv"
    code = main(["scrape", server.url, "--interval-s", "0.01", "--max-samples", "3", "-o", str(out),
                 "--metric", "vllm:request_queue_time_seconds_sum"])
    assert code == 0
    rows = _rows(out)
    assert len(rows) == 3
    assert list(rows[0]) == ["time_s", *DEFAULT_METRICS, "vllm:request_queue_time_seconds_sum"]
    assert "wrote 3 samples" in capsys.readouterr().err
    assert main(["scrape", "ftp://nowhere/metrics", "--max-samples", "1", "-o", str(out)]) == 1


@given(values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=6),
       usage=st.lists(st.floats(0, 1), min_size=1, max_size=6))
def test_label_sets_are_summed_and_kv_usage_averaged(values: list[float], usage: list[float]) -> None:
    lines = ["# TYPE vllm:num_requests_waiting gauge"]
    lines += [f'vllm:num_requests_waiting{{engine="{i}"}} {v!r}' for i, v in enumerate(values)]
    lines += ["# TYPE vllm:kv_cache_usage_perc gauge"]
    lines += [f'vllm:kv_cache_usage_perc{{engine="{i}"}} {u!r}' for i, u in enumerate(usage)]
    parsed = parse_exposition("\n".join(lines) + "\n")
    assert parsed["vllm:num_requests_waiting"] == pytest.approx(sum(values))
    assert parsed["vllm:kv_cache_usage_perc"] == pytest.approx(sum(usage) / len(usage))


def test_garbage_is_not_exposition_text() -> None:
    with pytest.raises(TelemetryError, match="not Prometheus exposition text"):
        parse_exposition("vllm:num_requests_running{engine= 3\n")
