"""The fuzz targets: one function per target, each running one generated case and classifying it.

Targets (see docs/validation.md for the rules each accepted result is checked against):

* :func:`telemetry_case`: mutated real telemetry (sampled metrics + run index, Prometheus text,
  step records, Azure and Mooncake traces) through ``read_telemetry`` and ``identify``;
* :func:`model_case`: mutated model files through ``load_model``;
* :func:`policy_case`: mutated policy files through ``load_policy_file``/``build_policy`` and a
  few ``decide`` calls;
* :func:`cli_case`: generated command lines through ``controlkit.app.cli.main`` in-process.
"""

from __future__ import annotations

import functools
import json
import math
import random
import warnings
from pathlib import Path
from typing import Any

from fuzz_cases import (
    SPECIAL_VALUES,
    TELEMETRY,
    captured,
    classify,
    finite,
    mutate_json,
    mutate_lines_text,
    mutate_table_text,
    write_case,
)

SAMPLES = TELEMETRY / "bca_background_sample.csv"
INDEX = TELEMETRY / "bca_background_index.csv"
STEPS = TELEMETRY / "bca_background_steps.csv"
PROM = TELEMETRY / "vllm_scrapes.prom"
AZURE = TELEMETRY / "azure_code_head.csv"
MOONCAKE = TELEMETRY / "mooncake_conversation_head.jsonl"
POLICIES = TELEMETRY.parent / "policies"


@functools.cache
def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _telemetry_files(rng: random.Random, tmp: Path) -> tuple[list[Path], str]:
    """Write one mutated telemetry case; return (paths, what the base was)."""
    base = rng.choices(["samples", "index", "steps", "prom", "azure", "mooncake"], [5, 1, 2, 1, 1, 1])[0]
    gz = rng.random() < 0.1
    if base in ("samples", "index"):
        samples = mutate_table_text(rng, _text(SAMPLES)) if base == "samples" else _text(SAMPLES).encode()
        index = mutate_table_text(rng, _text(INDEX)) if base == "index" or rng.random() < 0.1 else None
        paths = [write_case(tmp / ("metrics.csv.gz" if gz else "metrics.csv"), samples, gz=gz)]
        if index is not None or rng.random() < 0.9:
            paths.append(write_case(tmp / "runs_index.csv", index if index is not None else _text(INDEX).encode()))
        return paths, base
    if base == "steps":
        return [write_case(tmp / "steps.csv", mutate_table_text(rng, _text(STEPS)), gz=gz)], base
    if base == "prom":
        return [write_case(tmp / "scrapes.prom", mutate_lines_text(rng, _text(PROM)))], base
    if base == "azure":
        return [write_case(tmp / "azure.csv", mutate_table_text(rng, _text(AZURE)))], base
    return [write_case(tmp / "mooncake.jsonl", mutate_lines_text(rng, _text(MOONCAKE)))], base


def telemetry_case(rng: random.Random, tmp: Path) -> tuple[str, str]:
    """One mutated telemetry case through ``read_telemetry`` + ``identify`` (or the workload fit)."""
    from identification import identify, read_telemetry
    from identification.validation import model_problems, workload_problems
    from identification.workload import WorkloadModel

    paths, base = _telemetry_files(rng, tmp)
    skip = rng.random() < 0.3

    def run() -> list[str]:
        tel = read_telemetry(paths, skip_bad_rows=skip)
        if base in ("azure", "mooncake"):
            return workload_problems(WorkloadModel().fit(tel))
        capacity = 5659 if base == "prom" else 0
        return model_problems(identify(tel, capacity_blocks=capacity))

    outcome, detail = classify(run)
    return outcome, f"[{base}{' skip' if skip else ''}] {detail}"


@functools.cache
def base_model_doc() -> dict[str, Any]:
    """The model file of the unmutated sampled-metrics base (fitted once)."""
    from identification import identify, read_telemetry

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        doc: dict[str, Any] = json.loads(identify(read_telemetry([SAMPLES, INDEX])).to_json())
    return doc


def model_case(rng: random.Random, tmp: Path) -> tuple[str, str]:
    """One mutated model file through ``load_model`` and the sanity rules."""
    from identification import load_model
    from identification.validation import model_problems

    path = write_case(tmp / "model.json", mutate_json(rng, base_model_doc(), n_max=2))
    return classify(lambda: model_problems(load_model(path)))


