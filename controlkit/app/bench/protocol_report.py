"""Render a protocol run as docs/benchmarks.md, and save / load it as JSON.

Every number in the report is computed on the hold-out seeds only; the tune seeds appear
only as the hindsight choices they made (the best static caps per plant).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from controlkit.app.bench.grid import CellTask, PlantSetup, SLOSpec
from controlkit.app.bench.protocol import GOAL_LOADS, Protocol
from controlkit.app.bench.protocol_run import BEST_GUARDED, BEST_STATIC_PLANT, ProtocolResults
from controlkit.app.bench.protocol_stats import CellStats, cell_stats, median_ratio
from controlkit.app.bench.results import CellResult, _nan_to_none, _none_to_nan
from identification.errors import ControlkitError

__all__ = ["PROTOCOL_SCHEMA", "load_protocol_json", "protocol_text", "render_protocol", "save_protocol_json"]

PROTOCOL_SCHEMA = "controlkit.bench-protocol/1"
#: The goal of issue 12: controllers >= this x the best guarded static cap chosen once per plant.
GOAL_RATIO = 1.10


def _cells_to_json(cells: Sequence[CellResult]) -> list[dict[str, Any]]:
    return [{"task": asdict(c.task), "metrics": dict(c.metrics), "error": c.error, "wall_s": c.wall_s}
            for c in cells]


def _cells_from_json(docs: Sequence[dict[str, Any]]) -> list[CellResult]:
    return [CellResult(CellTask(**d["task"]), d["metrics"], d["error"], "", d["wall_s"]) for d in docs]


def save_protocol_json(results: ProtocolResults, path: str | Path) -> None:
    """Write a protocol run as JSON (schema :data:`PROTOCOL_SCHEMA`)."""
    doc = {
        "schema": PROTOCOL_SCHEMA,
        "protocol": asdict(results.protocol),
        "setups": {k: asdict(v) for k, v in results.setups.items()},
        "capacity": results.capacity,
        "caps": {k: list(v) for k, v in results.caps.items()},
        "chosen": results.chosen,
        "tune": _cells_to_json(results.tune),
        "holdout": _cells_to_json(results.holdout),
        "wall_s": results.wall_s,
        "command": results.command,
    }
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(_nan_to_none(doc)) + "\n")


def load_protocol_json(path: str | Path) -> ProtocolResults:
    """Read a file written by :func:`save_protocol_json`."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ControlkitError(f"{path}: cannot read protocol results: {exc}") from exc
    if doc.get("schema") != PROTOCOL_SCHEMA:
        raise ControlkitError(f"{path}: not a {PROTOCOL_SCHEMA} document (schema={doc.get('schema')!r})")
    p = dict(doc["protocol"])
    p["slo"] = SLOSpec(**p["slo"])
    for key in ("plants", "workloads", "loads", "tune_seeds", "holdout_seeds", "baselines", "controllers",
                "sweep_loads"):
        p[key] = tuple(p[key])
    return ProtocolResults(
        protocol=Protocol(**p),
        setups={k: PlantSetup(**_none_to_nan(v)) for k, v in doc["setups"].items()},
        capacity=doc["capacity"],
        caps={k: tuple(v) for k, v in doc["caps"].items()},
        chosen=doc["chosen"],
        tune=_cells_from_json(doc["tune"]),
        holdout=_cells_from_json(doc["holdout"]),
        wall_s=float(doc["wall_s"]),
        command=str(doc["command"]),
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows),
            ""]


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _secs(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.1f}"


def _policies(r: ProtocolResults) -> list[str]:
    return [*r.protocol.baselines, BEST_STATIC_PLANT, BEST_GUARDED, *r.protocol.controllers]


