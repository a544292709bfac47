"""Record a running engine's Prometheus ``/metrics`` into a sampled-metrics CSV.

Every ``interval_s`` seconds :func:`scrape_to_csv` fetches the exposition text (``urllib``),
parses it with :mod:`prometheus_client.parser`, and appends one row: ``time_s`` (seconds since
the first scrape) and one column per metric, named as vLLM exposes it
(``vllm:num_requests_running``, ``vllm:generation_tokens_total``,
``vllm:time_to_first_token_seconds_sum``, ...).  That is the sampled-metrics format
``identification.read_telemetry`` and ``controlkit identify`` read.

Label sets are combined: values are **summed** over label sets (engines, finish reasons),
except ``vllm:kv_cache_usage_perc``, a fraction, which is **averaged**.  ``num_gpu_blocks``
comes from the labels of ``vllm:cache_config_info`` (summed over engines).  A metric absent
from a scrape is left empty in that row.

Examples
--------
>>> text = '''# TYPE vllm:num_requests_running gauge
... vllm:num_requests_running{engine="0"} 3.0
... vllm:num_requests_running{engine="1"} 4.0
... '''
>>> parse_exposition(text)["vllm:num_requests_running"]
7.0
"""

from __future__ import annotations

import csv
import logging
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from identification.errors import TelemetryError

__all__ = ["DEFAULT_METRICS", "ScrapeResult", "fetch_metrics", "parse_exposition", "scrape_to_csv"]

logger = logging.getLogger("controlkit.scrape")

#: Columns recorded by default (scrape sample names; ``num_gpu_blocks`` from cache_config_info).
DEFAULT_METRICS: tuple[str, ...] = (
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:num_preemptions_total",
    "vllm:request_success_total",
    "vllm:prompt_tokens_total",
    "vllm:generation_tokens_total",
    "vllm:iteration_tokens_total_sum",
    "vllm:iteration_tokens_total_count",
    "vllm:time_to_first_token_seconds_sum",
    "vllm:time_to_first_token_seconds_count",
    "vllm:inter_token_latency_seconds_sum",
    "vllm:inter_token_latency_seconds_count",
    "vllm:e2e_request_latency_seconds_sum",
    "vllm:e2e_request_latency_seconds_count",
    "num_gpu_blocks",
)
_AVERAGED = frozenset({"vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"})


def parse_exposition(text: str) -> dict[str, float]:
    """Parse Prometheus exposition text into ``{sample name: value}``, combining label sets.

    Raises
    ------
    TelemetryError
        The text is not valid exposition format.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    blocks = 0.0
    have_blocks = False
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                name, value = sample.name, float(sample.value)
                if name.endswith(("_bucket", "_created")) or math.isnan(value):
                    continue
                if name == "vllm:cache_config_info":
                    raw = sample.labels.get("num_gpu_blocks")
                    try:
                        blocks += float(raw) if raw not in (None, "None", "") else 0.0
                        have_blocks = have_blocks or raw not in (None, "None", "")
                    except ValueError:
                        pass
                    continue
                sums[name] = sums.get(name, 0.0) + value
                counts[name] = counts.get(name, 0) + 1
    except (ValueError, TypeError) as exc:
        raise TelemetryError(f"not Prometheus exposition text ({exc})", path="<scrape>") from None
    out = {k: (v / counts[k] if k in _AVERAGED else v) for k, v in sums.items()}
    if have_blocks:
        out["num_gpu_blocks"] = blocks
    return out


def fetch_metrics(url: str, timeout_s: float = 5.0) -> str:
    """GET ``url`` and return the body as text; raises :class:`TelemetryError` on failure."""
    if not url.startswith(("http://", "https://")):
        raise TelemetryError(f"metrics URL must start with http:// or https://, got {url!r}", path=url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            body: bytes = resp.read()
            charset = resp.headers.get_content_charset() or "utf-8"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TelemetryError(f"cannot fetch metrics ({reason})", path=url) from None
    return body.decode(charset, errors="replace")


@dataclass(frozen=True, slots=True)
class ScrapeResult:
    """What :func:`scrape_to_csv` recorded: rows written, failed scrapes, the columns."""

    rows: int
    failures: int
    columns: tuple[str, ...]


def scrape_to_csv(
    url: str,
    output: str | Path,
    *,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    max_samples: int | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    max_consecutive_failures: int = 5,
    fetch: Callable[[str], str] = fetch_metrics,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> ScrapeResult:
    """Scrape ``url`` every ``interval_s`` seconds into a CSV at ``output``.

    Stops after ``duration_s`` seconds or ``max_samples`` rows (whichever first; with
    neither it runs until interrupted, writing each row as it comes), or after
    ``max_consecutive_failures`` failed scrapes in a row.  The first scrape must succeed.

    Parameters
    ----------
    url
        The engine's metrics endpoint, e.g. ``http://localhost:8000/metrics``.
    output
        The CSV to write (``time_s`` + one column per metric).
    interval_s
        Sampling period (seconds, > 0).
    duration_s, max_samples
        Stopping rules.
    metrics
        Sample names to record, as exposed (``num_gpu_blocks`` is special, see above).
    max_consecutive_failures
        Give up after this many failed scrapes in a row (an error if no row was written).
    fetch, clock, sleep
        Injectable for tests: ``fetch(url) -> text``, a monotonic clock, a sleep.

    Raises
    ------
    TelemetryError
        The first scrape failed, or the endpoint stayed down.
    """
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ValueError(f"interval_s must be a finite number of seconds > 0, got {interval_s}")
    if duration_s is not None and not duration_s >= 0:
        raise ValueError(f"duration_s must be >= 0 seconds, got {duration_s}")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    columns = ("time_s", *metrics)
    rows = failures = consecutive = 0
    t0: float | None = None
    next_s = clock()
    with open(output, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        while True:
            now = clock()
            if t0 is not None and duration_s is not None and now - t0 > duration_s + 1e-9:
                break
            try:
                values = parse_exposition(fetch(url))
            except TelemetryError as exc:
                if rows == 0:
                    raise
                failures += 1
                consecutive += 1
                if consecutive == 1:
                    logger.warning("scrape of %s failed (%s); retrying every %.3g s", url, exc, interval_s)
                if consecutive >= max_consecutive_failures:
                    logger.warning("giving up on %s after %d failed scrapes in a row", url, consecutive)
                    break
            else:
                consecutive = 0
                if t0 is None:
                    t0 = now
                row = [f"{now - t0:.6f}"] + [
                    "" if (v := values.get(m)) is None else repr(v) for m in metrics
                ]
                writer.writerow(row)
                fh.flush()
                rows += 1
                if max_samples is not None and rows >= max_samples:
                    break
            next_s += interval_s
            wait_s = next_s - clock()
            if wait_s > 0:
                sleep(wait_s)
            else:
                next_s = clock()  # fell behind: sample again now, don't burst
    return ScrapeResult(rows, failures, columns)
