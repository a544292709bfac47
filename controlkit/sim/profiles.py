"""Plants from operator profiles (Vidur), iteration profiles (SplitwiseSim) and model files.

* ``vidur-<gpu>:<model>``: per-layer operator medians of ``vidur/profiling/compute/<gpu>/
  <org>/<model>/mlp.csv.gz`` (tensor-parallel degree 1, or the smallest degree whose weights
  fit) summed over the layers, plus the embedding once, at ``num_tokens = batch``.  Attention
  over the KV cache is charged per context token from Vidur's A100 Llama-2-7B decode
  attention profile (``vidur/extracted``), per KV byte, scaled by the GPU's memory bandwidth
  (``gpu_specs.csv``): an estimate, since the per-model attention profiles are missing.
  Capacity: 90% of the GPU memory minus the fp16 weights, over the KV bytes per token.
* ``splitwise-<gpu>-tp<k>:<model>``: ``splitwise_sim/perf_model.csv``; decode step time is
  the median ``token_time`` per batch size, prefill a linear fit of ``prompt_time`` on
  ``batch_size * prompt_size``.  Capacity as above over the ``k`` GPUs.
* a ``controlkit.model/1`` file: the identified :class:`~identification.plant.PlantModel`,
  tabulated over its fitted batch range.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from controlkit.sim.plants import Plant, _read_csv, default_data_dir
from identification.errors import ControlkitError, ExtrapolationWarning

__all__ = ["model_file_plant", "splitwise_plant", "vidur_plant"]

_VIDUR_MODELS = {
    "llama-2-7b": ("meta-llama", "Llama-2-7b-hf", 32, 4096),
    "llama-2-70b": ("meta-llama", "Llama-2-70b-hf", 80, 4096),
    "llama-3-8b": ("meta-llama", "Meta-Llama-3-8B", 32, 8192),
    "llama-3-70b": ("meta-llama", "Meta-Llama-3-70B", 80, 8192),
    "codellama-34b": ("codellama", "CodeLlama-34b-Instruct-hf", 48, 16384),
    "internlm-20b": ("internlm", "internlm-20b", 60, 4096),
    "qwen-72b": ("Qwen", "Qwen-72B", 80, 8192),
    "phi-2": ("microsoft", "phi-2", 32, 2048),
}
_GPUS = {"a100": "A100-80GB", "h100": "H100-80GB", "a40": "A40-48GB"}
_OPS = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)


def _gpu_row(data_dir: Path, gpu: str) -> pd.Series:
    specs = _read_csv(data_dir / "gpu_specs.csv")
    key = _GPUS.get(gpu)
    rows = specs[specs["gpu"] == key]
    if key is None or rows.empty:
        raise ControlkitError(f"unknown GPU {gpu!r}; known: {', '.join(_GPUS)}")
    return rows.iloc[0]


def _attention_s_per_byte(data_dir: Path) -> float:
    """Decode attention seconds per KV byte read, from Vidur's A100 Llama-2-7B profile (kv=1024)."""
    df = _read_csv(data_dir / "vidur" / "extracted" / "a100_llama2_7b_tp1_attn_decode_kv1024.csv")
    slope_ms, _ = np.polyfit(df["batch_size"].to_numpy(float), df.iloc[:, 2].to_numpy(float), 1)
    return float(slope_ms) / 1000.0 * 32 / 1024 / 524288  # 32 layers, 1024 tokens, 512 KiB per token