def _headline(r: ProtocolResults, stats: dict[tuple[str, str, float, str], CellStats]) -> list[str]:
    lo, hi = GOAL_LOADS
    rows = []
    for pol in _policies(r):
        mine = [s for (p, w, ld, q), s in stats.items() if q == pol and lo <= ld <= hi]
        rows.append([
            f"**{pol}**" if pol in r.protocol.controllers else pol,
            median_ratio(r.holdout, pol, BEST_GUARDED, loads=GOAL_LOADS, boot=1000).render(),
            median_ratio(r.holdout, pol, BEST_STATIC_PLANT, loads=GOAL_LOADS, boot=1000).render(),
            median_ratio(r.holdout, pol, "static-default", loads=GOAL_LOADS, boot=1000).render(),
            _pct(_median([s.mean["slo_attainment"] for s in mine])),
            _pct(_median([s.mean["rejection_rate"] for s in mine])),
            _pct(_median([s.mean["timeout_rate"] for s in mine])),
            _secs(max([s.max_ttft_all_p99_s for s in mine], default=math.nan)),
            str(sum(s.failed for s in mine)),
        ])
    head = ["policy", "goodput vs best guarded static/plant (median [95% CI])", "vs best bare static/plant",
            "vs vLLM default", "attainment (median cell)", "rejected (median cell)", "timed out (median cell)",
            "worst all-request TTFT p99 (s)", "failed runs"]
    return [f"## Headline: hold-out seeds, loads {lo}–{hi}× measured capacity", "", *_table(head, rows)]


