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

import pytest
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


@pytest.mark.parametrize(
    "case",
    [telemetry_case, model_case, policy_case, cli_case],
    ids=["telemetry+identify", "model-files", "policy-files", "cli"],
)
@settings(max_examples=30)
@given(seed=SEEDS)
def test_every_mutated_input_is_refused_or_accepted_sane(case: Case, seed: int) -> None:
    """Telemetry fits a sane model, models load sane, policies decide sane limits, the CLI exits cleanly."""
    _run(case, seed)