def _capacity_blocks(mem_bytes: float, weight_bytes: float, kv_bytes_per_token: float, block: int) -> int:
    free = 0.9 * mem_bytes - weight_bytes
    if free <= 0:
        return 0
    return int(free // (kv_bytes_per_token * block))


def vidur_plant(gpu: str, model: str, data_dir: Path | None = None) -> Plant:
    """Build a plant from Vidur's operator profiles (see the module docstring)."""
    data_dir = data_dir or default_data_dir()
    if model not in _VIDUR_MODELS:
        raise ControlkitError(f"unknown Vidur model {model!r}; known: {', '.join(_VIDUR_MODELS)}")
    org, folder, layers, max_len = _VIDUR_MODELS[model]
    spec = _gpu_row(data_dir, gpu)
    path = data_dir / "vidur" / "profiling" / "compute" / gpu / org / folder / "mlp.csv.gz"
    df = _read_csv(path)
    row0 = df.iloc[0]
    n_embd, n_head, n_kv = float(row0["n_embd"]), float(row0["n_head"]), float(row0["n_kv_head"])
    n_exp, vocab = float(row0["n_expanded_embd"]), float(row0["vocab_size"])
    head = n_embd / n_head
    mlp_mats = 3 if bool(row0["use_gated_mlp"]) else 2
    params = (
        layers * (2 * n_embd * n_embd + 2 * n_embd * n_kv * head + mlp_mats * n_embd * n_exp)
        + 2 * vocab * n_embd
    )
    mem = float(spec["memory_GB"]) * 1e9
    kv_full = 2 * layers * n_kv * head * 2.0
    for tp in sorted(df["num_tensor_parallel_workers"].unique()):
        blocks = _capacity_blocks(mem * tp, 2.0 * params, kv_full, 16)
        if blocks * 16 >= max_len:
            break
    else:
        raise ControlkitError(f"{model} does not fit on {gpu} at any profiled tensor-parallel degree")
    sub = df[df["num_tensor_parallel_workers"] == tp].sort_values("num_tokens").drop_duplicates("num_tokens")
    ops = [op for op in _OPS if f"time_stats.{op}.median" in sub.columns]
    per_layer = np.nansum([sub[f"time_stats.{op}.median"].to_numpy(float) for op in ops], axis=0)
    step_ms = layers * per_layer + sub["time_stats.emb.median"].to_numpy(float)
    tokens = sub["num_tokens"].to_numpy(float)
    big = tokens >= 512
    c_ms, _ = np.polyfit(tokens[big], step_ms[big], 1)
    bw_ratio = float(_gpu_row(data_dir, "a100")["mem_bandwidth_GB_s"]) / float(spec["mem_bandwidth_GB_s"])
    kappa = float(_attention_s_per_byte(data_dir) * (kv_full / tp) * bw_ratio)
    return Plant(
        name=f"vidur-{gpu}:{model}",
        decode_batch=tuple(float(v) for v in tokens),
        decode_step_s=tuple(float(v) / 1000.0 for v in step_ms),
        prefill_base_s=float(step_ms[0]) / 1000.0,
        prefill_s_per_token=float(c_ms) / 1000.0,
        context_s_per_token=kappa,
        kv_blocks_total=blocks,
        max_model_len=max_len,
        max_num_seqs_default=256,
        max_batched_tokens_default=8192,
        source=f"{path} (TP{tp}, medians x {layers} layers); attention: vidur/extracted A100 profile "
        "scaled by "
        "KV bytes and bandwidth (estimate); capacity: gpu_specs.csv memory x 0.9 - fp16 weights",
    )


_SPLITWISE_MODELS = {  # layers, kv bytes per token (fp16), parameters, max_model_len
    "llama2-70b": (80, 2 * 80 * 8 * 128 * 2.0, 70e9, 4096),
    "bloom-176b": (70, 2 * 70 * 14336 * 2.0, 176e9, 2048),
}


def splitwise_plant(spec: str, model: str, data_dir: Path | None = None) -> Plant:
    """Build a plant from SplitwiseSim's measured iteration times; ``spec`` is ``<gpu>-tp<k>``."""
    data_dir = data_dir or default_data_dir()
    gpu, sep, tp_text = spec.partition("-tp")
    if not sep or not tp_text.isdigit():
        raise ControlkitError(f"splitwise plant needs 'splitwise-<gpu>-tp<k>:<model>', got {spec!r}")
    if model not in _SPLITWISE_MODELS:
        raise ControlkitError(f"unknown SplitwiseSim model {model!r}; known: {', '.join(_SPLITWISE_MODELS)}")
    tp = int(tp_text)
    path = data_dir / "splitwise_sim" / "perf_model.csv"
    df = _read_csv(path)
    hw = f"{gpu}-80gb"
    sub = df[(df["model"] == model) & (df["hardware"] == hw) & (df["tensor_parallel"] == tp)]
    if sub.empty:
        combos = sorted(
            {
                f"{h.removesuffix('-80gb')}-tp{t}"
                for h, t in zip(
                    df[df["model"] == model]["hardware"],
                    df[df["model"] == model]["tensor_parallel"],
                    strict=True,
                )
            }
        )
        raise ControlkitError(f"no SplitwiseSim rows for {model} on {spec}; available: {', '.join(combos)}")
    dec = sub.groupby("batch_size")["token_time"].median().sort_index()
    tokens = (sub["batch_size"] * sub["prompt_size"]).to_numpy(float)
    c_ms, a_ms = np.polyfit(tokens, sub["prompt_time"].to_numpy(float), 1)
    _, kv_tok, params, max_len = _SPLITWISE_MODELS[model]
    spec_row = _gpu_row(data_dir, gpu)
    blocks = _capacity_blocks(float(spec_row["memory_GB"]) * 1e9 * tp, 2.0 * params, kv_tok, 16)
    if blocks < 1:
        raise ControlkitError(f"{model} weights do not fit on {tp} x {gpu}")
    return Plant(
        name=f"splitwise-{spec}:{model}",
        decode_batch=tuple(float(v) for v in dec.index),
        decode_step_s=tuple(float(v) / 1000.0 for v in dec.to_numpy()),
        prefill_base_s=max(float(a_ms), float(dec.iloc[0])) / 1000.0,
        prefill_s_per_token=max(float(c_ms), 0.0) / 1000.0,
        kv_blocks_total=blocks,
        max_model_len=max_len,
        max_num_seqs_default=int(dec.index.max()),
        max_batched_tokens_default=8192,
        source=f"{path} ({hw}, TP{tp}): median token_time per batch; prompt_time linear in tokens",
    )


def model_file_plant(path: Path, *, grid_points: int = 64) -> Plant:
    """Build a plant from a ``controlkit.model/1`` file, tabulated over the fitted batch range."""
    from identification.plant import load_model

    pm = load_model(path)
    lat, mem = pm.latency, pm.memory
    lo, hi = (float(v) for v in lat.batch_range_)
    lo = max(lo, 1.0)
    grid = np.unique(np.round(np.linspace(lo, max(hi, lo + 1.0), grid_points)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExtrapolationWarning)
        step = np.asarray(lat.predict_step_s(grid), dtype=float)
        typ = float(lat.typical_context_tokens_)
        mid = float(grid[len(grid) // 2])
        d_ctx = float(lat.predict_step_s(mid, typ + 100.0)) - float(lat.predict_step_s(mid, typ))
        d_pre = float(lat.predict_step_s(lo, None, 1000.0)) - float(lat.predict_step_s(lo))
    step = np.maximum(step, 1e-6)
    capacity = int(mem.capacity_blocks_)
    if capacity < 1:
        raise ControlkitError(f"{path}: the model file has no KV capacity (capacity_blocks={capacity})")
    meta = dict(pm.meta)
    return Plant(
        name=f"model:{Path(path).name}",
        decode_batch=tuple(float(v) for v in grid),
        decode_step_s=tuple(float(v) for v in step),
        prefill_base_s=float(step[0]),
        prefill_s_per_token=max(d_pre, 0.0) / 1000.0,
        context_s_per_token=max(d_ctx, 0.0) / (100.0 * mid),
        context_ref_tokens=tuple(float(b) * typ for b in grid),
        kv_blocks_total=capacity,
        block_size=int(mem.params.block_size),
        max_model_len=int(meta.get("max_model_len", 4096)),
        max_num_seqs_default=int(meta.get("max_num_seqs", 256)),
        source=f"{path} (controlkit.model/1, latency form {lat.form_})",
    )
