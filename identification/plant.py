"""PlantModel: the identified plant (latency, memory, workload) and its ``controlkit.model/1`` file.

Examples
--------
>>> import numpy as np, pandas as pd, tempfile, os
>>> from identification.records import Telemetry
>>> rng = np.random.default_rng(0)
>>> b = rng.integers(1, 64, 400)
>>> steps = pd.DataFrame({"t_s": np.arange(400) * 0.02, "step_s": 0.01 + 2e-4 * b + rng.normal(0, 1e-4, 400),
...     "num_running": b, "num_waiting": 0, "num_prefill_tokens": 0, "num_decode_tokens": b,
...     "kv_blocks_used": 20 * b, "kv_blocks_total": 2000, "num_preempted": 0, "run": "r"})
>>> plant = identify(Telemetry(steps=steps))
>>> plant.memory.capacity_blocks_, plant.latency.form_
(2000, 'affine')
>>> path = os.path.join(tempfile.mkdtemp(), "model.json")
>>> plant.save(path)
>>> load_model(path).latency.coef_ == plant.latency.coef_
True
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from identification.derive import cross_check, derive_observations
from identification.errors import ControlkitError, MemoryUnknownWarning, TelemetryError
from identification.latency import LatencyModel
from identification.memory import MemoryModel
from identification.records import RUN_COLUMN, Telemetry
from identification.validation import check_model, strict_json
from identification.workload import WorkloadModel

__all__ = ["SCHEMA", "PlantModel", "identify", "load_model"]

#: Schema tag of the model file.
SCHEMA = "controlkit.model/1"
#: Largest model file read (bytes); fitted models are a few kB.
MAX_MODEL_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class PlantModel:
    """The identified plant: latency vs batch, KV memory, and (where known) the workload.

    Attributes
    ----------
    latency
        Fitted :class:`LatencyModel`.
    memory
        Fitted :class:`MemoryModel`.
    workload
        Fitted :class:`WorkloadModel`, or ``None`` when the telemetry says nothing about requests.
    meta
        Provenance: source files, rows, time span, runs, engine/GPU/model names where known.
    """

    latency: LatencyModel
    memory: MemoryModel
    workload: WorkloadModel | None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the model file's content as a JSON-ready dict."""
        return {
            "schema": SCHEMA,
            "latency": self.latency.to_dict(),
            "memory": self.memory.to_dict(),
            "workload": None if self.workload is None else self.workload.to_dict(),
            "meta": dict(self.meta),
        }

    def to_json(self) -> str:
        """Return the model file's text: strict JSON (NaN written as ``null``)."""
        return json.dumps(strict_json(self.to_dict()), indent=2, allow_nan=False) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the model file (``controlkit.model/1`` JSON)."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, path: str = "<memory>") -> PlantModel:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        TelemetryError
            Wrong schema tag, or a missing or malformed field (named in the message).
        """
        if not isinstance(d, Mapping):
            raise TelemetryError("expected a JSON object at the top level", path=path)
        if d.get("schema") != SCHEMA:
            raise TelemetryError(f"schema is {str(d.get('schema'))[:80]!r}; expected {SCHEMA!r}", path=path,
                                 field="schema")
        parts: dict[str, Any] = {}
        for key, loader in (("latency", LatencyModel.from_dict), ("memory", MemoryModel.from_dict),
                            ("workload", WorkloadModel.from_dict)):
            if key not in d:
                raise TelemetryError(f"missing section {key!r}", path=path, field=key)
            if d[key] is None and key == "workload":
                parts[key] = None
                continue
            try:
                parts[key] = loader(d[key])
            except KeyError as exc:
                raise TelemetryError(f"missing field {exc.args[0]!r} in section {key!r}", path=path,
                                     field=f"{key}.{exc.args[0]}") from None
            except (TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
                if isinstance(exc, ControlkitError):
                    raise TelemetryError(f"bad section {key!r}: {exc}", path=path, field=key) from None
                raise TelemetryError(f"malformed section {key!r}: {exc}", path=path, field=key) from None
        meta = d.get("meta", {})
        if meta is not None and not isinstance(meta, Mapping):
            raise TelemetryError(f"section 'meta' must be an object, got {type(meta).__name__}", path=path,
                                 field="meta")
        return cls(parts["latency"], parts["memory"], parts["workload"], dict(meta) if meta else {})


def load_model(path: str | Path) -> PlantModel:
    """Read a ``controlkit.model/1`` file.

    Raises
    ------
    TelemetryError
        The file is missing, not JSON, of another schema, or lacks a field (named).
    """
    p = str(path)
    try:
        if not Path(path).is_file():
            raise TelemetryError("cannot read the model file: no such regular file", path=p)
        size = Path(path).stat().st_size
        if size > MAX_MODEL_BYTES:
            raise TelemetryError(f"the model file is {size} bytes; at most {MAX_MODEL_BYTES} are read", path=p)
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise TelemetryError(f"cannot read the model file: {exc.strerror}", path=p) from None
    except UnicodeDecodeError as exc:
        raise TelemetryError(f"not UTF-8 text (byte {exc.start}); expected a JSON model file", path=p) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TelemetryError(f"not JSON: {exc.msg}", path=p, line=exc.lineno) from None
    except RecursionError:
        raise TelemetryError("JSON nested too deeply; expected a controlkit.model/1 file", path=p) from None
    return check_model(PlantModel.from_dict(_nan_back(data), path=p), path=p)


def _nan_back(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (float("nan") if v is None and k in _NULLABLE_FLOATS else _nan_back(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_back(v) for v in obj]
    return obj


_NULLABLE_FLOATS = frozenset({"mape_holdout_levels", "typical_context_tokens", "typical_prefill_tokens", "r2",
                              "r2_rows", "mape_fit",
                              "residual_scale_s"})


def identify(
    telemetry: Telemetry,
    *,
    holdout_fraction: float = 0.25,
    seed: int = 0,
    form: str = "auto",
    loss: str = "huber",
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    block_size: int = 16,
    capacity_blocks: int = 0,
) -> PlantModel:
    """Identify the plant from telemetry: fit the latency, memory and workload models.

    Parameters
    ----------
    telemetry
        What :func:`identification.read_telemetry` returned (step records or sampled metrics;
        request records add the workload).
    holdout_fraction, seed
        Share of runs (or batch levels) held out to choose the latency form and report its
        held-out MAPE, and the seed of that split.
    form, loss, n_bootstrap, confidence
        Passed to :class:`LatencyModel`.
    block_size, capacity_blocks
        Passed to :class:`MemoryModel` (``capacity_blocks=0`` reads the capacity from the data).

    Raises
    ------
    TelemetryError
        No step data to fit, bad values, or no KV capacity.
    """
    obs = derive_observations(telemetry, block_size=block_size)
    latency = LatencyModel(form=form, loss=loss, n_bootstrap=n_bootstrap, confidence=confidence,
                           holdout_fraction=holdout_fraction, seed=seed).fit(obs)
    memory = _fit_memory(telemetry, block_size, capacity_blocks)
    workload: WorkloadModel | None
    try:
        workload = WorkloadModel().fit(telemetry)
    except TelemetryError:
        if len(telemetry.requests) > 0:
            raise
        workload = None
    model = PlantModel(latency, memory, workload, _meta(telemetry, obs.source, cross_check(obs)))
    return check_model(model, path=", ".join(s.path for s in telemetry.sources) or "<telemetry>")


def _fit_memory(telemetry: Telemetry, block_size: int, capacity_blocks: int) -> MemoryModel:
    """Fit the memory model; without any KV capacity, mark the memory unknown and warn loudly."""
    try:
        return MemoryModel(block_size=block_size, capacity_blocks=capacity_blocks).fit(telemetry)
    except TelemetryError as exc:
        if exc.field not in ("num_gpu_blocks", "kv_blocks_used"):
            raise
        reason = str(exc)
    warnings.warn(
        f"KV MEMORY UNKNOWN: {reason}. Only the latency model is identified; the model file marks the memory "
        "unknown, and `controlkit design` will not claim memory safety (telemetry with kv_blocks_total, or "
        "num_gpu_blocks from a joined run index, gives it; identify(capacity_blocks=...) in Python)",
        MemoryUnknownWarning,
        stacklevel=3,
    )
    return MemoryModel.unknown(reason, block_size=block_size)


def _meta(telemetry: Telemetry, source: str, checks: Mapping[str, float]) -> dict[str, Any]:
    frames = {"steps": telemetry.steps, "samples": telemetry.samples, "requests": telemetry.requests}
    runs: set[str] = set()
    for frame in frames.values():
        if RUN_COLUMN in frame.columns and len(frame):
            runs.update(frame[RUN_COLUMN].astype(str).unique().tolist())
    starts = [s.t_start_s for s in telemetry.sources]
    ends = [s.t_end_s for s in telemetry.sources]
    return {
        "sources": [{"path": s.path, "kind": s.kind, "rows": s.rows, "t_start_s": s.t_start_s,
                     "t_end_s": s.t_end_s} for s in telemetry.sources],
        "rows": {k: len(v) for k, v in frames.items()},
        "time_span_s": [min(starts), max(ends)] if starts else None,
        "runs": sorted(runs)[:200],
        "n_runs": len(runs),
        "skipped_rows": len(telemetry.skipped),
        "latency_source": source,
        "cross_check": dict(checks),
        **_names(telemetry),
        **{k: str(v) for k, v in telemetry.meta.items()},
    }


_NAME_COLUMNS = {"model": "model", "gpu": "gpu", "hardware": "gpu", "engine": "engine",
                 "vllm_version": "engine_version", "max_model_len": "max_model_len"}


def _names(telemetry: Telemetry) -> dict[str, str]:
    """Model, GPU and engine names where a key column holds a single value for the selection."""
    out: dict[str, str] = {}
    frames = [telemetry.samples, telemetry.steps, getattr(telemetry, "runs", None)]
    for frame in frames:
        if frame is None or len(frame) == 0:
            continue
        for column, key in _NAME_COLUMNS.items():
            if column in frame.columns and key not in out:
                values = frame[column].dropna().astype(str).unique()
                if len(values) == 1:
                    out[key] = str(values[0])
    return out
