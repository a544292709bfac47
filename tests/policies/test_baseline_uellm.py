"""UELLM SLO-ODBS grouping against hand-computed cases."""

from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.baselines.uellm import UellmParams, UellmPolicy, form_groups
from policies.registry import PolicyContext, build_policy

CTX = PolicyContext(max_num_seqs=256)
PARAMS = UellmParams(a=1.0, b=0.5, overhead=1.2, threshold=100.0, group_cap=3, slo_s=10.0)


def obs(running: int, waiting: tuple[int, ...], oldest_wait_s: float = 4.0) -> Observation:
    return Observation(
        t_s=100.0,
        num_running=running,
        num_waiting=len(waiting),
        kv_blocks_used=0,
        kv_blocks_total=100,
        oldest_wait_s=oldest_wait_s,
        waiting_prompt_tokens=waiting,
    )


def test_official_grouping_rule() -> None:
    # 10 opens; 12: (12-10)*2*1.2 = 4.8 joins; 40: (40-12)*3*1.2 = 100.8 > 100 closes;
    # 50: (50-40)*2*1.2 = 24 joins; 200: group of 2 < 3 but (200-50)*3*1.2 = 540 closes
    assert form_groups([10, 12, 40, 50, 200], cap=3, threshold=100, overhead=1.2) == [[0, 1], [2, 3], [4]]
    # the size cap closes a group even when lengths are equal
    assert form_groups([5, 5, 5, 5], cap=3, threshold=0, overhead=1.2) == [[0, 1, 2], [3]]
    assert form_groups([], cap=3, threshold=0, overhead=1.2) == []


def test_backfill_admits_the_head_group_in_sorted_order() -> None:
    policy = UellmPolicy(PARAMS, CTX)
    # ages 4, 3, 2, 1, 0 -> keys (10 - age) + 0.5 * L: 31, 12, 108, 15, 30
    # sorted: 1 (12), 3 (15), 4 (30), 0 (31), 2 (108); predicted 10, 12, 40, 50, 200
    # head group = [1, 3] (see test_official_grouping_rule) -> cap 2 + 2
    limits = policy.decide(obs(2, (50, 10, 200, 12, 40)))
    assert limits.admission_order == (1, 3, 4, 0, 2)
    assert limits.max_active_seqs == 4
    # empty queue: room for one group
    assert policy.decide(obs(2, ())).max_active_seqs == 5


def test_wave_mode_waits_for_the_batch_to_drain() -> None:
    policy = build_policy("uellm:mode=wave,threshold=100,group_cap=3", CTX)
    assert policy.decide(obs(2, (50, 10, 200, 12, 40))).max_active_seqs == 2
    assert policy.decide(obs(0, (50, 10, 200, 12, 40))).max_active_seqs == 2
    assert policy.decide(obs(0, ())).max_active_seqs == 3


def test_slo_urgency_reorders_the_queue() -> None:
    # with a = 100, the oldest request (age 4) sorts first despite its length
    policy = UellmPolicy(UellmParams(a=100.0, b=0.5, threshold=1e9, group_cap=2), CTX)
    limits = policy.decide(obs(0, (300, 10)))
    # keys: 100*(10-4) + 150 = 750 ; 100*(10-0) + 5 = 1005
    assert limits.admission_order == (0, 1)
    assert limits.max_active_seqs == 2


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("uellm:group_cap=0", "group_cap=0 is outside"),
        ("uellm:mode=static", "must be one of backfill, wave"),
        ("uellm:slo=5", "unknown parameter 'slo'"),
    ],
)
def test_bad_uellm_parameters(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        build_policy(spec, CTX)
    assert fragment in str(info.value)
