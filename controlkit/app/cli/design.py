"""``controlkit design``: a certified batch-size controller from a model file."""

from __future__ import annotations

from pathlib import Path

import click

from controlkit.app.cli._checks import FiniteFloat, output_path
from controlkit.app.workflow import DESIGNERS, DesignOptions, design_controller, design_summary
from controlkit.plant import DesignPlant
from identification.plant import load_model

__all__ = ["command"]


#: Largest measurement delay (decisions) and most delays certified: each delay adds a state to the
#: loop, and the Lyapunov search grows with its cube.
MAX_DELAY, MAX_DELAYS = 16, 8


def _delays(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise click.BadParameter(f"{text[:60]!r}: expected integers like '1,2'", param_hint="'--delays'") from None
    if not values or len(values) > MAX_DELAYS or any(not 1 <= d <= MAX_DELAY for d in values):
        raise click.BadParameter(
            f"{text[:60]!r}: expected 1..{MAX_DELAYS} delays, each in [1, {MAX_DELAY}] decisions",
            param_hint="'--delays'")
    return values


@click.command(name="design")
@click.argument("model_path", metavar="MODEL.json", type=click.Path(dir_okay=False))
@click.option("--tpot-slo-s", type=FiniteFloat(0.0, 3600.0), required=True, help="TPOT / ITL SLO in seconds.")
@click.option("--ttft-slo-s", type=FiniteFloat(0.0, 7 * 86400.0), default=None, help="TTFT SLO in seconds.")
@click.option(
    "--controller",
    type=click.Choice(list(DESIGNERS)),
    default="pid",
    show_default=True,
    help="pid-adaptive: the PID gain-scheduled on an online slope estimate (docs/design.md).",
)
@click.option("-o", "--output", type=click.Path(dir_okay=False), required=True, callback=output_path,
              help="Policy file to write.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Design plots (PNG).")
@click.option("--allow-uncertified", is_flag=True, help="Write the file even if a claim fails (marked).")
@click.option("--tuning", type=click.Choice(["robust", "simc"]), default="robust", show_default=True)
@click.option(
    "--filter",
    "filter_kind",
    type=click.Choice(["ema", "quantile", "none"]),
    default="ema",
    show_default=True,
)
@click.option("--delays", default="1,2", show_default=True, help="Measurement delays to certify (decisions).")
@click.option(
    "--priority",
    type=click.Choice(["tpot", "ttft"]),
    default="tpot",
    show_default=True,
    help="Which SLO wins in overload.",
)
@click.option("--rate-limit", type=click.IntRange(1, 100_000), default=8, show_default=True,
              help="Cap change per decision.")
@click.option("--b-max", type=click.IntRange(1, 1_000_000), default=None,
              help="Upper cap (default: memory-safe, within validity).")
def command(
    model_path: str,
    tpot_slo_s: float,
    ttft_slo_s: float | None,
    controller: str,
    output: str,
    plot: str | None,
    allow_uncertified: bool,
    tuning: str,
    filter_kind: str,
    delays: str,
    priority: str,
    rate_limit: int,
    b_max: int | None,
) -> None:
    """Design a certified controller from MODEL.json and write a controlkit.policy/2 file."""
    delay_t = _delays(delays)
    model = load_model(model_path)
    plant = DesignPlant.from_model(model, delays=delay_t, b_max=b_max, source=str(model_path))
    options = DesignOptions(tuning=tuning, filter_kind=filter_kind, priority=priority, rate_limit=rate_limit)
    d = design_controller(plant, controller, tpot_slo_s, ttft_slo_s, options)
    click.echo(design_summary(d))
    pf = d.to_policy_file(allow_uncertified=allow_uncertified)
    pf.save(output)
    if plot:
        from controlkit.plots import design_plots

        design_plots(d, Path(plot))
        click.echo(f"plots: {plot}")
    click.echo(f"wrote {output}" + ("  (UNCERTIFIED)" if pf.uncertified else ""))
