"""Offline vLLM 0.33.0 fixtures (VLLM.md §4): a real Scheduler built without the hub.

Everything here imports vLLM lazily, so this conftest loads (and the tests skip cleanly)
when vLLM is not installed.  The session fixture sets the offline environment before any
vLLM import: ``HF_HUB_OFFLINE=1``, no usage stats, a temporary ``VLLM_CACHE_ROOT``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_NO_USAGE_STATS": "1",
    "VLLM_DO_NOT_TRACK": "1",
}
BLOCK_SIZE = 16
THIRD_PARTY_MODULES = (
    "torch",
    "transformers",
    "vllm",
    "vllm.config",
    "vllm.engine.arg_utils",
    "vllm.v1.core.sched.scheduler",
    "vllm.v1.core.sched.async_scheduler",
    "vllm.v1.structured_output",
    "vllm.v1.outputs",
    "vllm.v1.request",
)


@pytest.fixture(scope="session")
def vllm_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Set the offline environment (and a temporary VLLM_CACHE_ROOT) for the session."""
    pytest.importorskip("vllm")
    cache = tmp_path_factory.mktemp("vllm_cache")
    with pytest.MonkeyPatch.context() as mp:
        for k, v in OFFLINE_ENV.items():
            mp.setenv(k, v)
        mp.setenv("VLLM_CACHE_ROOT", str(cache))
        # vLLM, torch and transformers warn about their own deprecations on import; import
        # them once here with those warnings ignored (the suite turns warnings into errors).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            for mod in THIRD_PARTY_MODULES:
                importlib.import_module(mod)
        yield cache


@pytest.fixture(scope="session")
def tiny_model_dir(vllm_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local directory holding only a tiny Llama config.json (no weights, no tokenizer)."""
    from transformers import LlamaConfig

    model_dir = tmp_path_factory.mktemp("tiny_llama")
    LlamaConfig(
        vocab_size=1024,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=8192,
    ).save_pretrained(model_dir)
    return model_dir


SchedulerFactory = Callable[..., Any]


@pytest.fixture(scope="session")
def make_sched(tiny_model_dir: Path) -> SchedulerFactory:
    """Return ``make(cls, *, num_blocks, max_num_seqs, ..., **scheduler_kwargs)`` -> scheduler."""
    import torch
    from vllm.config import CacheConfig, DeviceConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    model_config = ModelConfig(
        model=str(tiny_model_dir), skip_tokenizer_init=True, dtype="float16", max_model_len=4096, seed=0
    )

    def make(
        cls: Any,
        *,
        num_blocks: int = 4000,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        async_scheduling: bool = False,
        enable_chunked_prefill: bool = True,
        **kwargs: Any,
    ) -> Any:
        scheduler_config = SchedulerConfig(
            max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens,
            max_model_len=4096,
            is_encoder_decoder=False,
            enable_chunked_prefill=enable_chunked_prefill,
            async_scheduling=async_scheduling,
        )
        cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=False)
        vllm_config = VllmConfig(
            model_config=model_config,
            scheduler_config=scheduler_config,
            cache_config=cache_config,
            device_config=DeviceConfig(device="cpu"),
        )
        cache_config.num_gpu_blocks = num_blocks
        kv_cache_config = KVCacheConfig(
            num_blocks=num_blocks,
            kv_cache_tensors=[],
            kv_cache_groups=[
                KVCacheGroupSpec(
                    ["model.layers.0.self_attn.attn"],
                    FullAttentionSpec(
                        block_size=BLOCK_SIZE, num_kv_heads=4, head_size=16, dtype=torch.float16
                    ),
                )
            ],
        )
        return cls(
            vllm_config=vllm_config,
            kv_cache_config=kv_cache_config,
            structured_output_manager=StructuredOutputManager(vllm_config),
            block_size=BLOCK_SIZE,
            log_stats=True,
            **kwargs,
        )

    return make


@dataclass
class DriveResult:
    """What driving a scheduler produced, step by step."""

    running: list[int] = field(default_factory=list)
    running_before: list[int] = field(default_factory=list)
    caps: list[int] = field(default_factory=list)
    preempted: list[int] = field(default_factory=list)
    finished: set[str] = field(default_factory=set)
    steps: int = 0


def make_request(rid: str, prompt_tokens: int, max_tokens: int) -> Any:
    """A vLLM Request that stops after ``max_tokens`` (no tokenizer: EOS ignored)."""
    from vllm import SamplingParams
    from vllm.v1.request import Request

    return Request(
        request_id=rid,
        prompt_token_ids=[5] * prompt_tokens,
        sampling_params=SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        pooling_params=None,
    )


def _fake_output(sched: Any, so: Any) -> Any:
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(so.num_scheduled_tokens)
    return ModelRunnerOutput(
        req_ids=ids,
        req_id_to_index={r: i for i, r in enumerate(ids)},
        sampled_token_ids=[[] if sched.requests[r].is_prefill_chunk else [7] for r in ids],
    )


def drive(
    sched: Any,
    arrivals: dict[int, list[Any]],
    *,
    max_steps: int,
    depth2: bool = False,
    on_step: Callable[[int, Any], None] | None = None,
) -> DriveResult:
    """Run the scheduler with fake model outputs until all requests finish (or ``max_steps``).

    ``depth2`` emulates vLLM's async batch queue: ``schedule()`` of step N+1 runs before
    ``update_from_output()`` of step N.
    """
    res = DriveResult()
    pending: Any = None
    last_arrival = max(arrivals) if arrivals else 0
    for step in range(max_steps):
        for req in arrivals.get(step, ()):
            sched.add_request(req)
        if on_step is not None:
            on_step(step, sched)
        res.running_before.append(len(sched.running))
        so = sched.schedule()
        res.caps.append(int(sched.max_num_active_reqs))
        res.running.append(len(sched.running))
        res.preempted.append(len(so.preempted_req_ids or ()))
        mro = _fake_output(sched, so)
        if depth2:
            if pending is not None:
                outs = sched.update_from_output(*pending)
                _collect_finished(outs, res)
            pending = (so, mro)
        else:
            outs = sched.update_from_output(so, mro)
            _collect_finished(outs, res)
        res.steps = step + 1
        if step >= last_arrival and not sched.requests:
            break
    if pending is not None:
        _collect_finished(sched.update_from_output(*pending), res)
    return res


def _collect_finished(outs: Any, res: DriveResult) -> None:
    for eco in outs.values():
        for o in eco.outputs:
            if o.finish_reason is not None:
                res.finished.add(o.request_id)


@pytest.fixture(scope="session")
def drive_fn() -> Callable[..., DriveResult]:
    """The :func:`drive` helper."""
    return drive


@pytest.fixture(scope="session")
def request_fn() -> Callable[..., Any]:
    """The :func:`make_request` helper."""
    return make_request


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test in this directory ``vllm``; ignore third-party deprecations in them."""
    here = str(Path(__file__).parent)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.vllm)
            item.add_marker(pytest.mark.usefixtures("vllm_env"))
            for mod in ("torch", "vllm", "transformers"):
                item.add_marker(pytest.mark.filterwarnings(f"ignore::DeprecationWarning:{mod}.*"))
                item.add_marker(pytest.mark.filterwarnings(f"ignore::FutureWarning:{mod}.*"))