def _median(xs: list[float]) -> float:
    xs = sorted(x for x in xs if math.isfinite(x))
    return xs[len(xs) // 2] if len(xs) % 2 else (0.5 * (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) if xs else math.nan)


def _goal(r: ProtocolResults) -> list[str]:
    rows = []
    for c in r.protocol.controllers:
        ratio = median_ratio(r.holdout, c, BEST_GUARDED, loads=GOAL_LOADS, boot=1000)
        met = "yes" if ratio.median >= GOAL_RATIO else "no"
        rows.append([c, f"≥ {GOAL_RATIO:.2f}×", ratio.render(), met,
                     "yes" if ratio.lo >= GOAL_RATIO else "no"])
    head = ["controller", "goal (median, goal loads, hold-out)", "measured", "median met", "whole 95% CI above"]
    return ["## Issue 12 goal, as measured", "", *_table(head, rows)]


def _why(mine: CellStats, ref: CellStats) -> str:
    a, b = mine.mean, ref.mean
    shed_a, shed_b = a["rejection_rate"] + a["timeout_rate"], b["rejection_rate"] + b["timeout_rate"]
    miss_a, miss_b = 1 - a["slo_attainment"] - shed_a, 1 - b["slo_attainment"] - shed_b
    parts = []
    if shed_a > shed_b + 0.01:
        parts.append(f"sheds more ({_pct(shed_a)} rejected or timed out vs {_pct(shed_b)})")
    if miss_a > miss_b + 0.01:
        parts.append(f"more served requests miss an SLO ({_pct(miss_a)} vs {_pct(miss_b)})")
    return "; ".join(parts) or "within noise of the reference (attainment and shedding alike)"


def _losses(r: ProtocolResults, stats: dict[tuple[str, str, float, str], CellStats]) -> list[str]:
    rows = []
    for (p, w, ld, pol), s in sorted(stats.items()):
        ref = stats.get((p, w, ld, BEST_GUARDED))
        if pol not in r.protocol.controllers or ref is None or not ref.mean["goodput_req_s"] > 0:
            continue
        ratio = s.mean["goodput_req_s"] / ref.mean["goodput_req_s"]
        if ratio < 1.0:
            overlap = "yes" if s.goodput_ci[1] >= ref.goodput_ci[0] else "no"
            rows.append([pol, f"`{p}` × `{w}` × {ld:g}", f"{ratio:.2f}×", overlap, _why(s, ref)])
    head = ["controller", "cell", "goodput vs best guarded static/plant", "95% intervals overlap", "why (measured)"]
    return ["## Every cell where a controller loses to the best guarded static cap", "",
            *(_table(head, rows) if rows else ["None.", ""])]


def _setup(r: ProtocolResults) -> list[str]:
    rows = []
    for p, s in r.setups.items():
        cap = ", ".join(
            f"{w}: {c.get('capacity_req_s', math.nan):.2f} (burst {c.get('burst_req_s', math.nan):.2f})"
            for w, c in r.capacity.get(p, {}).items()
        )
        caps = r.caps.get(p, ())
        rows.append([f"`{p}`", f"{1e3 * s.tpot_slo_s:.1f}", f"{s.ttft_slo_s:.2f}",
                     f"{r.protocol.timeout_factor * s.ttft_slo_s:.1f}", f"{s.default_cap}/{s.max_batched_tokens}",
                     cap, f"{len(caps)} caps {caps[0]}–{caps[-1]}" if caps else "n/a",
                     str(r.chosen.get(p, {}).get("static", "n/a")), str(r.chosen.get(p, {}).get("guarded", "n/a"))])
    head = ["plant", "TPOT SLO (ms)", "TTFT SLO (s)", "client timeout (s)", "vLLM default seqs/tokens",
            "measured capacity, req/s (first guess from a burst)", "static sweep", "best bare cap (tune)",
            "best guarded cap (tune)"]
    return ["## Plants, capacities and hindsight choices", "", *_table(head, rows)]


def _full(r: ProtocolResults, stats: dict[tuple[str, str, float, str], CellStats]) -> list[str]:
    out = ["## The whole table (hold-out seeds)", "",
           "Each cell: mean goodput in req/s [95% t-interval over seeds] · attainment · rejected · timed out · "
           "worst all-request TTFT p99 (s).", ""]
    for p in r.setups:
        for w in r.protocol.workloads:
            rows = []
            for pol in _policies(r):
                row = [f"**{pol}**" if pol in r.protocol.controllers else pol]
                for ld in r.protocol.loads:
                    s = stats.get((p, w, ld, pol))
                    if s is None or s.seeds == 0:
                        row.append("failed" if s else "—")
                        continue
                    m = s.mean
                    row.append(f"{m['goodput_req_s']:.2f} [{s.goodput_ci[0]:.2f}, {s.goodput_ci[1]:.2f}] · "
                               f"{_pct(m['slo_attainment'])} · {_pct(m['rejection_rate'])} · "
                               f"{_pct(m['timeout_rate'])} · {_secs(s.max_ttft_all_p99_s)}")
                rows.append(row)
            out += [f"### `{p}` × `{w}`", "", *_table(["policy", *(f"load {ld:g}" for ld in r.protocol.loads)], rows)]
    return out


def protocol_text(r: ProtocolResults) -> str:
    """Return the protocol as the report states it, with this run's numbers."""
    p = r.protocol
    return f"""## Protocol (enforced by `controlkit.app.bench.protocol`)

- **Plants / workloads**: {", ".join(f"`{x}`" for x in p.plants)} × {", ".join(f"`{w}`" for w in p.workloads)}
  (`step:a:b`: Poisson, rate a × load × capacity, then b × load × capacity from half-way).
- **Loads relative to measured capacity**: {", ".join(f"{x:g}" for x in p.loads)} × the capacity of each
  (plant, workload), *measured* on the plant: the highest arrival rate at which vLLM's default configuration
  (bare) meets both SLOs for ≥ 90% of the requests (mean over all five tune windows, with the same window,
  timeout and warm-up as every cell), found by bisection in log-rate to 4%, starting from the completion rate of
  the best TPOT-feasible static cap on a burst of {p.capacity_requests} of the workload's requests.
- **Fixed measurement window**: each cell replays arrivals for warm-up {p.warmup_s:g} s + window
  {p.window_s:g} s + a tail of max({p.tail_s:g} s, the client timeout), then lets the engine drain, so that every
  request arriving in the window has ended before it is judged. Goodput = requests that meet both SLOs and
  *finish inside the window*, divided by the window length (never the policy's own drain time).
  Attainment, rejection rate, timeout rate and the all-request TTFT p99 (time to the first token *or* to the
  rejection / abort) are over the requests that *arrive* in the window.
- **Bounded waiting**: every request has a client timeout of {p.timeout_factor:g} × the plant's TTFT SLO; a
  request with no first token by then is aborted by its client (its slot and KV blocks are freed). Shed and
  timed-out requests are never good.
- **Admission layer for every baseline**: `+guard` rows (and `{BEST_GUARDED}`) run the baseline behind the
  controllers' admission layer (`controlkit.admission`: KV-memory guard, deadline-aware order) with the same
  numbers as the plant's designed controllers and late requests `{p.late_action}`ed (HTTP 429/503 style).
  Rows without `+guard` are bare (FCFS, no shedding, clients time out).
- **Static caps swept from 1**: every integer 1–8, then geometric with ratio {p.cap_ratio:g}, up to twice the
  KV-bound batch (and vLLM's default cap), each with vLLM's default token budget; bare and guarded.
- **Research baselines scaled to the SLO**: Pang's D_SLA is the TPOT SLO and its dead band ε_D is 20% of it
  (SGLang's 10 ms on 50 ms); BCA's B_opt comes from its offline sweep on the plant.
- **vLLM's defaults per GPU** (vLLM 0.33 `vllm serve`): H100 1024 sequences / 8192 tokens, A100 256 / 2048.
- **Seeds and split (frozen in code)**: tune seeds {list(p.tune_seeds)} (⊆ 0–4), hold-out seeds
  {list(p.holdout_seeds)} (⊆ 5–9). A seed picks a distinct window of a trace (or new arrivals for synthetic
  workloads); tune and hold-out windows interleave over the trace (tune seed s is window 2s, hold-out seed
  5+s window 2s+1). The best static caps are chosen **once per plant on the tune seeds** (highest mean goodput,
  normalised per (workload, load) by the best cap, over loads {GOAL_LOADS[0]}–{GOAL_LOADS[1]}); every number
  below is computed on the hold-out seeds only. The controllers are designed from identified telemetry with
  no tuning on either split.
- **Statistics**: per cell the mean over hold-out seeds with a Student-t 95% interval; the headline is the
  median over operating points (plant × workload × load in {GOAL_LOADS[0]}–{GOAL_LOADS[1]}) of the ratio of
  mean goodputs (paired seeds), with a 95% percentile-bootstrap interval (seeds resampled per point).
"""


#: How shedding, cancellation and SLO classes work (the features the protocol relies on).
FEATURES_TEXT = """## Load shedding, client timeouts and SLO classes

- **Client timeouts** (`SLO.timeout_s`, per SLO class): the simulator aborts a request that has no first token
  `timeout_s` after it arrived, whether it waits or is part-way through a chunked prefill; its slot and KV blocks
  are freed at once. Such requests end *timed out*.
- **Early rejection**: a policy sheds load by returning `BatchLimits.reject` (indices into the listed waiting
  requests; applied once, at that step), and `simulate(max_num_queued_reqs=N)` rejects arrivals while N requests
  are unfinished, as vLLM's `--max-num-queued-reqs` answers HTTP 503. Such requests end *rejected*.
- **Every request ends exactly once** as finished, rejected or timed out (`RequestOutcomes.status`; hypothesis tests
  check it together with block conservation after every step); a rejected or timed-out request is never good.
- **The admission layer's mode** (`AdmissionGuard(late_action=...)`, `params.guard.late_action` in a policy file,
  `late_action=` in `static-guard`): `demote` (the default: late requests wait behind the live ones, bounded by their
  clients' timeouts) or `reject` (late requests are shed at once). The protocol runs every policy behind the layer
  in one mode.
- **SLO classes**: `Workload.slo_class` indexes a sequence of `SLO`s passed to `simulate`; each class has its own
  TTFT/TPOT targets and timeout, the policy sees `Observation.waiting_slo_class` and `class_ttft_slo_s`, the layer
  admits live requests earliest-deadline-first over the classes' own targets, and `SimMetrics.class_attainment`
  reports each class.
- **In vLLM** (`policies/vllm/shed.py`): the hook turns `BatchLimits.reject` into
  `Scheduler.finish_requests(ids, RequestStatus.FINISHED_ABORTED)` (vLLM's own abort path, which frees the blocks),
  reports each shed request to its client with vLLM's `abort` finish reason at the next `update_from_output()`, and
  counts them in `controlkit_requests_shed_total` (Prometheus text format, `LoadShedder.exposition()`). Client
  timeouts need no hook: vLLM aborts a request when its client disconnects.
"""


def render_protocol(r: ProtocolResults) -> str:
    """Return the whole markdown report of a protocol run."""
    stats = cell_stats(r.holdout)
    n_tune, n_hold = len(r.tune), len(r.holdout)
    failed = sum(1 for c in [*r.tune, *r.holdout] if not c.ok)
    lines = [
        "# Benchmarks", "",
        "Generated by `controlkit bench`; do not edit by hand. All numbers come from the closed-loop simulator "
        "(`controlkit.sim`) on plants built from measured GPU data, on the **hold-out seeds** only.", "",
        "```", r.command or "controlkit bench", "```", "",
        f"{n_tune} tune cells + {n_hold} hold-out cells ({failed} failed) in {r.wall_s:.0f} s.", "",
        *_headline(r, stats), *_goal(r), *_losses(r, stats),
        protocol_text(r).rstrip(), "", FEATURES_TEXT, *_setup(r), *_full(r, stats),
    ]
    return "\n".join(lines).rstrip() + "\n"
