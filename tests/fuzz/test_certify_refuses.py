"""``certify`` refuses every policy whose claims do not hold for the model, and those policies fail.

Infeasible pairs are generated: a PID designed for a 50 ms TPOT SLO on the real plant (the BCA
llama-2-7b rows: ~11 ms batch-1 step; tests/fixtures/policies), re-certified against a plant whose steps are ``f`` times
slower, with ``f`` drawn so that even the smallest cap misses the SLO.  The refusal must name
``tpot_feasible_at_b_min``, and the closed-loop simulator (controlkit.sim) must show the refused
policy failing the SLO on that plant.  A feasible pair (``f`` small) stays certified.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

import pandas as pd
from fuzz_targets import POLICIES, STEPS, base_model_doc
from hypothesis import given, settings
from hypothesis import strategies as st

from controlkit.certify import certify_policy
from controlkit.plant import DesignPlant
from controlkit.policyfile import PolicyFile, load_policy_file
from identification import PlantModel, identify
from identification.records import Telemetry
from identification.telemetry import read_telemetry

TPOT_SLO_S = 0.05


@functools.cache
def _model(factor: float) -> PlantModel:
    """The plant of the real step rows with every step ``factor`` times slower."""
    steps = read_telemetry(STEPS).steps.copy()
    steps["step_s"] = steps["step_s"] * factor
    steps["t_s"] = steps.groupby("run")["step_s"].cumsum()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return identify(Telemetry(steps=pd.DataFrame(steps)))


@functools.cache
def _pid_policy() -> PolicyFile:
    """``controlkit design`` of a PID for a 50 ms TPOT SLO on the real plant (a checked-in fixture)."""
    pf = load_policy_file(POLICIES / "bca_background_pid.json")
    assert pf.slos["tpot_s"] == TPOT_SLO_S
    return pf


def _simulated_attainment(model: PlantModel, pf: PolicyFile) -> float:
    from controlkit.sim import SLO, load_plant, load_workload, simulate
    from policies.registry import PolicyContext, build_policy

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "slow.json"
        model.save(path)
        plant = load_plant(str(path))
    workload = load_workload("step:2:4:20", num_requests=60, seed=0)
    ctx = PolicyContext(kv_blocks_total=plant.kv_blocks_total, block_size=plant.block_size,
                        max_num_seqs=plant.max_num_seqs_default, max_batched_tokens=plant.max_batched_tokens_default)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = simulate(plant, workload, build_policy(pf, ctx), slo=SLO(ttft_s=2.0, tpot_s=TPOT_SLO_S), seed=0,
                       horizon_s=120.0)
    return res.metrics.slo_attainment


@settings(max_examples=4)
@given(st.floats(min_value=5.5, max_value=16.0))
def test_an_slo_the_smallest_cap_cannot_meet_is_refused_and_fails_in_simulation(factor: float) -> None:
    model = _model(factor)
    plant = DesignPlant.from_model(model)
    assert plant.step_upper_s(1) > TPOT_SLO_S  # the generated pair is infeasible by construction
    cert = certify_policy(_pid_policy(), plant)
    assert not cert.holds
    assert "tpot_feasible_at_b_min" in {c.name for c in cert.failed}
    assert _simulated_attainment(model, _pid_policy()) < 0.2


def test_the_design_plant_itself_stays_certified() -> None:
    cert = certify_policy(_pid_policy(), DesignPlant.from_model(PlantModel.from_dict(base_model_doc())))
    assert cert.holds, cert.failure_message()
