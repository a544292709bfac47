"""The live demo's results: ``results.json`` and a markdown table (``table.md``)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fidelity", "markdown_table", "verdict", "write_report"]


def _ms(value: Any) -> str:
    return "–" if value is None or not math.isfinite(float(value)) else f"{1e3 * float(value):.1f}"


def markdown_table(results: dict[str, Any], sequence: str) -> str:
    """One row per policy run on ``sequence``: throughput, goodput, TTFT/TPOT, preemptions."""
    lines = ["| policy | tok/s | goodput req/s | SLO attain. | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms "
             "| TPOT p99 ms | preemptions |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results.get("runs", []):
        if r["sequence"] != sequence:
            continue
        lines.append(f"| {r['policy']} | {r['throughput_tok_s']:.0f} | {r['goodput_req_s']:.2f} | "
                     f"{r['slo_attainment']:.2f} | {_ms(r['ttft_p50_s'])} | {_ms(r['ttft_p99_s'])} | "
                     f"{_ms(r['tpot_p50_s'])} | {_ms(r['tpot_p99_s'])} | {r['num_preemptions']} |")
    return "\n".join(lines)


def _rel_err(sim: Any, real: Any) -> float:
    if sim is None or real is None or not real:
        return math.nan
    return abs(float(sim) - float(real)) / abs(float(real))


def fidelity(results: dict[str, Any]) -> dict[str, Any]:
    """Median absolute relative error of the simulator against the real runs (and the worst run)."""
    rows = [r for r in results.get("runs", []) if "sim_throughput_tok_s" in r]
    out: dict[str, Any] = {"num_runs": len(rows)}
    for key, real_key in (("throughput", "throughput_tok_s"), ("tpot_p50", "tpot_p50_s"),
                          ("ttft_p50", "ttft_p50_s")):
        errs = np.array([_rel_err(r[f"sim_{real_key}"], r[real_key]) for r in rows], dtype=float)
        ok = errs[np.isfinite(errs)]
        out[f"{key}_median_abs_rel_err"] = float(np.median(ok)) if len(ok) else math.nan
        if len(ok):
            worst = rows[int(np.nanargmax(errs))]
            out[f"{key}_worst"] = {"run": worst["run"], "err": float(np.nanmax(errs))}
    return out


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Check, on sequence B, the designed controller against the best static (chosen on A) and the default."""
    runs_b = {r["policy"]: r for r in results.get("runs", []) if r["sequence"] == "B"}
    designed = next((r for name, r in runs_b.items() if name.startswith("designed-")), None)
    default = next((r for name, r in runs_b.items() if name.startswith("default-")), None)
    best = runs_b.get(results.get("best_static_on_A", ""))
    if designed is None or default is None or best is None:
        return {"complete": False}
    slo = float(results["slo_tpot_s"])
    return {
        "complete": True,
        "best_static_on_A": results["best_static_on_A"],
        "tpot_p99_within_10pct": bool(designed["tpot_p99_s"] <= 1.1 * slo),
        "goodput_ge_best_static": bool(designed["goodput_req_s"] >= best["goodput_req_s"]),
        "fewer_preemptions_than_default": bool(designed["num_preemptions"] < default["num_preemptions"]),
        "designed_goodput_over_best_static": designed["goodput_req_s"] / max(best["goodput_req_s"], 1e-12),
    }


def write_report(results: dict[str, Any], out_dir: Path) -> str:
    """Add fidelity and verdict to ``results``; write ``results.json`` and ``table.md``; return the text."""
    results["fidelity"] = fidelity(results)
    results["verdict"] = verdict(results)
    text = (f"batch-1 step {_ms(results.get('b1_step_s'))} ms; SLO TPOT {_ms(results.get('slo_tpot_s'))} ms, "
            f"TTFT {_ms(results.get('slo_ttft_s'))} ms; evaluation load "
            f"{results.get('config', {}).get('load')} x burst capacity {results.get('capacity_req_s', 0):.1f} req/s\n\n"
            f"Sequence A (selection):\n\n{markdown_table(results, 'A')}\n\n"
            f"Sequence B (scored; best static chosen on A: {results.get('best_static_on_A')}):\n\n"
            f"{markdown_table(results, 'B')}\n\nverdict: {json.dumps(results['verdict'])}\n"
            f"simulator fidelity: {json.dumps(results['fidelity'])}\n")
    (out_dir / "results.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (out_dir / "table.md").write_text(text)
    return text
