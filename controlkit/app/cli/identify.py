"""``controlkit identify PATH... -o model.json``: fit a plant model from engine telemetry."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Console

from controlkit.app.cli._checks import output_path
from controlkit.app.workflow import header_block_size
from identification.derive import derive_observations
from identification.errors import TelemetryError
from identification.plant import PlantModel, identify
from identification.records import Telemetry
from identification.report import plot_fit, summary_table
from identification.telemetry import read_telemetry

__all__ = ["command"]

_LARGE_ROWS = 200_000


@contextmanager
def _status(console: Console, message: str, show: bool) -> Iterator[None]:
    if show:
        with console.status(message):
            yield
    else:
        yield


def _report_skipped(console: Console, telemetry: Telemetry) -> None:
    if not telemetry.skipped:
        return
    first = telemetry.skipped[0]
    console.print(f"[yellow]skipped {len(telemetry.skipped)} bad row(s)[/]; first: {first.path} line "
                  f"{first.line}, field {first.field!r}: {first.reason}")
    by_file: dict[str, int] = {}
    for row in telemetry.skipped:
        by_file[row.path] = by_file.get(row.path, 0) + 1
    for path, count in by_file.items():
        console.print(f"  {path}: {count} row(s) skipped")


@click.command(name="identify")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--where", "where", multiple=True, metavar="COL=VALUE",
              help="Select rows/runs, e.g. --where model=llama-2-7b (repeat to AND clauses).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, allow_dash=True),
              callback=output_path, help="Model file to write (controlkit.model/1 JSON); '-' writes it to stdout.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Write the fit/residual plot here.")
@click.option("--skip-bad-rows", is_flag=True, help="Skip malformed rows (reported) instead of failing.")
@click.option("--holdout-fraction", type=click.FloatRange(0.0, 0.9), default=0.25, show_default=True,
              help="Share of runs (or batch levels) held out to choose the form and report held-out MAPE.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the held-out split (and of the bootstrap).")
@click.option("--form", type=click.Choice(["auto", "affine", "knee"]), default="auto", show_default=True,
              help="Latency model form; auto chooses by held-out error.")
@click.option("--bootstrap", "n_bootstrap", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Bootstrap resamples for the intervals (0: sandwich covariance).")
def command(paths: tuple[str, ...], where: tuple[str, ...], output: str, plot: str | None,
            skip_bad_rows: bool, holdout_fraction: float, seed: int, form: str, n_bootstrap: int) -> None:
    """Fit latency, memory and workload models from telemetry and write a model file.

    PATH... are sampled engine metrics (CSV or Prometheus text), step records, request records
    or traces, and run index CSVs (joined for the KV capacity).  Exit codes: 0 success, 1 bad
    telemetry or a failed fit, 2 bad usage.
    """
    to_stdout = output == "-"
    console = Console(stderr=True) if to_stdout else Console()
    err = Console(stderr=True)
    telemetry = read_telemetry(list(paths), list(where), skip_bad_rows=skip_bad_rows, progress=True)
    _report_skipped(err, telemetry)
    n_rows = len(telemetry.steps) + len(telemetry.samples)
    block_size = header_block_size(telemetry)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with _status(err, f"fitting on {n_rows} rows", n_rows > _LARGE_ROWS):
            plant = identify(telemetry, holdout_fraction=holdout_fraction, seed=seed, form=form,
                             n_bootstrap=n_bootstrap, block_size=block_size)
    for w in caught:
        err.print(f"[yellow]warning[/]: {w.category.__name__}: {w.message}")
    console.print(summary_table(plant))
    _write(plant, output)
    if plot is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            plot_fit(plant, derive_observations(telemetry, block_size=block_size), plot)
        console.print(f"plot written to {plot}")
    if not to_stdout:
        console.print(f"model written to {output}")


def _write(plant: PlantModel, output: str) -> None:
    if output == "-":
        click.echo(plant.to_json(), nl=False)
    else:
        try:
            plant.save(Path(output))
        except OSError as exc:
            raise TelemetryError(f"cannot write the model file ({exc.strerror})", path=output) from None
