"""``controlkit export POLICY --format vllm-args|vllm-yaml``: a static vLLM config from a policy."""

from __future__ import annotations

import click

from controlkit.app.cli._checks import output_path
from policies.export import export_vllm_config, render_vllm_args, render_vllm_yaml

__all__ = ["command"]


@click.command(name="export")
@click.argument("policy")
@click.option("--format", "fmt", type=click.Choice(["vllm-args", "vllm-yaml"]), default="vllm-args",
              show_default=True,
              help="A 'vllm serve' command line, or a YAML file for 'vllm serve --config'.")
@click.option("--max-model-len", type=click.IntRange(min=1), default=None,
              help="Maximum sequence length of the deployment (tokens); checked against the budget.")
@click.option("--model", default="$MODEL", show_default=True,
              help="Model name for the vllm-args command line.")
@click.option("--hook", is_flag=True,
              help="Also install the controlkit hook: --scheduler-cls policies.vllm.make_scheduler and "
                   "CONTROLKIT_POLICY=<this policy>.")
@click.option("--step-cap", is_flag=True,
              help="Export an optimal design's step-capped budget (every step within the TPOT SLO) "
                   "instead of its throughput budget.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, allow_dash=True), default="-",
              show_default=True, callback=output_path, help="File to write; '-' is stdout.")
def command(
    policy: str, fmt: str, max_model_len: int | None, model: str, hook: bool, step_cap: bool, output: str
) -> None:
    """Export POLICY (a controlkit.policy/2 file or a spec string) as a static vLLM 0.33 config.

    Writes max_num_seqs, max_num_batched_tokens, max_num_active_seqs, enable_chunked_prefill and,
    where the policy sets it, gpu_memory_utilization.  Refuses (exit 1) anything vLLM's own
    validation would reject.
    """
    cfg = export_vllm_config(policy, max_model_len=max_model_len, hook=hook, step_cap=step_cap)
    text = render_vllm_args(cfg, model=model) + "\n" if fmt == "vllm-args" else render_vllm_yaml(cfg)
    with click.open_file(output, "w") as fh:
        fh.write(text)
