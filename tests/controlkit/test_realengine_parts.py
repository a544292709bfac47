"""The parts of the real-engine tier that need no engine: sequences, records, report, block size."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from controlkit.app.realengine.load import poisson_sequence, real_metrics, write_requests, write_sequence
from controlkit.app.realengine.report import fidelity, verdict, write_report
from controlkit.app.workflow import header_block_size
from controlkit.sim.metrics import SLO, RequestOutcomes
from controlkit.sim.workloads import load_workload
from identification import read_telemetry


def test_an_arrival_sequence_written_to_a_file_replays_identically_in_the_simulator(tmp_path: Path) -> None:
    seq = poisson_sequence(8.0, 50, prompt=(10, 90), output=(5, 40), seed=4)
    wl = load_workload(write_sequence(seq, tmp_path / "seq.jsonl"))
    np.testing.assert_allclose(wl.arrival_s, seq.arrival_s)
    np.testing.assert_array_equal(wl.prompt_tokens, seq.prompt_tokens)
    np.testing.assert_array_equal(wl.output_tokens, seq.output_tokens)
    assert seq.prompt_tokens.min() >= 10 and seq.output_tokens.max() <= 40
    assert poisson_sequence(8.0, 50, seed=4).arrival_s.tolist() != poisson_sequence(8.0, 50, seed=5).arrival_s.tolist()


def test_measured_request_records_round_trip_and_unfinished_requests_stay_unfinished(tmp_path: Path) -> None:
    out = RequestOutcomes(
        arrival_s=np.array([0.0, 0.5, 1.0]), first_token_s=np.array([0.1, 0.7, math.nan]),
        finish_s=np.array([1.1, 2.7, math.nan]), prompt_tokens=np.array([10, 20, 30]),
        output_tokens=np.array([11, 21, 31]), num_preemptions=np.zeros(3, dtype=np.int64),
    )
    frame = read_telemetry([write_requests(out, tmp_path / "r.jsonl")]).requests
    assert frame["finish_s"].isna().tolist() == [False, False, True]
    m = real_metrics(out, SLO(ttft_s=0.15, tpot_s=0.2))
    assert m.num_finished == 2 and m.num_unfinished == 1
    assert m.goodput_req_s == pytest.approx(1 / 2.7)  # only the first meets both SLOs; 2.7 s from first send
    assert m.throughput_tok_s == pytest.approx(32 / 2.7)


def _run(policy: str, seq: str, goodput: float, preemptions: int, tpot_p99_s: float, **sim: float) -> dict[str, object]:
    return {"run": f"{policy}-{seq}", "policy": policy, "sequence": seq, "goodput_req_s": goodput,
            "num_preemptions": preemptions, "tpot_p99_s": tpot_p99_s, "throughput_tok_s": 100.0,
            "slo_attainment": 0.5, "ttft_p50_s": 0.1, "ttft_p99_s": 0.2, "tpot_p50_s": 0.01, **sim}


def test_the_verdict_scores_on_sequence_b_against_the_static_chosen_on_a(tmp_path: Path) -> None:
    results: dict[str, object] = {
        "slo_tpot_s": 0.01, "best_static_on_A": "static-8",
        "runs": [_run("static-8", "A", 2.0, 0, 0.01), _run("static-8", "B", 1.0, 3, 0.012),
                 _run("default-48", "B", 0.9, 9, 0.03), _run("designed-pid", "B", 1.2, 1, 0.0105)],
    }
    v = verdict(results)
    assert v["goodput_ge_best_static"] and v["fewer_preemptions_than_default"] and v["tpot_p99_within_10pct"]
    assert v["designed_goodput_over_best_static"] == pytest.approx(1.2)
    text = write_report(results, tmp_path)
    assert "static-8" in text and json.loads((tmp_path / "results.json").read_text())["verdict"]["complete"]


def test_fidelity_is_the_median_relative_error_over_runs_with_a_prediction() -> None:
    runs = [_run("a", "B", 1, 0, 0.01, sim_throughput_tok_s=110.0, sim_tpot_p50_s=0.01, sim_ttft_p50_s=0.1),
            _run("b", "B", 1, 0, 0.01, sim_throughput_tok_s=70.0, sim_tpot_p50_s=0.02, sim_ttft_p50_s=0.1),
            _run("c", "B", 1, 0, 0.01)]
    f = fidelity({"runs": runs})
    assert f["num_runs"] == 2
    assert f["throughput_median_abs_rel_err"] == pytest.approx(0.2)  # median of 0.1 and 0.3
    assert f["throughput_worst"]["run"] == "b-B"
    assert f["tpot_p50_median_abs_rel_err"] == pytest.approx(0.5)


def test_identify_takes_the_block_size_from_a_step_log_header(tmp_path: Path) -> None:
    log = tmp_path / "steps.jsonl"
    log.write_text(json.dumps({"schema": "controlkit.steps/1", "block_size": 128}) + "\n" + json.dumps(
        {"t_s": 0.0, "step_s": 0.01, "num_running": 1, "num_waiting": 0, "num_prefill_tokens": 0,
         "num_decode_tokens": 1, "kv_blocks_used": 1, "kv_blocks_total": 10, "num_preempted": 0}) + "\n")
    assert header_block_size(read_telemetry([log])) == 128
    log.write_text("\n".join(log.read_text().splitlines()[1:]) + "\n")
    assert header_block_size(read_telemetry([log])) == 16
