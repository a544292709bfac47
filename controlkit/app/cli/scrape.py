"""``controlkit scrape URL -o metrics.csv``: record a running engine's /metrics for ``identify``."""

from __future__ import annotations

import click

from controlkit.scrape import DEFAULT_METRICS, scrape_to_csv

__all__ = ["command"]


@click.command(name="scrape")
@click.argument("url")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="CSV file to write.")
@click.option("--interval-s", type=click.FloatRange(min=0.001), default=1.0, show_default=True,
              help="Sampling period in seconds.")
@click.option("--duration-s", type=click.FloatRange(min=0.0), default=None,
              help="Stop after this many seconds (default: run until Ctrl-C).")
@click.option("--max-samples", type=click.IntRange(min=1), default=None, help="Stop after this many rows.")
@click.option("--metric", "extra", multiple=True, metavar="NAME",
              help="Also record this sample name (repeatable), e.g. vllm:request_queue_time_seconds_sum.")
def command(url: str, output: str, interval_s: float, duration_s: float | None, max_samples: int | None,
            extra: tuple[str, ...]) -> None:
    """Scrape URL (e.g. http://localhost:8000/metrics) into a sampled-metrics CSV.

    Columns: time_s and vLLM's metric names (summed over label sets; KV usage averaged;
    num_gpu_blocks from vllm:cache_config_info).  `controlkit identify metrics.csv` reads it.
    """
    metrics = (*DEFAULT_METRICS, *(m for m in extra if m not in DEFAULT_METRICS))
    try:
        result = scrape_to_csv(url, output, interval_s=interval_s, duration_s=duration_s,
                               max_samples=max_samples, metrics=metrics)
    except KeyboardInterrupt:
        click.echo(f"stopped; rows so far are in {output}", err=True)
        return
    click.echo(f"wrote {result.rows} samples ({result.failures} failed scrapes) to {output}", err=True)
