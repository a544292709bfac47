"""Exported configs go through vLLM 0.33's own argument parser and SchedulerConfig validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("vllm")

from controlkit.policyfile import PolicyFile
from identification.errors import ExportError
from policies.export import HOOK_SCHEDULER_CLS, check_vllm_limits, export_vllm_config, render_vllm_yaml

PARSE_SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
from vllm.engine.arg_utils import EngineArgs
from vllm.utils.argparse_utils import FlexibleArgumentParser
out = []
for argv in json.loads(sys.argv[1]):
    ns = EngineArgs.add_cli_args(FlexibleArgumentParser()).parse_args(argv)
    out.append({k: v for k, v in vars(ns).items() if isinstance(v, (int, float, str, bool, type(None)))})
print(json.dumps(out))
"""


def _parse_all(argvs: list[list[str]]) -> list[SimpleNamespace]:
    """Parse with vLLM's own ``vllm serve`` parser (EngineArgs' flags), in a subprocess.

    Building the parser needs a platform (``VLLM_TARGET_DEVICE=cpu`` here), which vLLM
    resolves once per process; the subprocess keeps that out of the test process.
    """
    env = dict(os.environ, VLLM_TARGET_DEVICE="cpu")
    proc = subprocess.run([sys.executable, "-c", PARSE_SCRIPT, json.dumps(argvs)], env=env,
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [SimpleNamespace(**d) for d in json.loads(proc.stdout.strip().splitlines()[-1])]


def _vllm_scheduler_config(args: Any, max_model_len: int) -> Any:
    from vllm.config import SchedulerConfig

    return SchedulerConfig(
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_num_active_seqs=args.max_num_active_seqs, enable_chunked_prefill=args.enable_chunked_prefill,
        max_model_len=max_model_len, is_encoder_decoder=False,
    )


def test_exported_args_and_yaml_are_accepted_by_vllm(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    PolicyFile(kind="optimal", params={"max_num_seqs": 48, "max_batched_tokens": 4096,
                                       "gpu_memory_utilization": 0.8}).save(path)
    cfg = export_vllm_config(path, hook=True, max_model_len=2048)
    cfg_yaml = export_vllm_config(
        PolicyFile(kind="static", params={"max_num_seqs": 16, "max_num_batched_tokens": 8192,
                                          "enable_chunked_prefill": False}),
        max_model_len=8192,
    )
    yaml_path = tmp_path / "vllm.yaml"
    yaml_path.write_text(render_vllm_yaml(cfg_yaml))
    argvs = [["--model", "m", *cfg.cli_args()], ["--model", "m", "--config", str(yaml_path)]]
    args, yargs = _parse_all(argvs)
    assert (args.max_num_seqs, args.max_num_batched_tokens, args.max_num_active_seqs) == (48, 4096, 48)
    assert args.enable_chunked_prefill is True and args.gpu_memory_utilization == 0.8
    assert args.scheduler_cls == HOOK_SCHEDULER_CLS and args.max_model_len == 2048
    assert _vllm_scheduler_config(args, 2048).max_num_active_seqs == 48
    assert (yargs.max_num_seqs, yargs.max_num_batched_tokens) == (16, 8192)
    assert yargs.enable_chunked_prefill is False
    _vllm_scheduler_config(yargs, 8192)


def _vllm_accepts(seqs: int, tokens: int, active: int, chunked: bool, max_model_len: int) -> bool:
    from vllm.config import SchedulerConfig

    try:
        SchedulerConfig(max_num_seqs=seqs, max_num_batched_tokens=tokens, max_num_active_seqs=active,
                        enable_chunked_prefill=chunked, max_model_len=max_model_len, is_encoder_decoder=False)
    except ValueError:  # pydantic's ValidationError is a ValueError
        return False
    return True


@settings(max_examples=80)
@given(
    seqs=st.integers(-2, 300), tokens=st.integers(-2, 4500), active=st.integers(-2, 320),
    chunked=st.booleans(), max_model_len=st.integers(16, 4096),
)
def test_exporter_refuses_exactly_what_vllm_rejects(
    seqs: int, tokens: int, active: int, chunked: bool, max_model_len: int
) -> None:
    try:
        check_vllm_limits(max_num_seqs=seqs, max_num_batched_tokens=tokens, max_num_active_seqs=active,
                          enable_chunked_prefill=chunked, max_model_len=max_model_len)
        refused = False
    except ExportError:
        refused = True
    assert refused == (not _vllm_accepts(seqs, tokens, active, chunked, max_model_len))


@settings(max_examples=60)
@given(
    cap=st.one_of(st.none(), st.integers(1, 300)), reference=st.one_of(st.none(), st.integers(1, 300)),
    b_max=st.one_of(st.none(), st.integers(1, 300)), tokens=st.one_of(st.none(), st.integers(1, 4500)),
    chunked=st.booleans(), max_model_len=st.integers(16, 4096),
)
def test_every_exported_config_is_accepted_by_vllm(
    cap: int | None, reference: int | None, b_max: int | None, tokens: int | None, chunked: bool,
    max_model_len: int,
) -> None:
    params = {k: v for k, v in (("max_num_seqs", cap), ("reference_batch", reference),
                                ("max_num_batched_tokens", tokens)) if v is not None}
    pf = PolicyFile(kind="pid", params={**params, "enable_chunked_prefill": chunked},
                    limits={} if b_max is None else {"b_max": b_max})
    try:
        cfg = export_vllm_config(pf, max_model_len=max_model_len)
    except ExportError:
        return
    assert _vllm_accepts(cfg.max_num_seqs, cfg.max_num_batched_tokens, cfg.max_num_active_seqs,
                         cfg.enable_chunked_prefill, max_model_len)
