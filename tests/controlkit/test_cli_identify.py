"""`controlkit identify`: in process through controlkit.app.cli.main, plus one subprocess smoke test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from controlkit.app.cli import main

REPO = Path(__file__).resolve().parents[2]


def _steps_csv(tmp_path: Path, n: int = 1500, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    b = rng.integers(1, 96, n)
    step = 0.008 + 1.5e-4 * b + rng.normal(0, 2e-4, n)
    frame = pd.DataFrame({"t_s": np.cumsum(step), "step_s": step, "num_running": b, "num_waiting": 3,
                          "num_prefill_tokens": 0, "num_decode_tokens": b, "kv_blocks_used": 22 * b,
                          "kv_blocks_total": 4000, "num_preempted": 0})
    path = tmp_path / "steps.csv"
    frame.to_csv(path, index=False)
    return path


def test_identify_writes_the_model_file_and_prints_the_summary(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "model.json"
    code = main(["identify", str(_steps_csv(tmp_path)), "-o", str(out), "--plot", str(tmp_path / "fit.png"),
                 "--seed", "2", "--holdout-fraction", "0.3"])
    assert code == 0
    model = json.loads(out.read_text())
    assert model["schema"] == "controlkit.model/1"
    assert model["latency"]["coef"]["c_seq_s"] == pytest.approx(1.5e-4, rel=0.05)
    assert model["latency"]["params"]["seed"] == 2 and model["latency"]["params"]["holdout_fraction"] == 0.3
    assert model["memory"]["capacity_blocks"] == 4000
    assert (tmp_path / "fit.png").stat().st_size > 10_000
    text = capsys.readouterr().out
    for word in ("c_seq", "held-out MAPE", "batch range", "KV capacity", "preemption onset"):
        assert word in text


def test_output_dash_writes_json_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["identify", str(_steps_csv(tmp_path)), "-o", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["schema"] == "controlkit.model/1"
    assert "plant model" in captured.err


def test_bad_telemetry_exits_1_with_one_line_naming_the_file(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "steps.csv"
    path.write_text("t_s,step_s,num_running\n0,0.01,4\n0.01,abc,4\n")
    assert main(["identify", str(path), "-o", str(tmp_path / "m.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "steps.csv" in err
    assert not (tmp_path / "m.json").exists()


def test_a_where_clause_that_matches_nothing_exits_1(shared_data: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    bca = shared_data / "bca_memory_gap"
    code = main(["identify", str(bca / "background_engine_metrics.csv.gz"), "--where", "model=gpt-5",
                 "-o", str(tmp_path / "m.json")])
    assert code == 1 and "gpt-5" in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert main(["identify", str(tmp_path / "absent.csv"), "-o", str(tmp_path / "m.json")]) == 2
    assert main(["identify", str(_steps_csv(tmp_path)), "-o", "m.json", "--holdout-fraction", "2"]) == 2
    assert main(["identify", str(_steps_csv(tmp_path))]) == 2  # -o is required


def test_subprocess_smoke_on_the_real_bca_log(shared_data: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "controlkit"
    bca = shared_data / "bca_memory_gap"
    out = tmp_path / "model.json"
    proc = subprocess.run(
        [str(exe), "identify", str(bca / "background_engine_metrics.csv.gz"),
         str(bca / "background_runs_index.csv"), "--where", "model=llama-2-13b", "-o", str(out)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    model = json.loads(out.read_text())
    assert model["memory"]["capacity_blocks"] > 2000
    assert model["latency"]["slope_interval_s_per_seq"][0] > 0
    assert "llama-2-13b" in " ".join(model["meta"]["runs"])


def test_skip_bad_rows_reports_what_it_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _steps_csv(tmp_path)
    lines = path.read_text().splitlines()
    lines.insert(5, lines[5].replace(lines[5].split(",")[1], "nan", 1))
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "m.json"
    assert main(["identify", str(path), "-o", str(out)]) == 1
    assert main(["identify", str(path), "-o", str(out), "--skip-bad-rows"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "skipped 1 bad row(s)" in err and "line 6" in err
    assert json.loads(out.read_text())["meta"]["skipped_rows"] == 1
