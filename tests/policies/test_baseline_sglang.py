"""SGLang new_token_ratio admission against hand-computed cases."""

from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.baselines.sglang import NewTokenRatioParams, NewTokenRatioPolicy
from policies.registry import PolicyContext, build_policy

CTX = PolicyContext(kv_blocks_total=101, max_num_seqs=256)


def obs(
    running: int,
    waiting: tuple[int, ...],
    used: int,
    *,
    decode: int = 0,
    preempted: int = 0,
    context: int = 0,
    num_waiting: int | None = None,
) -> Observation:
    return Observation(
        t_s=0.0,
        num_running=running,
        num_waiting=len(waiting) if num_waiting is None else num_waiting,
        kv_blocks_used=used,
        kv_blocks_total=101,
        num_decode_tokens=decode,
        num_preempted=preempted,
        num_context_tokens=context,
        waiting_prompt_tokens=waiting,
    )


def test_ratio_decays_jumps_on_retract_and_resets_when_idle() -> None:
    # init 0.7, min 0.7 * 0.14 = 0.098, decay (0.7 - 0.098) / 2 = 0.301 per decode step
    policy = NewTokenRatioPolicy(NewTokenRatioParams(max_new_tokens=100, decay_steps=2), CTX)
    # free 101*16 = 1616; reserve per new = 100*0.7 = 70; 270 and 370 fit (budget 976);
    # 976 // (mean 250 + 70) = 3 more -> cap 0 + 2 + 3 = 5
    assert policy.decide(obs(0, (200, 300), 0)).max_active_seqs == 5
    assert policy.ratio == pytest.approx(0.7)
    # decode step: ratio 0.399.  decoded = max(0, 640/2 - 400) = 0 -> running reserve 2*100*0.399 = 79.8
    # budget = 61*16 - 79.8 = 896.2; need 400 + 39.9 fits -> 456.3; 456.3 // 439.9 = 1 -> cap 2 + 2 = 4
    assert policy.decide(obs(2, (400,), 40, decode=2)).max_active_seqs == 4
    assert policy.ratio == pytest.approx(0.399)
    # retract: decoded per request = 1400/4 - mean(500, 100) = 50
    # ratio = min(1, (50*4 + 20*4) / (100*4 + 1)) = 280/401; budget = 176 - 4*50*0.698 = 36.3 < 569.8
    assert policy.decide(obs(4, (500, 100), 90, decode=4, preempted=1, context=1400)).max_active_seqs == 4
    assert policy.ratio == pytest.approx(280 / 401)
    # idle: reset to 0.7; nothing listed -> fallback prompt 512: 1616 // 582 = 2
    assert policy.decide(obs(0, (), 0)).max_active_seqs == 2
    assert policy.ratio == pytest.approx(0.7)


def test_ratio_never_decays_below_the_minimum() -> None:
    policy = NewTokenRatioPolicy(NewTokenRatioParams(decay_steps=3), CTX)
    for _ in range(10):
        policy.decide(obs(1, (10,), 5, decode=1))
    assert policy.ratio == pytest.approx(0.098)
    policy.reset()
    assert policy.ratio == pytest.approx(0.7)


def test_admission_stops_at_the_first_request_that_does_not_fit() -> None:
    policy = NewTokenRatioPolicy(NewTokenRatioParams(max_new_tokens=100), CTX)
    # budget 1616: 1000 + 70 fits (546 left); 900 + 70 does not -> stop, the 10-token one waits
    assert policy.decide(obs(0, (1000, 900, 10), 0)).max_active_seqs == 1


def test_conservativeness_scales_the_initial_ratio_and_caps_at_one() -> None:
    policy = build_policy("sglang-ratio:schedule_conservativeness=2.0", CTX)
    assert isinstance(policy, NewTokenRatioPolicy)
    assert policy.init_ratio == 1.0
    assert policy.min_ratio == pytest.approx(0.14)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("sglang-ratio:init_new_token_ratio=1.5", "init_new_token_ratio=1.5 is outside"),
        ("sglang-ratio:decay_steps=0", "decay_steps=0 is outside"),
        ("sglang-ratio:ratio=0.5", "unknown parameter 'ratio'"),
    ],
)
def test_bad_ratio_parameters(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        build_policy(spec, CTX)
    assert fragment in str(info.value)
