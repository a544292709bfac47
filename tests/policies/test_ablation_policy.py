from __future__ import annotations

import pytest

from controlkit.contract import Observation
from identification.errors import PolicyError
from policies.registry import PolicyContext, build_policy


def test_static_guard_keeps_its_cap_when_memory_is_plentiful() -> None:
    p = build_policy("static-guard:max_num_seqs=64,ttft_s=2.0")
    assert p.decide(Observation(0.0, 4, 0, 10, 100_000)).max_active_seqs == 64


def test_static_guard_lowers_the_cap_when_predicted_kv_would_overflow() -> None:
    # the sum bound, by hand: 2 running with 256 output tokens still to grow: 2 * 16 blocks
    # reserved on top of 20 used; each admission takes 4 prompt blocks + 16 growth blocks,
    # capacity 100 (no headroom): 20 + 32 + 20a <= 100 -> a = 2, so the cap is 2 + 2 = 4.
    from controlkit.admission import AdmissionGuard

    obs = Observation(0.0, 2, 3, 20, 100, waiting_prompt_tokens=(64, 64, 64), waiting_age_s=(0.1, 0.1, 0.1))
    g = AdmissionGuard(ttft_slo_s=2.0, output_tokens_mean=256.0, kv_headroom=0.0, peak_z=None)
    assert g.plan(obs, 64).cap == 4
    # static-guard uses the expected-peak bound (completions free blocks): it admits more, but
    # still not everything when memory is tight
    p = build_policy("static-guard:max_num_seqs=64,ttft_s=2.0,kv_headroom=0.0")
    tight = Observation(0.0, 2, 3, 20, 40, waiting_prompt_tokens=(64, 64, 64), waiting_age_s=(0.1, 0.1, 0.1))
    out = p.decide(tight)
    assert 2 <= out.max_active_seqs < 5
    assert "memory_guard" in out.flags
    assert p.decide(obs).max_active_seqs >= 4


def test_static_guard_demotes_requests_past_their_deadline_and_drops_none() -> None:
    p = build_policy("static-guard:max_num_seqs=64,ttft_s=2.0")
    obs = Observation(0.0, 2, 3, 20, 100_000, waiting_prompt_tokens=(64, 64, 64), waiting_age_s=(5.0, 0.5, 0.1))
    out = p.decide(obs)
    assert out.admission_order == (1, 2, 0)
    assert "infeasible" in out.flags


@pytest.mark.parametrize(
    "spec",
    ["static-guard:max_num_seqs=0", "static-guard:max_num_seqs=2.5", "static-guard:ttft_s=-1",
     "static-guard:kv_headroom=1.5", "static-guard:nonsense=1", "static-guard:max_num_seqs=4096"],
)
def test_static_guard_rejects_bad_parameters(spec: str) -> None:
    with pytest.raises(PolicyError, match="static-guard"):
        build_policy(spec, PolicyContext(max_num_seqs=256))
