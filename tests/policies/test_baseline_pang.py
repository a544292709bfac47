"""Pang et al. Algorithms 1 and 2 against hand-computed sequences (SEEDS.md §1.3, §1.4)."""

from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.baselines.pang import (
    CombinedParams,
    CombinedPolicy,
    MemoryAwareParams,
    MemoryAwarePolicy,
    SlaFeedbackParams,
    SlaFeedbackPolicy,
)
from policies.registry import PolicyContext, build_policy

CTX = PolicyContext(kv_blocks_total=1000, max_num_seqs=256)


def obs(
    running: int, waiting: int, used: int = 0, total: int = 1000, itl: float = 0.0, step: float = 0.0
) -> Observation:
    return Observation(
        t_s=0.0,
        num_running=running,
        num_waiting=waiting,
        kv_blocks_used=used,
        kv_blocks_total=total,
        itl_mean_s=itl,
        last_step_s=step,
    )


def test_memory_aware_follows_the_readme_rule_step_by_step() -> None:
    policy = MemoryAwarePolicy(
        MemoryAwareParams(memory_factor=0.9, batch_size_lower=4, batch_size_upper=200), CTX
    )
    caps = [
        policy.decide(o).max_active_seqs
        for o in [
            obs(0, 3),  # no running: hold the initial cap = upper = 200
            obs(10, 5, used=200),  # bps = 20; floor(900 / 20) = 45; max(45, 10) = 45
            obs(10, 0, used=300),  # no waiting: hold 45
            obs(40, 3, used=700),  # bps = 17.5; floor(900 / 17.5) = floor(51.43) = 51
            obs(190, 1, used=950),  # bps = 5; floor(180) = 180 < running 190 -> 190
            obs(250, 1, used=990),  # bps = 3.96; 227 -> running 250 -> upper 200 wins
            obs(1, 1, used=999),  # bps = 999; floor(0.9) = 0 -> running 1 -> lower 4
        ]
    ]
    assert caps == [200, 45, 45, 51, 190, 200, 4]
    policy.reset()
    assert policy.decide(obs(0, 0)).max_active_seqs == 200


def test_memory_aware_holds_when_no_blocks_are_reported() -> None:
    policy = MemoryAwarePolicy(MemoryAwareParams(batch_size_upper=64), CTX)
    assert policy.decide(obs(10, 5, used=0)).max_active_seqs == 64


def test_sla_feedback_follows_the_interval_rule_step_by_step() -> None:
    params = SlaFeedbackParams(sla_s=0.05, eps_s=0.01, alpha=20, delta=5, b_min=1, b_max=100, window=2)
    policy = SlaFeedbackPolicy(params, CTX)
    seq = [
        # (obs, expected cap, (low, high) after the step)
        # no sample: midpoint of [1, 100] = 50
        (obs(0, 9), 50, (1, 100)),
        # tau=.08 > .06: high = max(60, 1+20) = 60, low = max(1-5, 1) = 1; mid 30; floor N^d = 60
        (obs(60, 9, itl=0.08), 60, (1, 60)),
        # tau=.075, b=50: high = max(50, 21) = 50, low = 1; mid 25; floor N^d = 40
        (obs(40, 9, itl=0.07), 40, (1, 50)),
        # tau=.05 in band, b=30: high = 30+10 = 40, low = 30-10 = 20; mid 30
        (obs(20, 9, itl=0.03), 30, (20, 40)),
        # tau=.025 < .04, b=15: low = min(15, 40-20) = 15, high = min(45, 100) = 45; mid 30
        (obs(10, 9, itl=0.02), 30, (15, 45)),
        # tau=.02, b=20: low = min(20, 45-20) = 20, high = 50; mid 35
        (obs(30, 9, itl=0.02), 35, (20, 50)),
        # no sample: hold [20, 50]; mid 35 < N^d 36
        (obs(36, 9), 36, (20, 50)),
    ]
    for o, cap, interval in seq:
        assert policy.decide(o).max_active_seqs == cap
        assert (policy.low, policy.high) == pytest.approx(interval)


def test_sla_feedback_step_signal_uses_last_step_time() -> None:
    params = SlaFeedbackParams(signal="step", b_max=100, alpha=20, delta=5)
    policy = SlaFeedbackPolicy(params, CTX)
    # itl is ignored; step .2 > .06: high = max(10, 21) = 21, low = 1 -> mid 11
    assert policy.decide(obs(10, 1, itl=0.001, step=0.2)).max_active_seqs == 11


def test_sla_feedback_caps_at_b_max_even_with_many_running() -> None:
    policy = SlaFeedbackPolicy(SlaFeedbackParams(b_max=50), CTX)
    assert policy.decide(obs(80, 1, itl=0.01)).max_active_seqs == 50


def test_combined_takes_the_smaller_of_memory_and_sla_caps() -> None:
    params = CombinedParams(memory_factor=0.5, b_max=100)
    policy = CombinedPolicy(params, CTX)
    # A1: bps 10 -> floor(500/10) = 50.  A2: tau .02 < .04, b 10: low = 10, high = 100 -> 55.  min = 50
    assert policy.decide(obs(10, 5, used=100, itl=0.02)).max_active_seqs == 50
    # A1: bps 20 -> 25 -> running 30.  A2: b = 20: low = 20, high = 100 -> 60.  min = 30, floor 30
    assert policy.decide(obs(30, 5, used=600, itl=0.02)).max_active_seqs == 30
    # A1 holds 30 (no waiting).  A2: tau = .14/3 = .0467 in band, b = 20: [10, 30] -> 20
    assert policy.decide(obs(20, 0, used=300, itl=0.1)).max_active_seqs == 20
    policy.reset()
    assert (policy.sla.low, policy.sla.high) == (1.0, 100.0)


def test_spec_strings_build_each_pang_kind() -> None:
    a2 = build_policy("pang-a2:sla_s=0.05,eps_s=0.005,alpha=8", CTX)
    assert isinstance(a2, SlaFeedbackPolicy)
    assert a2.params.alpha == 8
    assert isinstance(build_policy("pang-a1:memory_factor=0.9", CTX), MemoryAwarePolicy)
    assert isinstance(build_policy("pang-a1a2:sla_s=0.1,memory_factor=0.8", CTX), CombinedPolicy)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("pang-a1:memory_factor=1.5", "memory_factor=1.5 is outside the allowed range [0.01, 1.0]"),
        ("pang-a1:batch_size_lower=50,batch_size_upper=10", "batch_size_lower=50 must be <="),
        ("pang-a1:batch_size_upper=300", "above the engine's max_num_seqs=256"),
        ("pang-a2:sla_s=-1", "sla_s=-1.0 is outside"),
        ("pang-a2:alpha=2.5", "alpha=2.5 must be an integer"),
        ("pang-a2:signal=ttft", "must be one of itl, step"),
        ("pang-a2:initial_low=50,initial_high=10", "initial interval [50, 10]"),
        ("pang-a2:b_min=300", "b_min=300 is above b_max=256"),
        ("pang-a1a2:memory_fator=0.9", "unknown parameter 'memory_fator'"),
    ],
)
def test_bad_parameters_are_refused_with_the_name_and_range(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        build_policy(spec, CTX)
    assert fragment in str(info.value)
