"""BucketServe bucketing, safe cap and priority order against hand-computed cases."""

from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.baselines.bucketserve import BucketServeParams, BucketServePolicy
from policies.registry import PolicyContext, build_policy

CTX = PolicyContext(kv_blocks_total=100, max_num_seqs=256, max_model_len=1024, max_batched_tokens=8192)
QUEUE = (100, 200, 150, 900, 120, 130)


def obs(running: int, waiting: tuple[int, ...], used: int) -> Observation:
    return Observation(
        t_s=0.0,
        num_running=running,
        num_waiting=len(waiting),
        kv_blocks_used=used,
        kv_blocks_total=100,
        waiting_prompt_tokens=waiting,
    )


def test_buckets_split_under_load_and_merge_when_light() -> None:
    policy = BucketServePolicy(BucketServeParams(), CTX)
    # M_safe = 0.9 * 100 * 16 = 1440; S_avg = 1600/6 = 266.7 -> N_max = 5; 6 >= 5 -> try to split
    # [0, 1024): 6 > 5 members, 5 of 6 below 512 -> [0, 512) + [512, 1024)
    # served: bucket of index 0 = {0, 1, 2, 4, 5}; S_max = 200 -> N_b = 7 -> batch 5
    limits = policy.decide(obs(0, QUEUE, 0))
    assert policy.edges == [0, 512, 1024]
    assert limits.admission_order == (0, 1, 2, 4, 5, 3)
    assert limits.max_active_seqs == 5
    # M_safe = 0.9 * 50 * 16 = 720 -> N_max = 2; [0, 512) has 5 > 2, all below 256 -> split;
    # [512, 1024) has 1 member -> kept.  S_max 200 -> N_b = 3 -> cap 5 + 3
    limits = policy.decide(obs(5, QUEUE, 50))
    assert policy.edges == [0, 256, 512, 1024]
    assert limits.max_active_seqs == 8
    # the oldest request is long: its bucket [512, 1024) is served; N_b = 1440 // 900 = 1
    limits = policy.decide(obs(8, (900, 100), 0))
    assert limits.admission_order == (0, 1)
    assert limits.max_active_seqs == 9
    # light load: 1 < N_max = 1440 // 100 = 14 -> merge back into one bucket
    limits = policy.decide(obs(0, (100,), 0))
    assert policy.edges == [0, 1024]
    assert limits.max_active_seqs == 1
    # empty queue: room for the last N_max = 14
    assert policy.decide(obs(3, (), 0)).max_active_seqs == 17
    policy.reset()
    assert policy.edges == [0, 1024]
    assert policy.decide(obs(3, (), 0)).max_active_seqs == 256


def test_offline_priorities_order_inside_the_served_bucket() -> None:
    sjf = build_policy("bucketserve:priority=sjf,token_budget=true", CTX)
    limits = sjf.decide(obs(0, QUEUE, 0))
    assert limits.admission_order == (0, 4, 5, 2, 1, 3)
    assert limits.max_batched_tokens == 7 * 200  # N_b * S_max
    ljf = build_policy("bucketserve:priority=ljf", CTX)
    assert ljf.decide(obs(0, QUEUE, 0)).admission_order == (1, 2, 5, 4, 0, 3)


def test_full_cache_still_returns_a_valid_cap() -> None:
    policy = BucketServePolicy(BucketServeParams(), CTX)
    limits = policy.decide(obs(7, QUEUE, 100))  # M_safe = 0: nothing is safe to admit
    assert limits.max_active_seqs == 7


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("bucketserve:mem_safe_fraction=0", "mem_safe_fraction=0.0 is outside"),
        ("bucketserve:priority=edf", "must be one of online, sjf, ljf"),
        ("bucketserve:l_max=1", "l_max=1 is outside"),
    ],
)
def test_bad_bucketserve_parameters(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        build_policy(spec, CTX)
    assert fragment in str(info.value)
