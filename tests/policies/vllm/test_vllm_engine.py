"""The whole vLLM ``LLM`` engine with a fake executor, hooked through each route (VLLM.md §5).

The engines run in subprocesses (``fake_engine.py``): ``VLLM_TARGET_DEVICE=cpu`` and the
in-process engine core must not leak into this test process, and vLLM loads its plugins
once per process.  The two subprocesses run concurrently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")

from identification import read_telemetry

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from fake_engine import OUTPUT_TOKENS, STEP_PER_SEQ_S  # noqa: E402

SCRIPT = HERE / "fake_engine.py"
CAP = 4


@pytest.fixture(scope="module")
def engine_runs(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Run the string route in one subprocess and the plugin routes in another, concurrently."""
    out_dir = tmp_path_factory.mktemp("engine")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTROLKIT_")}
    env.update(CONTROLKIT_POLICY=f"static:max_num_seqs={CAP}", VLLM_TARGET_DEVICE="cpu",
               VLLM_ENABLE_V1_MULTIPROCESSING="0")
    jobs = {}
    for name, modes in (("string", "string"), ("plugin", "plugin,plugin-explicit")):
        job_env = dict(env, CONTROLKIT_STEP_LOG=str(out_dir / f"{name}-steps.jsonl"))
        out = out_dir / f"{name}.json"
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), modes, str(tiny_model_dir), str(out)],
            env=job_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        jobs[name] = (proc, out)
    results: dict[str, Any] = {"dir": out_dir}
    for proc, out in jobs.values():
        log, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, log[-4000:]
        results.update(json.loads(out.read_text()))
    yield results


def test_engine_runs_the_hook_through_scheduler_cls_string(engine_runs: dict[str, Any]) -> None:
    run = engine_runs["string"]
    assert run["scheduler"] == "ControlledScheduler"  # CPU platform: async scheduling off
    assert run["completion_tokens"] == OUTPUT_TOKENS
    assert max(run["running"]) == CAP and run["faults"] == 0


def test_plugin_installs_the_hook_without_a_flag(engine_runs: dict[str, Any]) -> None:
    run = engine_runs["plugin"]
    assert run["scheduler"] == "ControlledScheduler"
    assert run["completion_tokens"] == OUTPUT_TOKENS
    assert max(run["running"]) == CAP


def test_explicit_scheduler_cls_wins_over_the_plugin(engine_runs: dict[str, Any]) -> None:
    run = engine_runs["plugin-explicit"]
    assert run["scheduler"] == "Scheduler"
    assert max(run["running"]) == 16  # vLLM's own max_num_seqs, no cap
    assert run["completion_tokens"] == OUTPUT_TOKENS


def test_engine_step_log_reads_as_telemetry(engine_runs: dict[str, Any]) -> None:
    log = engine_runs["dir"] / "string-steps.jsonl"
    tel = read_telemetry(log)
    steps = tel.steps
    assert len(steps) == len(engine_runs["string"]["running"])
    assert steps["num_running"].max() == CAP
    assert (steps["max_active_seqs"] == CAP).all()
    assert steps["num_prefill_tokens"].sum() == 20 * 24
    assert steps["num_decode_tokens"].sum() == sum(OUTPUT_TOKENS) - 20  # the first token comes with the prefill
    assert (steps["step_s"] > 0).all() and steps["t_s"].is_monotonic_increasing
    assert (steps["kv_blocks_total"] == 16383).all()


def test_identify_fits_a_model_from_the_engine_step_log(
    engine_runs: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controlkit.app.cli import main

    out = tmp_path / "model.json"
    assert main(["identify", str(engine_runs["dir"] / "string-steps.jsonl"), "-o", str(out)]) == 0
    model = json.loads(out.read_text())
    assert model["schema"] == "controlkit.model/1"
    assert "16383" in json.dumps(model)  # the engine's KV capacity made it into the model
    # the fake forward pass sleeps STEP_PER_SEQ_S per sequence: identify finds that slope
    lo_s, hi_s = model["latency"]["slope_interval_s_per_seq"]
    assert 0.5 * STEP_PER_SEQ_S < lo_s < hi_s < 2.0 * STEP_PER_SEQ_S, (lo_s, hi_s)


def _families(text: str) -> set[str]:
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_engine_exposes_vllm_and_controlkit_metrics(engine_runs: dict[str, Any]) -> None:
    text = engine_runs["string"]["metrics"]
    assert 'vllm:generation_tokens_total{engine="0"' in text
    assert 'controlkit_policy_faults_total{kind="raised"} 0.0' in text
    # the scrape fixture (captured from this engine) still matches what vLLM exposes
    fixture = (HERE.parents[1] / "fixtures" / "vllm_metrics.txt").read_text()
    assert _families(fixture) <= _families(text)
