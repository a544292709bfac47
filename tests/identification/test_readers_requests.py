from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from identification import TelemetryError, read_requests, read_telemetry, read_trace
from identification.records import REQUEST_COLUMNS


@pytest.mark.parametrize(
    ("relpath", "rows", "kind", "has_arrivals"),
    [
        ("azure_llm_2023/AzureLLMInferenceTrace_conv.csv", 19_366, "trace_azure", True),
        ("azure_llm_2023/AzureLLMInferenceTrace_code.csv", 8_819, "trace_azure", True),
        ("mooncake/conversation_trace.jsonl.gz", 12_031, "trace_mooncake", True),
        ("sharegpt/sharegpt_val_10k_llama2.csv", 10_000, "trace_lengths", False),
        ("vidur/processed_traces/splitwise_code.csv.gz", 8_819, "trace_vidur", True),
    ],
)
def test_real_traces_read_with_their_row_counts(
    shared_data: Path, relpath: str, rows: int, kind: str, has_arrivals: bool
) -> None:
    tel = read_telemetry(shared_data / relpath)
    r = tel.requests
    assert len(r) == rows and tel.sources[0].kind == kind and not tel.skipped
    assert list(r.columns[: len(REQUEST_COLUMNS)]) == list(REQUEST_COLUMNS)
    assert r["first_token_s"].isna().all() and r["finish_s"].isna().all()
    assert (r["prompt_tokens"] >= 0).all() and (r["output_tokens"] >= 0).all()
    if has_arrivals:
        assert r["arrival_s"].min() == 0.0 and r["arrival_s"].notna().all()
    else:
        assert r["arrival_s"].isna().all()


def test_azure_and_vidur_copies_of_the_same_trace_agree(shared_data: Path) -> None:
    azure = read_trace(shared_data / "azure_llm_2023/AzureLLMInferenceTrace_conv.csv")
    vidur = read_trace(shared_data / "vidur/processed_traces/splitwise_conv.csv.gz")
    assert np.allclose(azure["arrival_s"], vidur["arrival_s"], atol=1e-5)
    assert (azure["prompt_tokens"].to_numpy() == vidur["prompt_tokens"].to_numpy()).all()


def test_mooncake_timestamps_are_milliseconds(tmp_path: Path) -> None:
    path = tmp_path / "mc.jsonl.gz"
    lines = [
        {"timestamp": 1000, "input_length": 10, "output_length": 2, "hash_ids": [1]},
        {"timestamp": 3500, "input_length": 20, "output_length": 4, "hash_ids": [2]},
    ]
    path.write_bytes(gzip.compress("\n".join(json.dumps(x) for x in lines).encode()))
    r = read_requests(path)
    assert list(r["arrival_s"]) == [0.0, 2.5] and list(r["prompt_tokens"]) == [10, 20]


def test_request_records_round_trip_and_order_checks(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "arrival_s": [0.0, 1.0],
            "first_token_s": [0.2, 1.5],
            "finish_s": [1.0, 3.0],
            "prompt_tokens": [10, 20],
            "output_tokens": [5, 6],
        }
    )
    path = tmp_path / "req.csv"
    frame.to_csv(path, index=False)
    r = read_requests(path)
    assert list(r["num_preemptions"]) == [0, 0] and list(r["output_tokens"]) == [5, 6]
    frame.loc[1, "finish_s"] = 1.2
    frame.to_csv(path, index=False)
    with pytest.raises(TelemetryError, match="before first_token_s") as info:
        read_requests(path)
    assert (info.value.line, info.value.field) == (3, "finish_s")


def test_unfinished_requests_keep_nan_times_but_orphan_finish_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "req.jsonl"
    rows = [
        {"schema": "controlkit.requests/1", "source": "controlkit.sim"},
        {"arrival_s": 0, "first_token_s": 1, "finish_s": 2, "prompt_tokens": 3, "output_tokens": 4},
        {"arrival_s": 0, "first_token_s": 1, "finish_s": None, "prompt_tokens": 3, "output_tokens": 4},
        {"arrival_s": 0, "first_token_s": None, "finish_s": None, "prompt_tokens": 3, "output_tokens": 0},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    r = read_requests(path)
    assert len(r) == 3 and r["finish_s"].isna().sum() == 2 and r["first_token_s"].isna().sum() == 1
    rows.append(
        {"arrival_s": 0, "first_token_s": None, "finish_s": 5, "prompt_tokens": 3, "output_tokens": 4}
    )
    rows.append(
        {"arrival_s": None, "first_token_s": 1, "finish_s": 5, "prompt_tokens": 3, "output_tokens": 4}
    )
    path.write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(TelemetryError, match="empty first_token_s but finish_s is set") as info:
        read_requests(path)
    assert (info.value.line, info.value.field) == (5, "first_token_s")
    tel = read_telemetry(path, skip_bad_rows=True)
    assert [(s.line, s.field) for s in tel.skipped] == [(5, "first_token_s"), (6, "arrival_s")]
    assert "missing value" in tel.skipped[1].reason


def test_bad_azure_timestamp_and_negative_length(tmp_path: Path) -> None:
    path = tmp_path / "az.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.68,10,2\nyesterday,5,1\n"
        "2023-11-16 18:15:47.00,-3,1\n"
    )
    with pytest.raises(TelemetryError, match="unparsable timestamp") as info:
        read_trace(path)
    assert (info.value.line, info.value.field) == (3, "TIMESTAMP")
    tel = read_telemetry(path, skip_bad_rows=True)
    assert len(tel.requests) == 1
    assert [(s.line, s.field) for s in tel.skipped] == [(3, "TIMESTAMP"), (4, "ContextTokens")]


def test_read_requests_refuses_sampled_metrics(tmp_path: Path) -> None:
    path = tmp_path / "m.csv"
    path.write_text("time_s,num_requests_running\n0,1\n")
    with pytest.raises(TelemetryError, match="not requests"):
        read_requests(path)
