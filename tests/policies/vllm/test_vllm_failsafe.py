"""Fault injection on the real vLLM scheduler: a bad policy never stops the engine."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")

from controlkit.contract import BatchLimits, Observation
from identification.errors import PolicyError
from policies.vllm.config import HookConfig
from policies.vllm.failsafe import FAULT_METRIC


class Faulty:
    """Cap 6 normally; on decisions in ``bad`` it misbehaves in the way named by ``mode``."""

    def __init__(self, mode: str, bad: range) -> None:
        self.mode, self.bad, self.n = mode, bad, 0

    def decide(self, observation: Observation) -> Any:
        n, self.n = self.n, self.n + 1
        if n not in self.bad:
            return BatchLimits(6, 512)
        if self.mode == "raise":
            raise ZeroDivisionError("policy bug")
        if self.mode == "nan":
            return BatchLimits(math.nan)  # type: ignore[arg-type]
        if self.mode == "huge":
            return BatchLimits(10**12, 10**15)
        if self.mode == "negative":
            return BatchLimits(-3)
        if self.mode == "wrong-type":
            return {"max_active_seqs": 3}
        if self.mode == "slow":
            time.sleep(0.004)
            return BatchLimits(1)
        raise AssertionError(self.mode)

    def reset(self) -> None:
        self.n = 0


def _fault_metric(kind: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(FAULT_METRIC, {"kind": kind}) or 0.0


@pytest.mark.parametrize(
    ("mode", "kind"),
    [("raise", "raised"), ("nan", "invalid"), ("huge", "invalid"), ("negative", "invalid"),
     ("wrong-type", "invalid"), ("slow", "slow")],
)
def test_faulty_policy_is_contained_and_the_engine_finishes_every_request(
    mode: str, kind: str, make_sched: Any, drive_fn: Any, request_fn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    policy = Faulty(mode, range(20, 60))
    budget_s = 0.002 if mode == "slow" else 0.5  # generous except where slowness is the fault
    sched = make_sched(
        ControlledScheduler, max_num_batched_tokens=8192,
        controlkit=HookConfig(policy=policy, decide_budget_s=budget_s),
    )
    before = _fault_metric(kind)
    arrivals = {0: [request_fn(f"f{i}", 80, 30) for i in range(40)]}
    with caplog.at_level(logging.WARNING, logger="controlkit.policies.vllm"):
        res = drive_fn(sched, arrivals, max_steps=1500)
    assert len(res.finished) == 40  # the engine kept running to completion
    guard = sched.controlkit.guard
    assert guard.faults[kind] >= 1 and guard.total_faults == guard.faults[kind]
    assert _fault_metric(kind) - before == guard.faults[kind]
    # the last safe limits held through the faults: the cap never left 6
    assert set(res.caps[1:]) == {6}
    assert sched.max_num_scheduled_tokens == 512
    # logged once, with the count, however many faults there were
    msgs = [r.getMessage() for r in caplog.records if "policy fault" in r.getMessage()]
    assert len(msgs) == 1 and f"({kind})" in msgs[0]
    if mode == "slow":  # slow decisions are amortised: the decision period grew
        assert guard.decide_every > 1
    else:
        assert guard.faults[kind] == 40


def test_static_fallback_applies_on_faults(make_sched: Any, drive_fn: Any, request_fn: Any) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    sched = make_sched(
        ControlledScheduler,
        controlkit=HookConfig(policy=Faulty("raise", range(10, 10**6)), fallback_max_seqs=3),
    )
    res = drive_fn(sched, {0: [request_fn(f"s{i}", 40, 20) for i in range(20)]}, max_steps=1000)
    assert len(res.finished) == 20
    assert set(res.caps[1:10]) == {6} and set(res.caps[11:]) == {3}


def _write_policy(path: Path, cap: int) -> None:
    path.write_text(json.dumps({"schema": "controlkit.policy/1", "kind": "static",
                                "params": {"max_num_seqs": cap}}))


def test_hot_reload_applies_a_good_file_and_keeps_the_old_policy_on_a_corrupt_one(
    make_sched: Any, drive_fn: Any, request_fn: Any, tmp_path: Path
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    pfile = tmp_path / "policy.json"
    _write_policy(pfile, 5)
    sched = make_sched(ControlledScheduler, controlkit=HookConfig(policy=str(pfile), reload_check_s=0.0))
    guard = sched.controlkit.guard
    stamp = [os.stat(pfile).st_mtime_ns]

    def touch_later(content: str | int) -> None:
        if isinstance(content, int):
            _write_policy(pfile, content)
        else:
            pfile.write_text(content)
        stamp[0] += 10**9  # a distinct mtime even on coarse file systems
        os.utime(pfile, ns=(stamp[0], stamp[0]))

    def on_step(step: int, _: Any) -> None:
        if step == 30:
            touch_later(9)
        elif step == 60:
            touch_later('{"schema": "controlkit.policy/1", "kind": "static", "params": {"max_num_seqs": ')
        elif step == 90:
            touch_later('{"schema": "controlkit.policy/1", "kind": "no-such-kind"}')

    arrivals = {0: [request_fn(f"h{i}", 40, 150) for i in range(30)]}
    res = drive_fn(sched, arrivals, max_steps=2000, on_step=on_step)
    assert len(res.finished) == 30
    assert set(res.caps[:30]) == {5}
    assert set(res.caps[30:]) == {9}  # the corrupt files at 60 and 90 kept the policy of 30
    assert guard.reloads == 1 and guard.faults["reload"] == 2


@pytest.mark.parametrize(
    ("source", "match"),
    [("static:max_num_seqs=0", "max_num_seqs"), ("no-such-kind", "unknown policy kind"),
     ("/nonexistent/policy.json", "not found")],
)
def test_bad_policy_at_start_is_a_clear_error(source: str, match: str, make_sched: Any) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    with pytest.raises(PolicyError, match=match):
        make_sched(ControlledScheduler, controlkit=HookConfig(policy=source))


def test_corrupt_policy_file_at_start_names_the_file_and_line(make_sched: Any, tmp_path: Path) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "controlkit.policy/1",\n "kind": "static",\n "params": {,}}')
    with pytest.raises(PolicyError, match=r"bad\.json: line 3"):
        make_sched(ControlledScheduler, controlkit=HookConfig(policy=str(bad)))


def test_static_spec_from_the_environment_caps_the_engine(
    make_sched: Any, drive_fn: Any, request_fn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    monkeypatch.setenv("CONTROLKIT_POLICY", "static:max_num_seqs=7")
    sched = make_sched(ControlledScheduler)
    res = drive_fn(sched, {0: [request_fn(f"e{i}", 30, 10) for i in range(25)]}, max_steps=500)
    assert max(res.running) == 7 and len(res.finished) == 25
