"""The vLLM config exporter: the documented mapping, the refusals, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlkit.app.cli import main
from controlkit.policyfile import PolicyFile
from identification.errors import ExportError
from policies.export import HOOK_SCHEDULER_CLS, check_vllm_limits, export_vllm_config, render_vllm_yaml


def _file(tmp_path: Path, **doc: Any) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"schema": "controlkit.policy/1", **doc}))
    return path


def test_static_policy_exports_its_cap_as_seqs_and_admission_cap() -> None:
    cfg = export_vllm_config("static:max_num_seqs=96,max_num_batched_tokens=4096")
    assert (cfg.max_num_seqs, cfg.max_num_active_seqs, cfg.max_num_batched_tokens) == (96, 96, 4096)
    assert cfg.enable_chunked_prefill and cfg.gpu_memory_utilization is None
    assert cfg.env() == {} and "scheduler_cls" not in cfg.engine_args()


def test_optimal_policy_file_exports_params_and_gpu_memory(tmp_path: Path) -> None:
    path = _file(tmp_path, kind="optimal", params={"max_num_seqs": 40, "max_batched_tokens": 6144,
                                                   "gpu_memory_utilization": 0.85})
    cfg = export_vllm_config(path)
    assert cfg.engine_args() == {
        "max_num_seqs": 40, "max_num_batched_tokens": 6144, "max_num_active_seqs": 40,
        "enable_chunked_prefill": True, "gpu_memory_utilization": 0.85,
    }


def test_pid_policy_exports_its_ceiling_and_reference_batch(tmp_path: Path) -> None:
    path = _file(tmp_path, kind="pid", params={"reference_batch": 24, "controller": {}},
                 limits={"b_min": 1, "b_max": 128})
    cfg = export_vllm_config(path, hook=True)
    assert (cfg.max_num_seqs, cfg.max_num_active_seqs, cfg.max_num_batched_tokens) == (128, 24, 2048)
    assert cfg.engine_args()["scheduler_cls"] == HOOK_SCHEDULER_CLS
    assert cfg.env() == {"CONTROLKIT_POLICY": str(path.resolve())}
    assert f"--scheduler-cls {HOOK_SCHEDULER_CLS}" in " ".join(cfg.cli_args())


def test_mpc_policy_exports_its_largest_token_budget(tmp_path: Path) -> None:
    path = _file(tmp_path, kind="mpc", params={"cap_upper": 200, "budgets": [512, 8192, 2048]},
                 limits={"b_min": 2, "b_max": 256, "rate_limit": 8})
    cfg = export_vllm_config(path)
    assert (cfg.max_num_seqs, cfg.max_num_active_seqs, cfg.max_num_batched_tokens) == (200, 200, 8192)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_num_seqs": 64, "max_num_batched_tokens": 32, "max_num_active_seqs": 8}, "below max_num_seqs"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_num_active_seqs": 9}, "exceeds max_num_seqs"),
        ({"max_num_seqs": 0, "max_num_batched_tokens": 64, "max_num_active_seqs": 1}, "max_num_seqs=0"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_num_active_seqs": 0},
         "max_num_active_seqs=0"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 2048, "max_num_active_seqs": 8,
          "enable_chunked_prefill": False, "max_model_len": 4096}, "below max_model_len=4096"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 2048, "max_num_active_seqs": 8,
          "enable_chunked_prefill": False}, "pass --max-model-len"),
        ({"max_num_seqs": 8, "max_num_batched_tokens": 64, "max_num_active_seqs": 8,
          "gpu_memory_utilization": 1.5}, r"gpu_memory_utilization=1.5 must be in \(0, 1\]"),
    ],
)
def test_exporter_refuses_what_vllm_rejects(kwargs: dict[str, Any], match: str) -> None:
    full = {"enable_chunked_prefill": True, "max_model_len": None, **kwargs}
    with pytest.raises(ExportError, match=match):
        check_vllm_limits(**full)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ({"kind": "pang-a2", "params": {"sla_s": 0.05}}, "names no batch cap"),
        ({"kind": "static", "params": {"max_num_seqs": 2.5}}, "whole number"),
        ({"kind": "static", "params": {"max_num_seqs": 8, "enable_chunked_prefill": "yes"}}, "true or false"),
        ({"kind": "static", "params": {"max_num_seqs": 8, "gpu_memory_utilization": "high"}}, "number in"),
    ],
)
def test_bad_policy_files_are_refused_with_the_field_named(
    doc: dict[str, Any], match: str, tmp_path: Path
) -> None:
    with pytest.raises(ExportError, match=match):
        export_vllm_config(_file(tmp_path, **doc))


@given(seqs=st.integers(1, 600), tokens=st.integers(1, 9000), active=st.integers(1, 700))
def test_any_exported_config_satisfies_vllms_ordering_rules(seqs: int, tokens: int, active: int) -> None:
    spec = f"static:max_num_seqs={active},max_num_batched_tokens={tokens}"
    pf = PolicyFile(kind="static", params={"max_num_seqs": active, "max_num_batched_tokens": tokens},
                    limits={"b_max": seqs})
    try:
        cfg = export_vllm_config(pf)
    except ExportError:
        assert tokens < seqs or active > seqs, spec
        return
    assert cfg.max_num_batched_tokens >= cfg.max_num_seqs >= cfg.max_num_active_seqs >= 1


def test_cli_writes_yaml_with_the_hook_and_refuses_bad_configs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _file(tmp_path, kind="static", params={"max_num_seqs": 32, "max_batched_tokens": 1024})
    out = tmp_path / "vllm.yaml"
    assert main(["export", str(path), "--format", "vllm-yaml", "--hook", "--max-model-len", "4096",
                 "-o", str(out)]) == 0
    text = out.read_text()
    assert "max-num-seqs: 32\n" in text and "max-model-len: 4096\n" in text
    assert f'scheduler-cls: "{HOOK_SCHEDULER_CLS}"' in text
    assert f"CONTROLKIT_POLICY={path.resolve()}" in text
    bad = _file(tmp_path, kind="static", params={"max_num_seqs": 32, "max_batched_tokens": 16})
    assert main(["export", str(bad)]) == 1
    assert "max_num_batched_tokens=16 is below max_num_seqs=32" in capsys.readouterr().err


def test_yaml_renders_booleans_and_strings() -> None:
    params = {"max_num_seqs": 4, "enable_chunked_prefill": False, "max_num_batched_tokens": 8192}
    cfg = export_vllm_config(PolicyFile(kind="static", params=params), max_model_len=8192)
    assert "enable-chunked-prefill: false\n" in render_vllm_yaml(cfg)
    assert "--no-enable-chunked-prefill" in cfg.cli_args()


def test_cli_smoke_in_a_subprocess(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "controlkit.app.cli", "export", "static:max_num_seqs=16",
         "--model", "facebook/opt-125m"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("vllm serve facebook/opt-125m --max-num-seqs 16 ")


def test_designed_policy_files_export_their_design() -> None:
    from controlkit.design import design_mpc, design_optimal, design_pid
    from controlkit.plant import DesignPlant

    plant = DesignPlant(
        sample_period_s=0.04, intercept_s=0.02, k_min=1e-4, k_nom=1.2e-4, k_max=1.5e-4, b_min=1, b_max=256,
        kv_capacity_blocks=8000, block_size=16, tokens_per_seq=600, arrival_rate_per_s=5,
        prompt_tokens_mean=400, output_tokens_mean=200,
    )
    optimal = design_optimal(plant, 0.05, 2.0).to_policy_file()
    cfg = export_vllm_config(optimal)
    assert cfg.max_num_seqs == cfg.max_num_active_seqs == optimal.params["max_num_seqs"]
    assert cfg.max_num_batched_tokens == optimal.limits["max_batched_tokens"]
    pid = design_pid(plant, 0.05, 2.0, method="simc").to_policy_file()
    cfg = export_vllm_config(pid)
    assert cfg.max_num_seqs == pid.limits["b_max"] and cfg.max_num_active_seqs <= cfg.max_num_seqs
    mpc = design_mpc(plant, 0.05, 2.0).to_policy_file()
    cfg = export_vllm_config(mpc)
    assert cfg.max_num_seqs == min(mpc.limits["b_max"], mpc.params["cap_upper"])
    assert cfg.max_num_batched_tokens == mpc.limits["max_batched_tokens"]


def test_step_cap_export_keeps_every_step_within_the_tpot_slo(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from controlkit.design import design_optimal
    from controlkit.optimal import step_bound_s
    from controlkit.plant import DesignPlant

    plant = DesignPlant.example(prefill_s_per_token=5e-5, prompt_tokens_mean=400, output_tokens_mean=200)
    pf = design_optimal(plant, 0.05, 2.0).to_policy_file()
    cfg = export_vllm_config(pf, step_cap=True)
    sc = pf.params["step_cap"]
    assert (cfg.max_num_seqs, cfg.max_num_active_seqs, cfg.max_num_batched_tokens) == (
        sc["batch"], sc["batch"], sc["max_batched_tokens"],
    )
    assert step_bound_s(plant, cfg.max_num_seqs, cfg.max_num_batched_tokens) <= 0.05
    # a design without a step cap (no prefill cost) is refused with the reason
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(design_optimal(plant.replace(prefill_s_per_token=0.0), 0.05).to_policy_file().to_dict()))
    assert main(["export", str(path), "--step-cap"]) == 1
    assert "--step-cap needs params.step_cap" in capsys.readouterr().err
