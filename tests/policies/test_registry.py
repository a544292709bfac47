"""The registry with every policy kind: spec parsing, errors, and contract properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, BatchPolicy, Observation, sanitize_limits
from controlkit.policyfile import PolicyFile
from identification.errors import PolicyError
from policies.registry import PolicyContext, available_kinds, build_policy, parse_spec

SEED_KINDS = (
    "static",
    "pang-a1",
    "pang-a2",
    "pang-a1a2",
    "trtllm-tuner",
    "sglang-ratio",
    "bucketserve",
    "uellm",
    "bca",
)
# Specs covering the non-default branches too.
SPECS = (
    "static",
    "static:max_num_seqs=7,max_num_batched_tokens=512",
    "pang-a1",
    "pang-a1:memory_factor=0.5,batch_size_lower=3,batch_size_upper=40",
    "pang-a2",
    "pang-a2:sla_s=0.02,eps_s=0.002,alpha=4,delta=2,window=3,signal=step",
    "pang-a1a2:sla_s=0.03,memory_factor=0.8,alpha=6",
    "trtllm-tuner:window=4,tune_max_num_tokens=true",
    "trtllm-tuner:avg_input_tokens=300,avg_output_tokens=200",
    "sglang-ratio",
    "sglang-ratio:max_new_tokens=64,decay_steps=5",
    "bucketserve",
    "bucketserve:priority=sjf,token_budget=true,l_max=512",
    "uellm",
    "uellm:mode=wave,group_cap=4,threshold=100",
    "bca:b_opt=5",
)
CTX = PolicyContext(
    kv_blocks_total=2000, block_size=16, max_num_seqs=64, max_batched_tokens=4096, max_model_len=2048
)


def test_every_research_kind_is_registered() -> None:
    assert set(SEED_KINDS) <= set(available_kinds())


def test_spec_parsing_gives_kind_and_typed_params() -> None:
    pf = parse_spec("pang-a2:sla_s=0.05,alpha=8,signal=step")
    assert pf == PolicyFile(kind="pang-a2", params={"sla_s": 0.05, "alpha": 8, "signal": "step"})
    policy = build_policy("pang-a2:sla_s=0.05")
    assert isinstance(policy, BatchPolicy)


def test_unknown_kind_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError, match=r"unknown policy kind 'pang-a3'; known kinds: .*pang-a1a2"):
        build_policy("pang-a3")


def test_bad_value_names_parameter_value_and_range() -> None:
    with pytest.raises(
        PolicyError, match=r"pang-a2: parameter sla_s=0.0 is outside the allowed range \[1e-06, 1000"
    ):
        build_policy("pang-a2:sla_s=0")
    with pytest.raises(PolicyError, match="not of the form key=value"):
        build_policy("pang-a2:sla_s")


@pytest.mark.parametrize("spec", SPECS)
def test_every_kind_builds_from_a_spec_and_a_policy_file(spec: str, tmp_path: object) -> None:
    pf = parse_spec(spec)
    a, b = build_policy(spec, CTX), build_policy(pf.to_dict(), CTX)
    o = Observation(t_s=0.0, num_running=3, num_waiting=2, kv_blocks_used=50, kv_blocks_total=2000)
    assert a.decide(o) == b.decide(o)


def observations() -> st.SearchStrategy[list[Observation]]:
    def one(draw: st.DrawFn) -> Observation:
        total = draw(st.integers(1, 5000))
        used = draw(st.integers(0, total))
        waiting = draw(st.lists(st.integers(1, 4096), max_size=12))
        return Observation(
            t_s=0.0,
            num_running=draw(st.integers(0, 300)),
            num_waiting=len(waiting) + draw(st.integers(0, 5)),
            kv_blocks_used=used,
            kv_blocks_total=total,
            num_prefill_tokens=draw(st.integers(0, 8192)),
            num_decode_tokens=draw(st.integers(0, 300)),
            num_context_tokens=draw(st.integers(0, 200_000)),
            last_step_s=draw(st.floats(0.0, 2.0)),
            num_preempted=draw(st.integers(0, 5)),
            num_finished=draw(st.integers(0, 20)),
            itl_mean_s=draw(st.floats(0.0, 2.0)),
            oldest_wait_s=draw(st.floats(0.0, 100.0)),
            waiting_prompt_tokens=tuple(waiting),
        )

    return st.lists(st.composite(one)(), min_size=1, max_size=25)


@pytest.mark.parametrize("spec", SPECS)
@given(seq=observations())
def test_every_policy_stays_in_range_and_is_deterministic_after_reset(
    spec: str, seq: list[Observation]
) -> None:
    policy = build_policy(spec, CTX)
    first = [policy.decide(o) for o in seq]
    for limits, o in zip(first, seq, strict=True):
        assert isinstance(limits, BatchLimits)
        assert 1 <= limits.max_active_seqs <= CTX.max_num_seqs
        assert limits.max_batched_tokens is None or 1 <= limits.max_batched_tokens <= CTX.max_batched_tokens
        if limits.admission_order:
            assert sorted(limits.admission_order) == list(range(len(o.waiting_prompt_tokens)))
        # the engine adapter accepts it unchanged
        safe = sanitize_limits(
            limits, last_safe=BatchLimits(1), max_seqs_ceiling=CTX.max_num_seqs, num_waiting=o.num_waiting
        )
        assert safe.fault == "" and safe.limits == limits
    policy.reset()
    assert [policy.decide(o) for o in seq] == first
    fresh = build_policy(spec, CTX)
    assert [fresh.decide(o) for o in seq] == first


def test_docs_parameter_tables_match_the_declarations() -> None:
    from pathlib import Path

    from policies.baselines._params import param_table
    from policies.baselines.bca import BcaParams
    from policies.baselines.bucketserve import BucketServeParams
    from policies.baselines.pang import CombinedParams, MemoryAwareParams, SlaFeedbackParams
    from policies.baselines.sglang import NewTokenRatioParams
    from policies.baselines.trtllm import TrtllmTunerParams
    from policies.baselines.uellm import UellmParams
    from policies.static import StaticParams

    doc = (Path(__file__).resolve().parents[2] / "docs" / "policies.md").read_text()
    for cls in (
        StaticParams,
        MemoryAwareParams,
        SlaFeedbackParams,
        CombinedParams,
        TrtllmTunerParams,
        NewTokenRatioParams,
        BucketServeParams,
        UellmParams,
        BcaParams,
    ):
        assert param_table(cls) in doc, f"docs/policies.md is out of date for {cls.__name__}"
