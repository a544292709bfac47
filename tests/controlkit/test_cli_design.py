import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

import controlkit.app.cli.certify as cli_certify
import controlkit.app.cli.design as cli_design
from controlkit.app.cli import main


def fake_model(k_lo=1e-4, k_hi=1.5e-4, capacity=8000):
    lat = SimpleNamespace(
        slope_=0.5 * (k_lo + k_hi),
        slope_interval_=(k_lo, k_hi),
        intercept_s_=0.02,
        batch_range_=(1.0, 256.0),
        typical_context_tokens_=600.0,
        predict_step_s=lambda b, context_tokens=None, prefill_tokens=0: (
            0.02 + 1.2e-4 * np.asarray(b, dtype=float) + 1e-5 * np.asarray(prefill_tokens)
        ),
    )
    mem = SimpleNamespace(
        capacity_blocks_=capacity,
        block_size_=16,
        max_batch=lambda tokens, headroom=0.05: int(capacity * (1 - headroom)) // -(-int(tokens) // 16),
    )
    wl = SimpleNamespace(prompt_tokens_mean_=400.0, output_tokens_mean_=200.0, arrival_rate_per_s_=5.0)
    return SimpleNamespace(latency=lat, memory=mem, workload=wl)


@pytest.fixture
def models(monkeypatch):
    table = {"a.json": fake_model(), "fast_gpu.json": fake_model(4e-4, 9e-4)}
    monkeypatch.setattr(cli_design, "load_model", lambda p: table[p.split("/")[-1]])
    monkeypatch.setattr(cli_certify, "load_model", lambda p: table[p.split("/")[-1]])


@pytest.mark.parametrize("kind", ["pid", "optimal", "mpc"])
def test_design_writes_a_certified_policy_and_certify_accepts_it(models, tmp_path, capsys, kind):
    out = tmp_path / "policy.json"
    rc = main(
        [
            "design",
            "a.json",
            "--tpot-slo-s",
            "0.05",
            "--ttft-slo-s",
            "2.0",
            "--controller",
            kind,
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["kind"] == kind and doc["certificate"]["holds"] and not doc["uncertified"]
    assert "certificate: all claims hold" in capsys.readouterr().out
    assert main(["certify", str(out), "a.json"]) == 0


def test_certify_rejects_an_old_policy_on_a_new_gpus_model(models, tmp_path, capsys):
    out = tmp_path / "policy.json"
    assert main(["design", "a.json", "--tpot-slo-s", "0.05", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["certify", str(out), "fast_gpu.json"]) == 1
    err = capsys.readouterr().err
    assert "not certified" in err and "fails" in err


def test_design_refuses_an_uncertified_controller_unless_allowed(models, tmp_path, capsys):
    out = tmp_path / "p.json"
    args = [
        "design",
        "a.json",
        "--tpot-slo-s",
        "0.05",
        "--controller",
        "optimal",
        "--ttft-slo-s",
        "0.001",
        "-o",
        str(out),
    ]
    assert main(args) == 1
    assert "claim 'ttft_load_range' fails" in capsys.readouterr().err and not out.exists()
    assert main([*args, "--allow-uncertified"]) == 0
    assert json.loads(out.read_text())["uncertified"] is True


def test_impossible_tpot_slo_is_one_clear_line(models, tmp_path, capsys):
    assert main(["design", "a.json", "--tpot-slo-s", "0.001", "-o", str(tmp_path / "x.json")]) == 1
    assert "minimum achievable TPOT" in capsys.readouterr().err


def test_design_plot_is_written(models, tmp_path):
    png = tmp_path / "d.png"
    assert (
        main(
            [
                "design",
                "a.json",
                "--tpot-slo-s",
                "0.05",
                "-o",
                str(tmp_path / "p.json"),
                "--plot",
                str(png),
                "--tuning",
                "simc",
            ]
        )
        == 0
    )
    assert png.stat().st_size > 10_000


def test_cli_subprocess_smoke():
    r = subprocess.run(
        [sys.executable, "-m", "controlkit.app.cli", "design", "--help"], capture_output=True, text=True
    )
    assert r.returncode == 0 and "--allow-uncertified" in r.stdout
