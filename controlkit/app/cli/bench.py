"""``controlkit bench``: every policy on plants x workloads x loads; writes docs/benchmarks.md.

Examples
--------
``controlkit bench --quick`` runs a tiny grid in seconds;
``controlkit bench --jobs 2 -o docs/benchmarks.md --json bench.json`` runs the protocol's
grid; ``--ray local`` (or ``--ray ray://head:10001``) runs the cells on Ray.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from controlkit.app.bench.grid import DEFAULT_GRID, QUICK_GRID
from controlkit.app.bench.report import write_report
from controlkit.app.bench.results import BenchResults
from controlkit.app.bench.suite import run_bench
from controlkit.app.bench.summary import summarize
from controlkit.app.cli._checks import FiniteFloat, check_ray_address, output_path
from controlkit.app.cli.simulate import MAX_HORIZON_S, MAX_REQUESTS
from identification.errors import ControlkitError

__all__ = ["command"]


def _command_line() -> str:
    argv = sys.argv[1:]
    if argv[:1] == ["bench"]:
        return shlex.join(["controlkit", *argv])
    return "controlkit bench (called in-process)"


def _split(values: tuple[str, ...]) -> tuple[str, ...] | None:
    items = tuple(v.strip() for raw in values for v in raw.split(",") if v.strip())
    return items or None


@click.command("bench")
@click.option("--plants", multiple=True, help="Plant names (repeat or comma-separate).")
@click.option(
    "--workloads", multiple=True, help="Workload names; step/ramp rates are relative to the nominal rate."
)
@click.option(
    "--rate-scales",
    "--loads",
    "loads",
    multiple=True,
    help="Load factors, multiples of each workload's nominal rate on each plant.",
)
@click.option(
    "--policies",
    multiple=True,
    help="Policy labels (static-default, best-static, pang-a1, ..., pid, optimal, mpc) or spec strings.",
)
@click.option("--static-caps", multiple=True, help="Caps of the static sweep behind best-static.")
@click.option("--quick", is_flag=True, help="A tiny grid for tests and CI (seconds).")
@click.option("--jobs", type=click.IntRange(1, 1024), default=None, help="Parallel workers (default: all CPUs).")
@click.option("--ray", "ray_address", default=None, help="Run on Ray at ADDRESS ('local' starts one).")
@click.option("--num-requests", type=click.IntRange(1, MAX_REQUESTS), default=None, help="Requests per cell.")
@click.option("--horizon-s", type=FiniteFloat(0.0, MAX_HORIZON_S), default=None, help="Simulated seconds per cell.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=None, help="Seed of every cell.")
@click.option("-o", "--output", default="docs/benchmarks.md", show_default=True, callback=output_path,
              help="Markdown report.")
@click.option("--json", "json_path", default=None, callback=output_path, help="Also write all results as JSON.")
@click.option(
    "--from-json", "from_json", default=None, help="Re-render a report from a results JSON; no simulation."
)
@click.option("--no-plots", is_flag=True, help="Skip the matplotlib plots.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option(
    "--legacy-grid",
    is_flag=True,
    help="Run the pre-protocol grid (nominal loads, one seed, drain-time goodput) instead of the protocol.",
)
@click.option("--tune-seeds", default=None, help="Tune seeds of the protocol (a subset of 0-4, comma-separated).")
@click.option("--holdout-seeds", default=None, help="Hold-out seeds of the protocol (a subset of 5-9).")
@click.option("--window-s", type=float, default=None, help="Protocol measurement window (simulated seconds).")
def command(
    plants: tuple[str, ...],
    workloads: tuple[str, ...],
    loads: tuple[str, ...],
    policies: tuple[str, ...],
    static_caps: tuple[str, ...],
    quick: bool,
    jobs: int | None,
    ray_address: str | None,
    num_requests: int | None,
    horizon_s: float | None,
    seed: int | None,
    output: str,
    json_path: str | None,
    from_json: str | None,
    no_plots: bool,
    no_progress: bool,
    legacy_grid: bool,
    tune_seeds: str | None,
    holdout_seeds: str | None,
    window_s: float | None,
) -> None:
    """Run the benchmark protocol (or, with --legacy-grid, the old grid) and write the report."""
    check_ray_address(ray_address)
    if not legacy_grid and (not from_json or _is_protocol_json(from_json)):
        legacy_only = {"--ray": ray_address, "--policies": policies, "--static-caps": static_caps,
                       "--num-requests": num_requests, "--horizon-s": horizon_s, "--seed": seed}
        given = [name for name, value in legacy_only.items() if value not in (None, ())]
        if given:
            raise click.UsageError(
                f"{', '.join(given)}: not used by the benchmark protocol (its policies, caps, windows and seeds are "
                "fixed in controlkit.app.bench.protocol; it runs on local processes, --jobs); add --legacy-grid"
            )
        _protocol(
            quick=quick,
            plants=_split(plants),
            workloads=_split(workloads),
            loads=_split(loads),
            tune_seeds=_split((tune_seeds,)) if tune_seeds else None,
            holdout_seeds=_split((holdout_seeds,)) if holdout_seeds else None,
            window_s=window_s,
            jobs=jobs,
            output=output,
            json_path=json_path,
            from_json=from_json,
            progress=not no_progress,
        )
        return
    _legacy(quick=quick, plants=plants, workloads=workloads, loads=loads, policies=policies,
            static_caps=static_caps, jobs=jobs, ray_address=ray_address, num_requests=num_requests,
            horizon_s=horizon_s, seed=seed, output=output, json_path=json_path, from_json=from_json,
            plots=not no_plots, progress=not no_progress)


def _legacy(
    *,
    quick: bool,
    plants: tuple[str, ...],
    workloads: tuple[str, ...],
    loads: tuple[str, ...],
    policies: tuple[str, ...],
    static_caps: tuple[str, ...],
    jobs: int | None,
    ray_address: str | None,
    num_requests: int | None,
    horizon_s: float | None,
    seed: int | None,
    output: str,
    json_path: str | None,
    from_json: str | None,
    plots: bool,
    progress: bool,
) -> None:
    """Run (or re-render) the pre-protocol grid of ``--legacy-grid`` and print its summary."""
    if from_json:
        results = BenchResults.load_json(from_json)
    else:
        base = QUICK_GRID if quick else DEFAULT_GRID
        try:
            load_values = tuple(float(x) for x in _split(loads) or ())
            caps = tuple(int(x) for x in _split(static_caps) or ())
        except ValueError as exc:
            raise click.BadParameter(f"load factors must be numbers and caps integers: {exc}") from exc
        grid = base.with_overrides(
            plants=_split(plants),
            workloads=_split(workloads),
            loads=load_values or None,
            policies=_split(policies),
            static_caps=caps or None,
            num_requests=num_requests,
            horizon_s=horizon_s,
            seed=seed,
        )
        n_jobs = jobs if jobs is not None else (os.cpu_count() or 1)
        results = run_bench(
            grid,
            jobs=n_jobs,
            ray_address=ray_address,
            progress=progress,
            command=_command_line(),
        )
        if json_path:
            results.save_json(json_path)
    _echo_summary(results, write_report(results, output, plots=plots))


def _echo_summary(results: BenchResults, report: object) -> None:
    """Print one line per policy; refuse a run where every cell failed."""
    for s in summarize(results):
        click.echo(
            f"{s.policy:>16}: goodput x{s.goodput_vs_static:.2f} vs static default, "
            f"x{s.goodput_vs_best:.2f} vs best static, attainment {100 * s.attainment_median:.1f}% "
            f"(median), failed {s.cells_failed}/{s.cells_total}"
        )
    click.echo(f"wrote {report} ({len(results.failures)} failed cells)")
    if results.cells and len(results.failures) == len(results.cells):
        first = results.failures[0]
        raise ControlkitError(
            f"every one of the {len(results.cells)} cells failed; first: {first.task.policy} on "
            f"{'/'.join(map(str, first.task.key))}: {first.error[:300]}"
        )


def _is_protocol_json(path: str) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            head = fh.read(200)
    except OSError:
        return True  # let the protocol loader report the error
    return "bench-protocol" in head


def _protocol(
    *,
    quick: bool,
    plants: tuple[str, ...] | None,
    workloads: tuple[str, ...] | None,
    loads: tuple[str, ...] | None,
    tune_seeds: tuple[str, ...] | None,
    holdout_seeds: tuple[str, ...] | None,
    window_s: float | None,
    jobs: int | None,
    output: str,
    json_path: str | None,
    from_json: str | None,
    progress: bool,
) -> None:
    from pathlib import Path

    from controlkit.app.bench.protocol import DEFAULT_PROTOCOL, QUICK_PROTOCOL
    from controlkit.app.bench.protocol_report import load_protocol_json, render_protocol, save_protocol_json
    from controlkit.app.bench.protocol_run import run_protocol

    if from_json:
        results = load_protocol_json(from_json)
    else:
        try:
            as_float = tuple(float(x) for x in loads) if loads else None
            tune = tuple(int(x) for x in tune_seeds) if tune_seeds else None
            hold = tuple(int(x) for x in holdout_seeds) if holdout_seeds else None
        except ValueError as exc:
            raise click.BadParameter(f"loads must be numbers and seeds integers: {exc}") from exc
        base = QUICK_PROTOCOL if quick else DEFAULT_PROTOCOL
        try:
            protocol = base.with_overrides(
                plants=plants, workloads=workloads, loads=as_float, tune_seeds=tune, holdout_seeds=hold,
                window_s=window_s,
            )
        except ControlkitError as exc:
            raise click.UsageError(str(exc)) from None
        n_jobs = jobs if jobs is not None else (os.cpu_count() or 1)
        results = run_protocol(protocol, jobs=n_jobs, progress=progress, command=_command_line())
        if json_path:
            save_protocol_json(results, json_path)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(render_protocol(results))
    cells = [*results.tune, *results.holdout]
    failed = sum(1 for c in cells if not c.ok)
    click.echo(f"wrote {output} ({len(results.tune)} tune + {len(results.holdout)} hold-out cells, {failed} failed)")
    if cells and failed == len(cells):
        raise ControlkitError(f"every one of the {len(cells)} protocol cells failed")
