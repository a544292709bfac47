"""The static policy."""

from __future__ import annotations

import pytest

from controlkit.contract import BatchLimits, BatchPolicy, Observation
from identification.errors import PolicyError
from policies.registry import PolicyContext, build_policy
from policies.static import StaticParams, StaticPolicy


def obs(running: int) -> Observation:
    return Observation(t_s=0.0, num_running=running, num_waiting=3, kv_blocks_used=5, kv_blocks_total=10)


def test_static_defaults_to_the_engine_ceiling_and_never_changes() -> None:
    policy = build_policy("static", PolicyContext(max_num_seqs=128))
    assert isinstance(policy, BatchPolicy)
    assert [policy.decide(obs(r)).max_active_seqs for r in (0, 50, 500)] == [128, 128, 128]
    assert policy.decide(obs(1)) == BatchLimits(128, None)


def test_static_takes_both_knobs() -> None:
    policy = build_policy("static:max_num_seqs=64,max_num_batched_tokens=2048")
    assert policy.decide(obs(3)) == BatchLimits(64, 2048)
    policy.reset()
    assert policy.decide(obs(3)) == BatchLimits(64, 2048)


def test_static_from_a_mapping_policy_file() -> None:
    doc = {"schema": "controlkit.policy/1", "kind": "static", "params": {"max_num_seqs": 32.0}}
    policy = build_policy(doc)
    assert isinstance(policy, StaticPolicy)
    assert policy.limits.max_active_seqs == 32


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        (
            "static:max_num_seqs=0",
            "static: parameter max_num_seqs=0 is outside the allowed range [1, 1000000]",
        ),
        ("static:max_num_seqs=1.5", "max_num_seqs=1.5 must be an integer"),
        ("static:max_num_seqs=true", "max_num_seqs=True must be a number"),
        ("static:max_num_seqs=512", "above the engine's max_num_seqs=256"),
        ("static:max_num_batched_tokens=-1", "max_num_batched_tokens=-1 is outside"),
        (
            "static:max_seqs=4",
            "unknown parameter 'max_seqs'; valid parameters: max_num_batched_tokens, max_num_seqs",
        ),
    ],
)
def test_static_refuses_bad_parameters(spec: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        build_policy(spec)
    assert fragment in str(info.value)


def test_params_dataclass_checks_on_direct_construction() -> None:
    with pytest.raises(PolicyError, match="max_num_seqs=0"):
        StaticParams(max_num_seqs=0)
