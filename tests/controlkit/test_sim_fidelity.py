"""Fidelity against the measured H100 vLLM runs (BCA data), on a few fast cells."""

from __future__ import annotations

from pathlib import Path

import pytest

from controlkit.sim.fidelity import bca_workload, replay_bca


@pytest.mark.parametrize(
    ("model", "n"), [("llama-2-7b", 8), ("llama-2-7b", 64), ("llama-2-13b", 32), ("opt-2.7b", 128)]
)
def test_replay_matches_measured_throughput_and_median_tpot_within_5_percent(
    shared_data: Path, model: str, n: int
) -> None:
    row = replay_bca(model, n, data_dir=shared_data)
    assert abs(row.tok_s_error) < 0.05, row
    assert abs(row.tpot_error) < 0.05, row


def test_replay_preempts_where_vllm_preempted_and_not_below(shared_data: Path) -> None:
    assert replay_bca("llama-2-13b", 128, data_dir=shared_data).simulated_preemptions > 0
    assert replay_bca("llama-2-13b", 64, data_dir=shared_data).simulated_preemptions == 0


def test_replay_workload_matches_the_measured_token_totals(shared_data: Path) -> None:
    w = bca_workload("llama-2-7b", data_dir=shared_data)
    assert len(w) == 2000
    assert w.prompt_tokens.sum() == pytest.approx(225574, rel=0.01)
    assert w.output_tokens.sum() == pytest.approx(646340, rel=0.01)
