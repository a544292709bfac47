"""Hypothesis fuzzers over every input path: telemetry, model files, policy files, the CLI.

Each case mutates real rows (tests/fixtures/telemetry, extracted from ../shared/data) or real
designed files; the outcome must be our own error or an object that passes the sanity rules of
docs/validation.md.  Budgets are small here (the ``ci`` profile derandomises them);
``bench/fuzz.py`` runs the same generators 10,000 times per target.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Callable
from pathlib import Path

from fuzz_targets import cli_case, model_case, policy_case, telemetry_case
from hypothesis import given, settings
from hypothesis import strategies as st

#: Seeds of the mutation stream (hypothesis draws them; the ``ci`` profile derandomises the draw).
SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
Case = Callable[[random.Random, Path], tuple[str, str]]


def _run(case: Case, seed: int) -> None:
    rng = random.Random(seed)  # the same stream bench/fuzz.py draws; a failure names its seed
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) / "case"
        work.mkdir()
        outcome, detail = case(rng, work)
    assert outcome in ("own_error", "accepted"), f"seed {seed}: {outcome}: {detail}"


@settings(max_examples=40)
@given(SEEDS)
def test_mutated_telemetry_is_refused_or_fits_a_sane_model(seed: int) -> None:
    _run(telemetry_case, seed)


@settings(max_examples=60)
@given(SEEDS)
def test_mutated_model_files_are_refused_or_load_sane(seed: int) -> None:
    _run(model_case, seed)


@settings(max_examples=60)
@given(SEEDS)
def test_mutated_policy_files_are_refused_or_decide_sane_limits(seed: int) -> None:
    _run(policy_case, seed)


@settings(max_examples=15)
@given(SEEDS)
def test_generated_command_lines_exit_cleanly_with_one_line_errors(seed: int) -> None:
    _run(cli_case, seed)
