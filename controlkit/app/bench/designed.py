"""The benchmark's designed controllers: identify a plant from simulated telemetry, design from the model.

The harness never designs from the plant's own table: :func:`design_controllers` simulates
the telemetry an operator would log (a ramp under vLLM's default cap), identifies a model from
its step and request logs, and designs each controller from that model with the same library
calls as ``controlkit design`` (:func:`controlkit.app.workflow.design_controller`).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlkit.app.bench.grid import BenchGrid
from controlkit.policyfile import PolicyFile
from identification.errors import ControlkitError

__all__ = ["DesignRequest", "design_controllers", "engine_context", "recorded_warnings"]


@dataclass(frozen=True, slots=True)
class DesignRequest:
    """What to design for one plant: the controllers, the SLOs and the engine's limits."""

    grid: BenchGrid
    wanted: list[str]
    tpot_s: float
    ttft_s: float
    default_cap: int
    ceiling: int
    nominal_req_s: float
    allow_uncertified: bool


@contextlib.contextmanager
def recorded_warnings(sink: list[str]) -> Any:
    """Record every warning raised inside the block into ``sink`` (each text once)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        text = f"{w.category.__name__}: {w.message}"
        if text not in sink:
            sink.append(text)


def engine_context(plant: Any, ceiling: int) -> Any:
    """Return the :class:`~policies.PolicyContext` of the engine of ``plant``, capped at ``ceiling``."""
    from policies import PolicyContext

    return PolicyContext(
        kv_blocks_total=int(plant.kv_blocks_total),
        block_size=int(plant.block_size),
        max_num_seqs=ceiling,
        max_batched_tokens=int(plant.max_batched_tokens_default),
        max_model_len=int(plant.max_model_len),
    )


def design_controllers(
    plant: Any,
    request: DesignRequest,
    specs: dict[str, str | Mapping[str, Any]],
    errors: dict[str, str],
    notes: dict[str, Any],
) -> None:
    """Identify ``plant`` from a simulated ramp, then design every wanted controller from the model.

    The identification run is a ramp from 0.2 to 1.2 x the nominal rate under vLLM's default
    cap (the telemetry an operator would log); its step and request logs are read back and
    fitted, never the plant's own table.  Each design's policy file goes into ``specs``
    (as written to disk); a failure goes into ``errors``; what happened into ``notes``.
    """
    grid, wanted, tpot_s, ttft_s = request.grid, request.wanted, request.tpot_s, request.ttft_s
    default_cap, ceiling, nominal_req_s = request.default_cap, request.ceiling, request.nominal_req_s
    from controlkit.sim import SLO, load_workload, simulate
    from policies import build_policy

    sink: list[str] = []
    with tempfile.TemporaryDirectory(prefix="controlkit-bench-") as tmp:
        steps = Path(tmp) / "id_steps.jsonl"
        requests = Path(tmp) / "id_requests.jsonl"
        model_path = Path(tmp) / "model.json"
        n = grid.id_num_requests
        r0, r1 = 0.2 * nominal_req_s, 1.2 * nominal_req_s
        workload_name = f"ramp:{r0:.6g}:{r1:.6g}:{2.0 * n / (r0 + r1):.6g}"
        try:
            with recorded_warnings(sink):
                wl = load_workload(workload_name, num_requests=n, seed=grid.seed + 1)
                ctx = engine_context(plant, ceiling)
                policy = build_policy(f"static:max_num_seqs={default_cap}", ctx)
                simulate(
                    plant,
                    wl,
                    policy,
                    slo=SLO(ttft_s=ttft_s, tpot_s=tpot_s),
                    max_num_seqs=ceiling,
                    seed=grid.seed + 1,
                    telemetry=steps,
                    requests_out=requests,
                )
                model = _identify(steps, requests)
                _save_model(model, model_path)
            notes["identification"] = {
                "workload": workload_name,
                "requests": n,
                "logs": "step records + request records",
                "summary": _model_summary(model),
            }
        except Exception as exc:
            for c in wanted:
                errors[c] = f"identification failed: {type(exc).__name__}: {exc}"
            notes["warnings"] = sink
            return
        designs: dict[str, Any] = {}
        for controller in wanted:
            text, pf = _design(model_path, controller, tpot_s, ttft_s, request.allow_uncertified, sink)
            if pf is None:
                errors[controller] = f"controlkit design --controller {controller} failed: {text.strip()[-400:]}"
                continue
            out = Path(tmp) / f"{controller}.json"
            pf.save(out)  # the policy file as written to disk (strict JSON), as a user would have it
            specs[controller] = json.loads(out.read_text())
            designs[controller] = {"uncertified": pf.uncertified, "output": text.strip()[-600:]}
        notes["designs"] = designs
    notes["warnings"] = sink



def _identify(steps: Path, requests: Path) -> Any:
    """Fit a plant model to the identification run's step and request logs (never the plant table)."""
    import identification

    telemetry = identification.read_telemetry([steps, requests])
    return identification.identify(telemetry)


def _save_model(model: Any, path: Path) -> None:
    if hasattr(model, "save"):
        model.save(path)
    else:
        path.write_text(json.dumps(model.to_dict(), indent=1))


def _model_summary(model: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    latency = getattr(model, "latency", None)
    for attr in ("slope_interval_", "coef_", "residual_scale_", "n_samples_fit_"):
        value = getattr(latency, attr, None)
        if value is not None:
            try:
                out[attr] = json.loads(json.dumps(value, default=lambda o: getattr(o, "tolist", lambda: str(o))()))
            except (TypeError, ValueError):
                out[attr] = str(value)
    return out


def _design(
    model_path: Path, controller: str, tpot_s: float, ttft_s: float, allow_uncertified: bool,
    sink: list[str],
) -> tuple[str, PolicyFile | None]:
    """Design ``controller`` from the identified model (the library calls ``controlkit design`` makes).

    Returns the design's summary (or the error) and its policy file; ``None`` when the design
    failed, or is uncertified and ``allow_uncertified`` is off.
    """
    from controlkit.app.workflow import design_controller, design_summary
    from controlkit.plant import DesignPlant
    from identification.plant import load_model

    try:
        with recorded_warnings(sink):
            plant = DesignPlant.from_model(load_model(model_path), source=str(model_path))
            design = design_controller(plant, controller, tpot_s, ttft_s)
            text = design_summary(design)
            if not design.certificate.holds and not allow_uncertified:
                return f"{text}\nError: the design is not certified (use --allow-uncertified)", None
            return text, design.to_policy_file(allow_uncertified=allow_uncertified)
    except ControlkitError as exc:
        return f"Error: {exc}", None
    except Exception as exc:  # a designer bug: reported in the cell, never a crashed benchmark
        return f"{type(exc).__name__}: {exc}", None
