"""The hook's vLLM-free parts: the policy guard, the step-log writer, the hook settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.contract import BatchLimits, Observation, sanitize_limits
from identification.errors import PolicyError
from policies.vllm.config import HookConfig
from policies.vllm.failsafe import PolicyGuard
from policies.vllm.steplog import STEP_LOG_FIELDS, StepLogWriter

OBS = Observation(t_s=0.0, num_running=3, num_waiting=1, kv_blocks_used=5, kv_blocks_total=100)


class Replay:
    """Returns the queued values in turn."""

    def __init__(self, *values: Any) -> None:
        self.values, self.calls = list(values), 0

    def decide(self, observation: Observation) -> Any:
        self.calls += 1
        return self.values.pop(0)

    def reset(self) -> None:
        pass


values = st.one_of(
    st.integers(-5, 600), st.floats(allow_nan=True, allow_infinity=True), st.booleans(), st.none(),
)
limits = st.builds(
    BatchLimits, max_active_seqs=values, max_batched_tokens=st.one_of(st.none(), values),
    flags=st.frozensets(st.sampled_from(["a", "b"])),
)


@given(raw=st.one_of(limits, values), start=st.integers(1, 64))
def test_guard_applies_exactly_what_sanitize_limits_allows(raw: Any, start: int) -> None:
    last = BatchLimits(start, 2048)
    guard = PolicyGuard(Replay(raw), fallback=last, max_seqs_ceiling=256, max_batched_tokens_ceiling=4096,
                        min_batched_tokens=64, log=False)
    got = guard.decide(OBS)
    ref = sanitize_limits(raw, last_safe=last, max_seqs_ceiling=256, min_batched_tokens=64,
                          max_batched_tokens_ceiling=4096)
    expected = ref.limits
    if not ref.fault and expected.max_batched_tokens is None:
        expected = BatchLimits(expected.max_active_seqs, 2048, expected.admission_order, expected.flags)
    assert got == expected
    assert (guard.total_faults == 1) == bool(ref.fault)


def test_guard_decides_every_k_steps_and_holds_the_limits_in_between() -> None:
    policy = Replay(*(BatchLimits(c) for c in (5, 6, 7)))
    guard = PolicyGuard(policy, fallback=BatchLimits(8, 512), max_seqs_ceiling=16, decide_every=3, log=False)
    caps = [guard.decide(OBS).max_active_seqs for _ in range(9)]
    assert caps == [5, 5, 5, 6, 6, 6, 7, 7, 7] and policy.calls == 3


def test_slow_policy_doubles_the_decision_period_up_to_the_bound() -> None:
    ticks = iter(range(1000))

    def clock() -> float:
        return float(next(ticks))  # every decide "takes" 1 s

    policy = Replay(*(BatchLimits(3) for _ in range(100)))
    guard = PolicyGuard(policy, fallback=BatchLimits(8), max_seqs_ceiling=16, decide_budget_s=0.5,
                        max_decide_every=8, clock=clock, log=False)
    caps = [guard.decide(OBS).max_active_seqs for _ in range(40)]
    assert set(caps) == {8}  # slow answers are discarded
    assert guard.decide_every == 8 and guard.faults["slow"] == policy.calls
    assert policy.calls < 10  # 1 + 1 + 1 + ... amortised, not 40


@pytest.mark.parametrize(
    ("env", "match"),
    [({"CONTROLKIT_DECIDE_EVERY": "0"}, "CONTROLKIT_DECIDE_EVERY='0'"),
     ({"CONTROLKIT_DECIDE_EVERY": "often"}, "not an integer"),
     ({"CONTROLKIT_DECIDE_BUDGET_S": "nan"}, "CONTROLKIT_DECIDE_BUDGET_S"),
     ({"CONTROLKIT_FALLBACK_MAX_SEQS": "-1"}, "CONTROLKIT_FALLBACK_MAX_SEQS")],
)
def test_bad_hook_settings_name_the_variable(env: dict[str, str], match: str) -> None:
    with pytest.raises(PolicyError, match=match):
        HookConfig.from_sources(env)


def test_additional_config_wins_over_the_environment() -> None:
    cfg = HookConfig.from_sources(
        {"CONTROLKIT_POLICY": "static:max_num_seqs=4", "CONTROLKIT_STEP_LOG": "/tmp/a.jsonl"},
        {"controlkit": {"policy": "/etc/p.json", "decide_budget_s": 0.001}},
    )
    assert (cfg.policy, cfg.step_log, cfg.decide_budget_s) == ("/etc/p.json", "/tmp/a.jsonl", 0.001)
    with pytest.raises(PolicyError, match="must be an object"):
        HookConfig.from_sources({}, {"controlkit": "p.json"})


def _record(i: int) -> tuple[float | int, ...]:
    return (i * 0.01, 0.01, 4, 1, 0, 4, 10, 100, 0, 160, 8, 2048)


def test_step_log_rotates_and_every_file_starts_with_its_header(tmp_path: Path) -> None:
    path = tmp_path / "steps.jsonl"
    writer = StepLogWriter(path, header={"block_size": 16}, buffer_steps=7, max_bytes=4096, backups=2)
    for i in range(200):
        writer.write(_record(i))
    writer.close()
    writer.write(_record(999))  # ignored after close
    files = [path, path.with_name("steps.jsonl.1"), path.with_name("steps.jsonl.2")]
    assert all(f.exists() for f in files) and not path.with_name("steps.jsonl.3").exists()
    assert writer.rotations >= 3 and writer.steps_written == 200
    seen: list[float] = []
    for f in reversed(files):
        lines = f.read_text().splitlines()
        header = json.loads(lines[0])
        assert header["schema"] == "controlkit.steps/1" and header["fields"] == list(STEP_LOG_FIELDS)
        assert f.stat().st_size <= 4096
        seen += [json.loads(x)["t_s"] for x in lines[1:]]
    # the newest records survive, in order, without gaps
    assert seen == [i * 0.01 for i in range(200 - len(seen), 200)]


@pytest.mark.parametrize("module", ["policies.vllm.failsafe", "policies.vllm.steplog", "policies.vllm.config"])
def test_docstring_examples_of_the_vllm_free_hook_modules(module: str) -> None:
    # The root conftest keeps policies/vllm/* out of doctest collection (scheduler.py imports
    # vLLM); these three modules do not, so their examples run here.
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_importing_the_adapter_package_does_not_import_vllm() -> None:
    import subprocess
    import sys

    code = "import sys, policies, policies.vllm, policies.export; assert 'vllm' not in sys.modules, 'vllm imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_decide_period_spaces_decisions_in_time_and_skips_cost_nothing() -> None:
    now = [0.0]
    policy = Replay(*(BatchLimits(c) for c in range(1, 50)))
    guard = PolicyGuard(policy, fallback=BatchLimits(8), max_seqs_ceiling=64, decide_period_s=0.05,
                        clock=lambda: now[0], log=False)
    caps = []
    for _ in range(20):  # 20 steps of 10 ms: a decision every 5 steps
        caps.append(guard.decide(OBS).max_active_seqs)
        now[0] += 0.01
    assert caps == [1] * 5 + [2] * 5 + [3] * 5 + [4] * 5 and policy.calls == 4
    assert HookConfig.from_sources({"CONTROLKIT_DECIDE_PERIOD_S": "auto"}).decide_period_s == "auto"
    assert HookConfig.from_sources({"CONTROLKIT_DECIDE_PERIOD_S": "0"}).decide_period_s == 0.0
    with pytest.raises(PolicyError, match="seconds >= 0"):
        HookConfig.from_sources({"CONTROLKIT_DECIDE_PERIOD_S": "-1"})


def test_auto_decide_period_follows_the_policy_file_across_hot_reloads(tmp_path: Path) -> None:
    import os

    from controlkit.design import design_pid
    from controlkit.plant import DesignPlant
    from policies.registry import resolve_policy_file

    plant = DesignPlant.example()
    certified = design_pid(plant, 0.05, 2.0, method="simc").to_policy_file()
    path = tmp_path / "policy.json"
    resolve_policy_file("pang-a1").save(path)
    now = [0.0]
    guard = PolicyGuard(path, fallback=BatchLimits(8), max_seqs_ceiling=64, decide_period_s="auto",
                        reload_check_s=0.5, clock=lambda: now[0], log=False)
    assert guard.decide_period_s == 0.0  # a research policy decides every step
    certified.save(path)
    os.utime(path, ns=(10**18, 10**18))  # a new mtime even on coarse file systems
    now[0] = 1.0
    assert certified.sample_period_s > 0
    assert guard.maybe_reload() and guard.decide_period_s == pytest.approx(certified.sample_period_s)
    fixed = PolicyGuard(path, fallback=BatchLimits(8), max_seqs_ceiling=64, decide_period_s=0.2, log=False)
    assert fixed.decide_period_s == 0.2  # an explicit period is never overridden
    with pytest.raises(PolicyError, match="'auto' or a finite number"):
        PolicyGuard(path, fallback=BatchLimits(8), max_seqs_ceiling=64, decide_period_s="never", log=False)