@functools.cache
def base_policy_docs() -> tuple[dict[str, Any], ...]:
    """Policy files: the designed pid/optimal/mpc fixtures and each research kind's defaults.

    The fixtures are ``controlkit design`` outputs for :func:`base_model_doc`'s model (TPOT SLO
    50 ms, TTFT SLO 2 s), checked in so the suite does not redesign them.
    """
    docs: list[dict[str, Any]] = [json.loads(p.read_text()) for p in sorted(POLICIES.glob("*.json"))]
    simple: list[tuple[str, dict[str, Any]]] = [
        ("static", {"max_num_seqs": 64, "max_num_batched_tokens": 4096}),
        ("pang-a1", {"memory_factor": 0.9}),
        ("pang-a2", {"sla_s": 0.05, "b_max": 128}),
        ("bca", {"b_opt": 48}),
        ("bca", {"table": "sweep.csv"}),
        ("bucketserve", {}),
        ("static-guard", {"max_num_seqs": 64}),
    ]
    for kind, params in simple:
        docs.append({"schema": "controlkit.policy/1", "kind": kind, "params": params, "limits": {},
                     "slos": {"tpot_s": 0.05}, "sample_period_s": 0.02, "certificate": None})
    return tuple(docs)


def _limits_problems(limits: Any, ceiling: int) -> list[str]:
    from controlkit.contract import BatchLimits

    if not isinstance(limits, BatchLimits):
        return [f"decide returned {type(limits).__name__}, not BatchLimits"]
    out = []
    cap, tokens = limits.max_active_seqs, limits.max_batched_tokens
    if isinstance(cap, bool) or not isinstance(cap, int) or not 0 <= cap <= ceiling:
        out.append(f"max_active_seqs {cap!r} is not an int in [0, {ceiling}]")
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1):
        out.append(f"max_batched_tokens {tokens!r} is not None or an int >= 1")
    return out


def policy_file_problems(pf: Any) -> list[str]:
    """Sanity rules of a loaded policy file's common fields (docs/validation.md)."""
    out = []
    for name, value in dict(pf.slos).items():
        if not (finite(value) and value > 0):
            out.append(f"slos.{name} = {value!r} is not a finite number > 0")
    if not (finite(pf.sample_period_s) and 0 < pf.sample_period_s <= 3600):
        out.append(f"sample_period_s = {pf.sample_period_s!r} is not within (0, 3600]")
    for name, value in dict(pf.limits).items():
        if isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
            out.append(f"limits.{name} = {value!r} is not a finite number")
    return out


def policy_case(rng: random.Random, tmp: Path) -> tuple[str, str]:
    """One mutated policy file through ``build_policy`` and a few decisions."""
    from controlkit.contract import Observation
    from controlkit.policyfile import load_policy_file
    from policies.registry import PolicyContext, build_policy

    doc = rng.choice(base_policy_docs())
    path = write_case(tmp / "policy.json", mutate_json(rng, doc, n_max=2))
    (tmp / "sweep.csv").write_text(SWEEP_CSV)
    ctx = PolicyContext(kv_blocks_total=5659, block_size=16, max_num_seqs=256, max_batched_tokens=8192)

    def run() -> list[str]:
        pf = load_policy_file(path)
        problems = policy_file_problems(pf)
        policy = build_policy(pf, ctx)
        for i, (running, waiting, step) in enumerate(((0, 5, 0.0), (16, 40, 0.03), (200, 400, 0.2))):
            obs = Observation(0.1 * i, num_running=running, num_waiting=waiting, kv_blocks_used=20 * running,
                              kv_blocks_total=5659, last_step_s=step, itl_mean_s=step,
                              num_decode_tokens=running, max_active_seqs=256, max_batched_tokens=8192)
            problems += _limits_problems(policy.decide(obs), ctx.max_num_seqs)
        return problems

    outcome, detail = classify(run)
    table = _table_named(path)
    read = outcome == "accepted" or any(sign in detail for sign in _TABLE_READ_SIGNS)
    if table is not None and not _inside(table, tmp) and read:
        return "nonsense", f"[bca] table {table!r} outside the policy's folder was read: {outcome} {detail}"
    return outcome, f"[{doc['kind']}] {detail}"


#: A real-shaped BCA sweep table (batch, throughput, latency_s) beside each bca policy case.
SWEEP_CSV = "batch,throughput,latency_s\n1,50.0,0.020\n8,350.0,0.023\n32,1100.0,0.030\n64,1700.0,0.041\n"


