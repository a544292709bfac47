"""TensorRT-LLM DynamicBatchTuner rule against hand-computed cases."""

from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.baselines.trtllm import (
    TrtllmTunerParams,
    TrtllmTunerPolicy,
    parse_batch_size_table,
    runtime_batch_size,
    runtime_max_num_tokens,
)
from policies.registry import PolicyContext, build_policy

CTX = PolicyContext(kv_blocks_total=10000, max_num_seqs=1024, max_batched_tokens=16384)


def obs(prefill: int = 0, decode: int = 0, finished: int = 0, total: int = 10000) -> Observation:
    return Observation(
        t_s=0.0,
        num_running=4,
        num_waiting=4,
        kv_blocks_used=10,
        kv_blocks_total=total,
        num_prefill_tokens=prefill,
        num_decode_tokens=decode,
        num_finished=finished,
    )


def test_runtime_batch_size_matches_tensorrt_llm_unit_test() -> None:
    # The values of TensorRT-LLM's own DynamicBatchConfig.RuntimeBatchSize test.
    got = [runtime_batch_size(c) for c in (143, 335, 671, 831, 1279, 1663, 2049, 1665)]
    assert got == [128, 256, 512, 768, 1024, 1536, 2048, 1665]


def test_runtime_max_num_tokens_by_regime() -> None:
    # context heavy (ISL/OSL = 50 > 2): threshold 8192 wins over 2^ceil(log2(51)) = 64
    assert runtime_max_num_tokens(1, 100, 2) == 8192
    # gen heavy (0.25): int(1000 * 0.25 + 1000) = 1250 -> 2048; threshold 2048
    assert runtime_max_num_tokens(1000, 100, 400) == 2048
    # balanced (1.0): 6000 -> 8192 > threshold 4096
    assert runtime_max_num_tokens(3000, 100, 100) == 8192


def test_tuner_learns_lengths_from_finished_requests_and_maps_capacity() -> None:
    policy = TrtllmTunerPolicy(TrtllmTunerParams(window=2, tune_max_num_tokens=True), CTX)
    # no finished request yet: the engine's ceiling
    assert policy.decide(obs(prefill=1000)).max_active_seqs == 1024
    assert policy.decide(obs(decode=50)).max_active_seqs == 1024
    # 1 finished: in = 1000, out = 50 + 49 + 1 = 100 -> 1100 tokens = ceil(68.75) = 69 blocks
    # capacity = 10000 // 69 = 144 -> first row with 144 < limit is (336, 256)
    limits = policy.decide(obs(decode=49, finished=1))
    assert policy.average_lengths() == (1000.0, 100.0)
    assert limits.max_active_seqs == 256
    # ISL/OSL = 10 > 2: threshold 8192; int(256*10 + 256) = 2816 -> 4096 -> 8192
    assert limits.max_batched_tokens == 8192
    # 2 more finished (window 2 drops the first entry): in = 300/2 = 150, out = (99+2)/2 = 50.5
    # int(150) + int(50.5) = 200 tokens -> ceil(12.5) = 13 blocks -> 10000 // 13 = 769 -> 768
    limits = policy.decide(obs(prefill=300, decode=99, finished=2))
    assert policy.average_lengths() == (150.0, 50.5)
    assert limits.max_active_seqs == 768
    policy.reset()
    assert policy.average_lengths() == (0.0, 0.0)
    assert policy.decide(obs()).max_active_seqs == 1024


def test_fixed_lengths_and_engine_ceiling() -> None:
    ctx = PolicyContext(kv_blocks_total=10000, max_num_seqs=200)
    policy = build_policy("trtllm-tuner:avg_input_tokens=100,avg_output_tokens=60", ctx)
    # 160 tokens = 10 blocks -> 1000 -> table (1280, 1024) -> min(1024, engine 200) = 200
    assert policy.decide(obs()).max_active_seqs == 200


def test_custom_table_from_spec_and_from_a_list() -> None:
    policy = build_policy("trtllm-tuner:batch_size_table=10:4;1000:64,avg_input_tokens=8,avg_output_tokens=8")
    # 16 tokens = 1 block; capacity 10000 -> past the table: 10000 // 512 * 512 = 9728,
    # 10000 >= 9728 + 128, so capacity itself -> engine ceiling 256
    assert policy.decide(obs()).max_active_seqs == 256
    assert parse_batch_size_table([[10, 4], [1000, 64]]) == ((10, 4), (1000, 64))
    small = build_policy(
        "trtllm-tuner:batch_size_table=10:4;1000:64,avg_input_tokens=800,avg_output_tokens=800"
    )
    # 1600 tokens = 100 blocks -> 10000 // 100 = 100 < 1000 -> 64
    assert small.decide(obs()).max_active_seqs == 64


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("trtllm-tuner:window=0", "window=0 is outside"),
        ("trtllm-tuner:batch_size_table=10:4;5:8", "strictly increasing"),
        ("trtllm-tuner:batch_size_table=ten", "must look like"),
        ("trtllm-tuner:avg_input_tokens=-5", "avg_input_tokens=-5.0 is outside"),
        ("trtllm-tuner:tune_max_num_tokens=3", "must be true or false"),
    ],
)
def test_bad_tuner_parameters(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError, match="trtllm-tuner") as info:
        build_policy(spec)
    assert fragment in str(info.value)
