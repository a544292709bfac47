"""Typed params of the designed kinds and the controlkit.policy/1 -> /2 reader."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from controlkit.policyfile import POLICY_SCHEMA, PolicyFile, load_policy_file
from controlkit.policyparams import MpcParams, OptimalParams, PidParams
from controlkit.sim import SLO, load_plant, load_workload, simulate
from identification.errors import PolicyError
from policies import build_policy
from policies.registry import PolicyContext

FIXTURES = Path(__file__).parents[1] / "fixtures" / "policies"
KINDS = ("pid", "optimal", "mpc")


def _v1(kind: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((FIXTURES / f"bca_background_{kind}.json").read_text())
    assert doc["schema"] == "controlkit.policy/1"
    return doc


def _keys(doc: Any, prefix: str = "") -> set[str]:
    if not isinstance(doc, dict):
        return set()
    out = set()
    for k, v in doc.items():
        out.add(prefix + k)
        out |= _keys(v, f"{prefix}{k}.")
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_v1_files_are_read_and_written_back_as_v2_with_each_quantity_once(kind: str, tmp_path: Path) -> None:
    pf = PolicyFile.from_dict(_v1(kind))
    doc = pf.to_dict()
    assert doc["schema"] == POLICY_SCHEMA == "controlkit.policy/2"
    keys = _keys(doc["params"])
    for repeated in ("setpoint_s", "tpot_target_s", "model.tpot_target_s", "max_batched_tokens",
                     "controller.rate_limit", "controller.sample_period_s", "operating_point"):
        assert repeated not in keys, repeated
    assert doc["limits"]["max_batched_tokens"] == _v1(kind)["limits"]["max_batched_tokens"]
    path = tmp_path / "p.json"
    pf.save(path)
    again = load_policy_file(path)
    assert again.to_dict() == doc  # /2 round-trips unchanged
    typed = again.typed_params()
    assert isinstance(typed, {"pid": PidParams, "optimal": OptimalParams, "mpc": MpcParams}[kind])
    assert typed.tpot_target_s == pytest.approx(0.9 * 0.05, rel=1e-12)


def test_the_pid_gains_the_runtime_steps_come_from_the_one_rate_limit_and_period() -> None:
    pf = PolicyFile.from_dict(_v1("pid"))
    typed = pf.typed_params()
    doc = typed.controller_doc()
    assert doc["rate_limit"] == pf.limits["rate_limit"] and doc["sample_period_s"] == pf.sample_period_s
    assert doc["kp"] == _v1("pid")["params"]["controller"]["kp"]


@pytest.mark.parametrize(
    ("kind", "path", "value", "names"),
    [
        ("pid", ("params", "setpoint_s"), 0.04, "params.setpoint_s"),
        ("pid", ("params", "controller", "rate_limit"), 3, "params.controller.rate_limit"),
        ("pid", ("params", "controller", "sample_period_s"), 0.5, "params.controller.sample_period_s"),
        ("pid", ("params", "max_batched_tokens"), 17, "params.max_batched_tokens"),
        ("optimal", ("params", "model", "tpot_target_s"), 0.01, "params.model.tpot_target_s"),
    ],
)
def test_a_v1_file_whose_repeated_values_disagree_is_refused_naming_both(
    kind: str, path: tuple[str, ...], value: Any, names: str
) -> None:
    doc = _v1(kind)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    if kind == "optimal":  # optimal /1 files state no target_fraction: a different target implies one
        doc["params"]["target_fraction"] = 0.9
    with pytest.raises(PolicyError, match=names.replace(".", r"\.")):
        PolicyFile.from_dict(doc, source="edited.json")


@pytest.mark.parametrize(
    ("field", "value"),
    [("target_fraction", True), ("target_fraction", 1.5), ("priority", 3), ("reference_batch", 2.5),
     ("tuning", "magic"), ("nonsense", 1)],
)
def test_typed_params_refuse_bad_fields_by_name(field: str, value: Any) -> None:
    doc = PolicyFile.from_dict(_v1("pid")).to_dict()
    doc["params"][field] = value
    with pytest.raises(PolicyError, match=field):
        build_policy(PolicyFile.from_dict(doc))


def test_guard_and_model_sections_are_typed() -> None:
    doc = PolicyFile.from_dict(_v1("optimal")).to_dict()
    doc["params"]["guard"]["kv_headroom"] = "lots"
    with pytest.raises(PolicyError, match=r"params\.guard\.kv_headroom"):
        PolicyFile.from_dict(doc).typed_params()
    doc = PolicyFile.from_dict(_v1("optimal")).to_dict()
    del doc["params"]["model"]["intercept_s"]
    with pytest.raises(PolicyError, match=r"params\.model\.intercept_s"):
        PolicyFile.from_dict(doc).typed_params()


@pytest.mark.parametrize("kind", KINDS)
def test_a_v1_file_and_its_v2_form_run_identically(kind: str) -> None:
    plant = load_plant("vllm-h100:llama-2-7b")
    ctx = PolicyContext(kv_blocks_total=plant.kv_blocks_total, block_size=plant.block_size, max_num_seqs=256,
                        max_batched_tokens=8192, max_model_len=plant.max_model_len)
    v1 = _v1(kind)
    v2 = PolicyFile.from_dict(v1).to_dict()
    runs = []
    for doc in (v1, v2):
        wl = load_workload("sharegpt:poisson:12", num_requests=120, seed=3)
        res = simulate(plant, wl, build_policy(doc, ctx), slo=SLO(ttft_s=2.0, tpot_s=0.05), max_num_seqs=256,
                       seed=3)
        runs.append(res.metrics.to_dict())
    assert runs[0] == runs[1]