#: Errors that only a table that was opened and parsed can give (the policy read the file).
_TABLE_READ_SIGNS = (
    "missing column", "is not a valid number", "BCA table is empty", "appears twice", "BCA: ", "BCA point",
)


def _table_named(path: Path) -> str | None:
    try:
        doc = json.loads(path.read_bytes())
        table = doc["params"]["table"] if doc.get("kind") == "bca" else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return table if isinstance(table, str) and table else None


def _inside(name: str, folder: Path) -> bool:
    real = (folder / name).resolve()
    return folder.resolve() in real.parents


def _cli_argv(rng: random.Random, tmp: Path) -> list[str]:
    """A command line: a real command with real files, one or two values or paths made bad."""
    docs = base_policy_docs()
    model = tmp / "model.json"
    model.write_text(json.dumps(base_model_doc()))
    policy = tmp / "policy.json"
    policy.write_text(json.dumps(rng.choice(docs)))
    bad = rng.choice(SPECIAL_VALUES)
    missing = str(tmp / "no_such_dir" / "out.json")
    binary = tmp / "binary.json"
    binary.write_bytes(bytes(rng.randrange(256) for _ in range(64)))
    choice = rng.randrange(7)
    if choice == 0:
        argv = ["identify", str(SAMPLES), str(INDEX), "-o", rng.choice([str(tmp / "m.json"), missing])]
        if rng.random() < 0.5:
            argv += ["--where", rng.choice(["model=llama-2-7b", f"max_num_seqs={bad}", bad])] * rng.randint(1, 2)
        if rng.random() < 0.3:
            argv += ["--holdout-fraction", bad]
    elif choice == 1:
        argv = ["certify", rng.choice([str(policy), str(binary), missing]), rng.choice([str(model), str(binary)])]
    elif choice == 2:
        argv = ["design", rng.choice([str(model), str(binary)]), "--tpot-slo-s", rng.choice([bad, "0.05"]),
                "-o", rng.choice([str(tmp / "p.json"), missing]),
                "--controller", rng.choice(["pid", "optimal"])]
        if rng.random() < 0.4:
            argv += ["--delays", rng.choice([bad, "1,2", "1000", "0", "-1"])]
    elif choice == 3:
        argv = ["export", rng.choice([str(policy), str(binary), f"static:max_num_seqs={bad}"]), "-o", "-"]
    elif choice == 4:
        argv = ["simulate", "--plant", rng.choice([str(model), str(binary)]), "--workload",
                rng.choice(["step:1:2:1", f"step:{bad}:1:1", "sharegpt:poisson:2"]),
                "--policy", rng.choice(["static:max_num_seqs=16", str(policy), f"static:max_num_seqs={bad}"]),
                "--num-requests", rng.choice(["20", bad]), "--seed", rng.choice(["0", "-1", bad]),
                "--horizon-s", "30", "-o", rng.choice(["-", missing])]
    elif choice == 5:
        argv = ["simulate", "--plant", str(model), "--workload", "step:1:2:1", "--policy",
                "static:max_num_seqs=8", "--num-requests", "10", "--horizon-s", "20",
                rng.choice(["--tpot-slo-s", "--ttft-slo-s", "--max-num-seqs", "--max-batched-tokens",
                            "--rate-scale"]), bad]
    else:
        argv = [rng.choice(["identify", "design", "certify", "export", "simulate", "bench", "nope"]),
                rng.choice(["--help", bad, str(binary), "--quick" if rng.random() < 0 else "--seed"])]
    return argv


def cli_case(rng: random.Random, tmp: Path) -> tuple[str, str]:
    """One generated command line through ``controlkit.app.cli.main``: exit 0, or 1/2 with one short line."""
    from controlkit.app.cli import main

    argv = _cli_argv(rng, tmp)
    try:
        with captured() as (out, err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            code = main(argv)
    except BaseException as exc:
        return "crash", f"{argv}: escaped main: {type(exc).__name__}: {exc}"
    text = err.getvalue()
    if "Traceback" in text or "Traceback" in out.getvalue() or "internal error" in text:
        return "crash", f"{argv}: traceback printed: {text[-400:]}"
    if code == 0:
        return "accepted", ""
    if code not in (1, 2):
        return "crash", f"{argv}: exit {code}: {text[-300:]}"
    errors = [ln for ln in text.splitlines() if ln.startswith(("error:", "Error:"))]
    if len(errors) != 1 or len(errors[0]) > 2000:
        return "crash", f"{argv}: exit {code} without one bounded error line: {text[-300:]!r}"
    return "own_error", errors[0]
