"""The CLI's bad-input cases of issue 15: one line, exit 1 or 2, bounded time and memory.

Every call runs ``controlkit.app.cli.main`` in-process; ``_run`` asserts no traceback, one error line
of bounded length, and returns (exit code, that line).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from fuzz_cases import captured
from fuzz_targets import INDEX, POLICIES, SAMPLES, base_model_doc

from controlkit.app.cli import MAX_ERROR_CHARS, main
from controlkit.policyfile import PolicyFile, load_policy_file
from identification.errors import PolicyError
from identification.telemetry import read_telemetry
from policies.registry import build_policy


def _run(argv: list[str]) -> tuple[int, str]:
    with captured() as (out, err):
        code = main(argv)
    text = err.getvalue()
    assert "Traceback" not in text + out.getvalue()
    if code == 0:
        return code, ""
    lines = [ln for ln in text.splitlines() if ln.startswith(("error:", "Error:"))]
    assert len(lines) == 1, text
    assert len(lines[0]) <= MAX_ERROR_CHARS + 20
    assert "internal error" not in lines[0]
    return code, lines[0]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(base_model_doc()))
    return path


def _policy(tmp_path: Path, kind: str, **changes: Any) -> Path:
    # the fixtures are controlkit.policy/1 files; edit them as the /2 files design writes now
    doc = PolicyFile.from_dict(json.loads((POLICIES / f"bca_background_{kind}.json").read_text())).to_dict()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = doc
        for p in parents:
            target = target[p]
        target[last] = value
    path = tmp_path / f"{kind}.json"
    path.write_text(json.dumps(doc))
    return path


def test_outputs_into_a_missing_folder_fail_before_any_work(tmp_path: Path, model: Path) -> None:
    missing = str(tmp_path / "absent" / "x")
    for argv in (
        ["identify", str(SAMPLES), str(INDEX), "-o", missing],
        ["identify", str(SAMPLES), str(INDEX), "-o", str(tmp_path / "m.json"), "--plot", missing],
        ["design", str(model), "--tpot-slo-s", "0.05", "--controller", "optimal", "-o", missing],
        ["simulate", "--plant", str(model), "--workload", "step:1:1:5", "--policy", "static:max_num_seqs=4",
         "--plot", missing],
        ["export", "static:max_num_seqs=8", "-o", missing],
    ):
        code, line = _run(argv)
        assert code == 2 and "does not exist" in line, (argv, line)


def test_binary_model_and_policy_files_are_one_line_errors(tmp_path: Path, model: Path) -> None:
    binary = tmp_path / "binary.json"
    binary.write_bytes(bytes(range(256)) * 4)
    pid = _policy(tmp_path, "pid")
    for argv in (["certify", str(pid), str(binary)], ["certify", str(binary), str(model)],
                 ["export", str(binary)], ["design", str(binary), "--tpot-slo-s", "0.05", "-o",
                                            str(tmp_path / "p.json")]):
        code, line = _run(argv)
        assert code == 1 and "UTF-8" in line, (argv, line)


@pytest.mark.parametrize(
    "extra",
    [["--seed", "-1"], ["--tpot-slo-s", "0"], ["--ttft-slo-s", "0"], ["--tpot-slo-s", "nan"],
     ["--max-num-seqs", "0"], ["--max-batched-tokens", "0"], ["--num-requests", "0"], ["--horizon-s", "inf"],
     ["--rate-scale", "-1"]],
)
def test_simulate_refuses_bad_numbers_instead_of_defaults(model: Path, extra: list[str]) -> None:
    code, line = _run(["simulate", "--plant", str(model), "--workload", "step:1:1:5", "--policy",
                       "static:max_num_seqs=4", *extra])
    assert code == 2 and extra[0] in line


def test_a_huge_synthetic_workload_is_refused_not_generated(model: Path) -> None:
    start = time.perf_counter()
    code, line = _run(["simulate", "--plant", str(model), "--workload", "step:1e9:1e9:1", "--num-requests",
                       "200", "--policy", "static:max_num_seqs=4"])
    assert code == 1 and "arrivals" in line
    assert time.perf_counter() - start < 60  # generous: it fails before generating anything


def test_design_bounds_delays_and_refuses_a_zero_slo(tmp_path: Path, model: Path) -> None:
    out = str(tmp_path / "p.json")
    for extra in (["--delays", "1000"], ["--delays", "0"], ["--delays", ",".join(["1"] * 9)],
                  ["--tpot-slo-s", "0"]):
        argv = ["design", str(model), "--tpot-slo-s", "0.05", "-o", out, *extra]
        code, line = _run(argv)
        assert code == 2, (extra, line)


def test_optimal_policy_files_are_strict_json(tmp_path: Path, model: Path) -> None:
    out = tmp_path / "optimal.json"
    assert _run(["design", str(model), "--tpot-slo-s", "0.05", "--controller", "optimal", "-o", str(out)])[0] == 0

    def refuse(token: str) -> None:
        raise AssertionError(f"non-strict JSON constant {token}")

    json.loads(out.read_text(), parse_constant=refuse)


def test_repeated_where_clauses_and_together() -> None:
    both = read_telemetry([SAMPLES, INDEX], ["model=llama-2-7b", "max_num_seqs=64"])
    assert set(both.samples["max_num_seqs"].astype(str)) == {"64"}
    code, line = _run(["identify", str(SAMPLES), str(INDEX), "-o", "-", "--where", "max_num_seqs=64",
                       "--where", "max_num_seqs=16"])
    assert code == 1 and "cannot both hold" in line


def test_a_10mb_line_of_commas_fails_fast_with_a_bounded_message(tmp_path: Path) -> None:
    path = tmp_path / "commas.csv"
    path.write_text("," * 10_000_000 + "\n1,2\n")
    start = time.perf_counter()
    code, line = _run(["identify", str(path), "-o", str(tmp_path / "m.json")])
    assert code == 1 and "header" in line
    assert time.perf_counter() - start < 30
    code, line = _run(["export", "static:max_num_seqs=" + "9" * 5_000_000])
    assert code == 1 and len(line) < 300


def test_bench_exits_nonzero_when_every_cell_failed(tmp_path: Path) -> None:
    code, line = _run(["bench", "--legacy-grid", "--quick", "--policies", "static:max_num_seqs=0", "--no-plots",
                       "--no-progress", "--jobs", "1", "-o", str(tmp_path / "b.md")])
    assert code == 1 and "every one of the" in line


def test_bench_protocol_refuses_legacy_only_options_instead_of_ignoring_them(tmp_path: Path) -> None:
    for extra in (["--policies", "pid"], ["--seed", "3"], ["--ray", "local"], ["--static-caps", "8"]):
        code, line = _run(["bench", "--quick", *extra, "--no-progress", "-o", str(tmp_path / "b.md")])
        assert code == 2 and extra[0] in line and "--legacy-grid" in line


def test_bench_ray_with_a_bad_address_fails_within_the_timeout(tmp_path: Path) -> None:
    start = time.perf_counter()
    for address in ("127.0.0.1:1", "not an address"):
        code, line = _run(["bench", "--quick", "--ray", address, "--no-plots", "-o", str(tmp_path / "b.md")])
        assert code == 2 and "--ray" in line
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(
    ("change", "match"),
    [({"slos__tpot_s": -0.05}, "slos.tpot_s"), ({"slos__tpot_s": float("nan")}, "slos.tpot_s"),
     ({"slos__tpot_s": "0.05"}, "slos.tpot_s"), ({"params__controller__kp": "1.5"}, "kp"),
     ({"sample_period_s": 1e308}, "sample_period_s"), ({"params__priority": 3}, "priority"),
     ({"limits__b_max": True}, "b_max"), ({"params__max_batched_tokens": False}, "max_batched_tokens")],
)
def test_certify_refuses_malformed_policy_fields(tmp_path: Path, model: Path, change: dict[str, Any],
                                                 match: str) -> None:
    code, line = _run(["certify", str(_policy(tmp_path, "pid", **change)), str(model)])
    assert code == 1 and match in line


def test_certify_refuses_a_pid_whose_slo_the_model_cannot_meet(tmp_path: Path, model: Path) -> None:
    assert _run(["certify", str(_policy(tmp_path, "pid")), str(model)])[0] == 0
    tight = _policy(tmp_path, "pid", slos__tpot_s=0.005)  # below the ~11 ms batch-1 step
    code, line = _run(["certify", str(tight), str(model)])
    assert code == 1 and "tpot_feasible_at_b_min" in line


def test_a_negative_output_length_in_a_model_is_refused(tmp_path: Path) -> None:
    doc = base_model_doc()
    doc = json.loads(json.dumps(doc))
    doc["workload"]["output_tokens_mean"] = -300.0
    path = tmp_path / "neg.json"
    path.write_text(json.dumps(doc))
    code, line = _run(["certify", str(_policy(tmp_path, "pid")), str(path)])
    assert code == 1 and "output_tokens_mean" in line


def test_bca_tables_are_read_only_beside_the_policy_or_from_allowed_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONTROLKIT_TABLE_DIRS", raising=False)
    (tmp_path / "sweep.csv").write_text("batch,throughput,latency_s\n1,50,0.02\n32,1100,0.03\n64,1700,0.041\n")
    (tmp_path / "secret.csv").write_text("batch,throughput,latency_s\nroot:x:0:0,1,1\n")

    def policy(table: str) -> Path:
        path = tmp_path / "bca.json"
        path.write_text(json.dumps({"schema": "controlkit.policy/1", "kind": "bca", "params": {"table": table}}))
        return path

    assert build_policy(policy("sweep.csv")).decide  # beside the policy file: allowed
    for table in ("/etc/passwd", "../../../etc/hostname", "/proc/self/environ"):
        with pytest.raises(PolicyError, match="outside"):
            build_policy(load_policy_file(policy(table)))
    with pytest.raises(PolicyError, match="spec string"):
        build_policy(f"bca:table={tmp_path / 'sweep.csv'}")
    monkeypatch.setenv("CONTROLKIT_TABLE_DIRS", "/dev")
    with pytest.raises(PolicyError, match="not a regular file"):
        build_policy("bca:table=/dev/zero")
    with pytest.raises(PolicyError, match="line 2: field 'batch'") as err:
        build_policy(policy("secret.csv"))
    assert "root" not in str(err.value)  # the content is never echoed


def test_samples_keyed_by_fewer_columns_than_the_run_index_are_named(tmp_path: Path) -> None:
    rows = SAMPLES.read_text().splitlines()[:61]  # one run (max_num_seqs=4), model kept, max_num_seqs dropped
    cut = [",".join(c for i, c in enumerate(r.split(",")) if i != 1) for r in rows]
    path = tmp_path / "metrics.csv"
    path.write_text("\n".join(cut) + "\n")
    code, line = _run(["identify", str(path), str(INDEX), "-o", str(tmp_path / "m.json")])
    assert code == 1 and "only the key columns ['model']" in line
