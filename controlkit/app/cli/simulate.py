"""``controlkit simulate``: run a policy on a plant and a workload in the closed-loop simulator."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from controlkit.app.cli._checks import FiniteFloat, output_path
from identification.errors import ControlkitError

__all__ = ["MAX_HORIZON_S", "MAX_REQUESTS", "command", "plot_run"]

#: Most requests one simulation keeps, and its longest simulated time (a week).
MAX_REQUESTS = 2_000_000
MAX_HORIZON_S = 7 * 86400.0


def plot_run(steps: Any, path: str | Path, *, title: str, max_seqs_ceiling: int) -> None:
    """Plot running / cap, KV usage and step time over simulated time into ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    t = steps["t_s"]
    axes[0].plot(t, steps["num_running"], lw=0.8, label="running")
    axes[0].plot(t, steps["max_active_seqs"].clip(upper=max_seqs_ceiling), lw=0.8, label="cap")
    axes[0].plot(t, steps["num_waiting"], lw=0.8, alpha=0.6, label="waiting")
    axes[0].set_ylabel("requests")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[1].plot(t, steps["kv_blocks_used"] / steps["kv_blocks_total"], lw=0.8)
    axes[1].set_ylabel("KV usage")
    axes[1].set_ylim(0, 1.05)
    axes[2].plot(t, steps["step_s"] * 1000.0, lw=0.5)
    axes[2].set_ylabel("step (ms)")
    axes[2].set_xlabel("simulated time (s)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


@click.command(name="simulate")
@click.option(
    "--plant",
    "plant_name",
    required=True,
    help="vllm-h100:<model>, vidur-<gpu>:<model>, splitwise-<gpu>-tp<k>:<model>, or a model.json.",
)
@click.option(
    "--workload",
    required=True,
    help="azure-conv, azure-code, mooncake, sharegpt[:poisson:<r>|gamma:<r>:<cv>|all-at-once], "
    "step:<r1>:<r2>:<t>, ramp:<r0>:<r1>:<dur>, or a requests file.",
)
@click.option(
    "--policy", "policy_spec", required=True, help="A spec such as static:max_num_seqs=256, or policy.json."
)
@click.option("--rate-scale", type=FiniteFloat(0.0, 1e4), default=1.0, show_default=True, help="Load multiplier.")
@click.option("--num-requests", type=click.IntRange(1, MAX_REQUESTS), default=None,
              help="Keep the first N requests.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True)
@click.option("--ttft-slo-s", type=FiniteFloat(0.0, 7 * 86400.0), default=None,
              help="TTFT SLO (default 100x the batch-1 step).")
@click.option("--tpot-slo-s", type=FiniteFloat(0.0, 3600.0), default=None,
              help="TPOT SLO (default 5x the batch-1 step).")
@click.option("--max-num-seqs", type=click.IntRange(1, 65_536), default=None,
              help="Engine ceiling for the cap (plant default).")
@click.option("--max-batched-tokens", type=click.IntRange(1, 10**7), default=None,
              help="Engine token budget (plant default).")
@click.option("--no-chunked-prefill", is_flag=True, help="vLLM 0.5 prefill-only steps instead of chunked.")
@click.option("--timeout-s", type=FiniteFloat(0.0, 7 * 86400.0), default=None,
              help="Client timeout: a request with no first token this long after arrival is aborted "
                   "(bounded waiting; the benchmark protocol uses 3x the TTFT SLO). Default: clients wait.")
@click.option("--horizon-s", type=FiniteFloat(0.0, MAX_HORIZON_S), default=None,
              help="Stop at this simulated time.")
@click.option("-o", "--output", default="-", show_default=True, callback=output_path,
              help="Metrics JSON file, or - for stdout.")
@click.option(
    "--telemetry", type=click.Path(dir_okay=False), default=None, callback=output_path,
    help="Write step records (JSONL)."
)
@click.option(
    "--requests-out", type=click.Path(dir_okay=False), default=None, callback=output_path,
    help="Write request records (JSONL)."
)
@click.option("--plot", type=click.Path(dir_okay=False), default=None, callback=output_path,
              help="Plot the run (PNG).")
def command(
    plant_name: str,
    workload: str,
    policy_spec: str,
    rate_scale: float,
    num_requests: int | None,
    seed: int,
    ttft_slo_s: float | None,
    tpot_slo_s: float | None,
    max_num_seqs: int | None,
    max_batched_tokens: int | None,
    no_chunked_prefill: bool,
    timeout_s: float | None,
    horizon_s: float | None,
    output: str,
    telemetry: str | None,
    requests_out: str | None,
    plot: str | None,
) -> None:
    """Run a policy on a plant and a workload in the closed-loop simulator; write metrics JSON."""
    import warnings

    from controlkit.app.workflow import run_simulation
    from controlkit.sim import SLO, default_slo, load_plant, load_workload
    from identification.errors import ExtrapolationWarning

    plant = load_plant(plant_name)
    wl = load_workload(workload, rate_scale=rate_scale, num_requests=num_requests, seed=seed)
    base = default_slo(plant.decode_s(1))
    # an explicit value (the ranges above refuse zero) is used as given, never replaced by a default
    slo = SLO(ttft_s=base.ttft_s if ttft_slo_s is None else ttft_slo_s,
              tpot_s=base.tpot_s if tpot_slo_s is None else tpot_slo_s, timeout_s=timeout_s)
    chunked = not no_chunked_prefill
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ExtrapolationWarning)
        run = run_simulation(plant, wl, policy_spec, slo, max_num_seqs=max_num_seqs,
                             max_batched_tokens=max_batched_tokens, chunked_prefill=chunked, seed=seed,
                             horizon_s=horizon_s, telemetry=telemetry, requests_out=requests_out,
                             record_steps=plot is not None, settings={"rate_scale": rate_scale})
    res, doc = run.result, run.doc
    seqs = int(doc["max_num_seqs"])
    for w in caught:
        if issubclass(w.category, ExtrapolationWarning):
            click.echo(f"warning: {w.message}", err=True)
    text = json.dumps(doc, indent=2)
    if output == "-":
        click.echo(text)
    else:
        out = Path(output)
        if not out.parent.exists():
            raise ControlkitError(f"{output}: the folder does not exist")
        out.write_text(text + "\n", encoding="utf-8")
    if plot is not None:
        plot_run(res.steps, plot, title=f"{plant.name} | {wl.name} | {policy_spec}", max_seqs_ceiling=seqs)
    m = res.metrics
    click.echo(
        f"{m.num_finished}/{m.num_requests} finished, {m.throughput_tok_s:.0f} tok/s, "
        f"attainment {m.slo_attainment:.3f}, {m.num_preemptions} preemptions, {m.num_steps} steps",
        err=True,
    )
    sys.stdout.flush()
