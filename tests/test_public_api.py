"""Pins the public API: other schedulers import these names, so changes must be deliberate."""

from __future__ import annotations

import subprocess
import sys

import controlkit
import identification
import policies

IDENTIFICATION = {
    "ControlkitError", "ControlkitWarning", "ExportError", "ExtrapolationWarning", "FitQualityWarning",
    "InfeasibleSpecError", "LatencyModel", "MemoryModel", "NotFittedError", "PlantModel", "PolicyError",
    "RequestRecord", "SkippedRow", "SourceInfo", "StepRecord", "Telemetry", "TelemetryError",
    "UncertifiedError", "WorkloadModel", "identify", "load_model", "read_requests", "read_telemetry", "read_trace",
}
CONTROLKIT = {
    "BatchLimits", "BatchPolicy", "ControlkitError", "ExportError", "InfeasibleSpecError", "NotFittedError",
    "Observation", "POLICY_SCHEMA", "PolicyError", "PolicyFile", "SanitizedLimits", "TelemetryError",
    "UncertifiedError", "WAITING_LIST_LIMIT", "load_policy_file", "sanitize_limits",
}
POLICIES = {"PolicyContext", "available_kinds", "build_policy", "parse_spec", "register"}
#: The application layer's library entry points (the CLI, the harness and the live demo use them).
WORKFLOW = {
    "DESIGNERS", "DesignOptions", "SimulationRun", "design_controller", "design_summary", "header_block_size",
    "identify_file", "run_simulation",
}


def test_public_names_are_pinned_and_resolve() -> None:
    for module, names in ((identification, IDENTIFICATION), (controlkit, CONTROLKIT), (policies, POLICIES)):
        assert set(module.__all__) == names, module.__name__
        for name in names:
            assert getattr(module, name) is not None


def test_the_workflow_api_is_pinned() -> None:
    from controlkit.app import workflow

    assert set(workflow.__all__) == WORKFLOW
    assert set(workflow.DESIGNERS) == {"pid", "pid-adaptive", "optimal", "mpc"}


def test_every_policy_kind_named_in_the_docs_is_registered() -> None:
    kinds = set(policies.available_kinds())
    assert {
        "static", "pang-a1", "pang-a2", "pang-a1a2", "trtllm-tuner", "sglang-ratio", "bucketserve", "uellm", "bca",
        "pid", "optimal", "mpc", "static-guard",
    } <= kinds


def test_importing_the_packages_does_not_import_vllm_or_heavy_modules() -> None:
    code = (
        "import sys, identification, controlkit, policies, controlkit.contract\n"
        "heavy = [m for m in ('vllm', 'torch', 'scipy', 'pandas', 'ray') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
