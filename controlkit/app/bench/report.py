"""Write ``docs/benchmarks.md`` and its plots from :class:`~controlkit.app.bench.results.BenchResults`.

The report always shows the whole table: every policy on every (plant, workload, load),
failures included, with the headline medians and issue 4's goals measured against it.

Examples
--------
>>> fmt_ratio(1.234), fmt_ratio(float("inf")), fmt_ratio(float("nan"))
('1.23×', '∞', '–')
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from controlkit.app.bench.capacity import ATTAINMENT_THRESHOLD
from controlkit.app.bench.grid import BEST_STATIC, CONTROLLERS, STATIC_DEFAULT, is_non_stationary
from controlkit.app.bench.results import BenchResults
from controlkit.app.bench.summary import (
    FEASIBLE_ATTAINMENT,
    capacities,
    check_goals,
    feasible,
    pair_ratios,
    policies_in,
    summarize,
)

__all__ = ["fmt_ratio", "render_markdown", "write_plots", "write_report"]

#: Policies drawn in colour in the per-workload plots (the rest in grey).
_HIGHLIGHT = (STATIC_DEFAULT, BEST_STATIC, "pang-a1a2", *CONTROLLERS)


def fmt_ratio(x: float) -> str:
    """Format a ratio for a table: ``1.23×``, ``∞``, or ``–`` when undefined."""
    if math.isnan(x):
        return "–"
    if math.isinf(x):
        return "∞"
    return f"{x:.2f}×"


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.1f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _main_policies(results: BenchResults) -> list[str]:
    return [p for p in policies_in(results) if not (p.startswith("static-") and p != STATIC_DEFAULT)]


def _setup_section(results: BenchResults) -> list[str]:
    g = results.grid
    lines = ["## Setup", ""]
    lines += [
        f"- Plants: {', '.join(f'`{p}`' for p in g.plants)}.",
        f"- Workloads: {', '.join(f'`{w}`' for w in g.workloads)} "
        "(step and ramp rates are relative to each plant's nominal rate; they are the non-stationary rows).",
        f"- Load factors: {', '.join(f'{x:g}' for x in g.loads)} × the nominal rate.",
        f"- {g.num_requests} requests per cell, horizon {g.horizon_s:g} s, seed {g.seed} "
        "(every policy sees the same arrivals).",
        f"- SLOs per plant: TPOT p99 ≤ {g.slo.tpot_factor:g} × the batch-1 decode step; TTFT p99 ≤ "
        f"max({g.slo.ttft_s:g} s, {g.slo.ttft_prefill_factor:g} × one full prefill chunk).",
        f"- Best static in hindsight: the best of the static caps {', '.join(map(str, g.static_caps))} "
        f"(and the default), each with the engine's token budget and with "
        f"{', '.join(map(str, g.static_token_budgets)) or 'no other'} tokens per step, "
        "at each operating point, chosen on the result (an oracle, like vLLM's auto_tune).",
        "- `guarded-static` is an ablation: vLLM's default static cap behind the controllers' shared "
        "admission layer (online KV-memory guard and deadline-aware admission order, "
        "`controlkit.admission`), to separate that layer's gain from the feedback law's.",
        "",
    ]
    rows = []
    for plant in g.plants:
        s = results.setups[plant]
        nominal = ", ".join(f"{w}: {r:.2f}" for w, r in s.nominal_rate_req_s.items())
        rows.append(
            [
                f"`{plant}`",
                f"{1000 * s.batch1_step_s:.2f}",
                f"{1000 * s.tpot_slo_s:.2f}",
                f"{s.ttft_slo_s:.2f}",
                str(s.default_cap),
                str(s.max_num_seqs),
                nominal or "–",
            ]
        )
    lines += _table(
        [
            "plant",
            "batch-1 step (ms)",
            "TPOT SLO (ms)",
            "TTFT SLO (s)",
            "static default",
            "engine ceiling",
            "nominal rate (req/s)",
        ],
        rows,
    )
    return [*lines, *_provenance(results), ""]


def _provenance(results: BenchResults) -> list[str]:
    """List, per plant, how its controllers were identified and designed and how BCA was swept."""
    g = results.grid
    lines = ["### How the controllers and BCA were obtained", ""]
    for plant in g.plants:
        s = results.setups[plant]
        if "prepare_error" in s.notes:
            lines.append(f"- `{plant}`: **not prepared**: {s.notes['prepare_error']}")
            continue
        ident = s.notes.get("identification")
        if ident:
            summary = dict(ident.get("summary", {}))
            slope = summary.get("slope_interval_")
            slope_text = (
                f"slope interval [{slope[0]:.3g}, {slope[1]:.3g}] s/seq"
                if isinstance(slope, list) and len(slope) == 2
                else "no slope interval"
            )
            lines.append(
                f"- `{plant}`: model identified from the {ident.get('logs', 'step log')} of a simulated "
                f"run (`{ident.get('workload')}`, {ident.get('requests')} requests, static default cap): "
                f"{slope_text}, {summary.get('n_samples_fit_', '?')} steps fitted."
            )
        else:
            lines.append(f"- `{plant}`:")
        for c, d in dict(s.notes.get("designs", {})).items():
            tag = " **(uncertified: written with --allow-uncertified)**" if d.get("uncertified") else ""
            lines.append(f"  - `{c}` designed with `controlkit design`{tag}.")
        bca = s.notes.get("bca")
        if bca:
            lines.append(
                f"  - BCA sweep ({bca.get('requests')} ShareGPT requests at once per cap, rule "
                f"{bca.get('rule')}): B_opt = {bca.get('b_opt')}."
            )
        for label, err in s.errors.items():
            lines.append(f"  - `{label}` not prepared: {err}")
    return lines


def _headline(results: BenchResults) -> list[str]:
    rows = []
    for s in summarize(results):
        name = f"**{s.policy}**" if s.policy in CONTROLLERS else s.policy
        rows.append(
            [
                name,
                fmt_ratio(s.goodput_vs_static),
                fmt_ratio(s.goodput_vs_best),
                fmt_ratio(s.goodput_vs_best_nonstationary),
                fmt_ratio(s.goodput_vs_pang),
                _pct(s.attainment_median),
                f"{s.feasible_met}/{s.feasible_total}",
                fmt_ratio(s.capacity_vs_static),
                f"{s.preemptions_total:.0f}",
                _pct(s.kv_usage_mean),
                f"{s.cells_failed}/{s.cells_total}",
            ]
        )
    lines = ["## Headline (medians over plants × workloads)", ""]
    lines += _table(
        [
            "policy",
            "goodput vs static default",
            "vs best static",
            "vs best static, non-stationary",
            "vs pang-a1a2",
            "attainment (median cell)",
            f"cells ≥ {FEASIBLE_ATTAINMENT:.0%} where feasible",
            "capacity vs static default",
            "preemptions (total)",
            "KV usage (median)",
            "failed cells",
        ],
        rows,
    )
    goals = check_goals(summarize(results))
    if goals:
        lines += ["## Issue 4 goals, as measured", ""]
        lines += _table(
            ["controller", "goal", "target", "measured", "met"],
            [[g.policy, g.goal, g.target, g.measured, "yes" if g.met else "**no**"] for g in goals],
        )
    return lines


def _non_stationary(results: BenchResults) -> list[str]:
    ns = [w for w in results.grid.workloads if is_non_stationary(w)]
    if not ns or BEST_STATIC not in {c.task.policy for c in results.cells}:
        return []
    pols = _main_policies(results)
    ratios = {p: pair_ratios(results, p, BEST_STATIC, non_stationary_only=True) for p in pols}
    keys = [(pl, w) for pl in results.grid.plants for w in ns]
    rows = [[f"`{pl}`", f"`{w}`", *[fmt_ratio(ratios[p].get((pl, w), math.nan)) for p in pols]] for pl, w in keys]
    return [
        "## Non-stationary workloads: goodput against the best static in hindsight",
        "",
        *_table(["plant", "workload", *pols], rows),
    ]


def _losses(results: BenchResults) -> list[str]:
    """Where each controller loses: feasible cells under the goal, pairs below the best static."""
    table, feas = results.lookup(), feasible(results)
    ctrls = [p for p in CONTROLLERS if any(c.task.policy == p for c in results.cells)]
    rows = []
    for plant, workload, load in sorted(feas):
        for p in ctrls:
            c, ref = table.get((plant, workload, load, p)), table.get((plant, workload, load, BEST_STATIC))
            if c is not None and c.ok and ref is not None and c.slo_attainment < FEASIBLE_ATTAINMENT:
                rows.append([p, f"`{plant}` × `{workload}` at load {load:g}",
                             f"attainment {_pct(c.slo_attainment)} (best static {_pct(ref.slo_attainment)})"])
    if BEST_STATIC in {c.task.policy for c in results.cells}:
        for p in ctrls:
            for (plant, workload), r in sorted(pair_ratios(results, p, BEST_STATIC).items()):
                if r < 1.0:
                    rows.append([p, f"`{plant}` × `{workload}`", f"goodput {fmt_ratio(r)} the best static"])
    if not rows:
        return []
    return ["## Where the controllers lose", "", *_table(["controller", "where", "what"], rows)]


def _full_tables(results: BenchResults) -> list[str]:
    lines = [
        "## The whole table",
        "",
        "Each cell: goodput in requests/s meeting both SLOs, then SLO attainment. "
        f"Capacity: the largest load factor with ≥ {ATTAINMENT_THRESHOLD:.0%} attainment "
        "(interpolated; ≥ means it never dropped, < means it failed at the lightest load).",
        "",
    ]
    table = results.lookup()
    pols = policies_in(results)
    loads = results.grid.loads
    for plant in results.grid.plants:
        for workload in results.grid.workloads:
            lines.append(f"### `{plant}` × `{workload}`" + (" (non-stationary)" if is_non_stationary(workload) else ""))
            lines.append("")
            caps = {p: capacities(results, p).get((plant, workload)) for p in pols}
            rows = []
            for p in pols:
                row = [p]
                for load in loads:
                    c = table.get((plant, workload, load, p))
                    if c is None:
                        row.append("")
                    elif not c.ok:
                        row.append("FAILED")
                    else:
                        pick = f" [{c.chosen}]" if c.chosen and p == BEST_STATIC else ""
                        row.append(f"{c.goodput_req_s:.2f} ({_pct(c.slo_attainment)}){pick}")
                cap = caps.get(p)
                row.append(cap.render() if cap is not None else "–")
                rows.append(row)
            lines += _table(["policy", *[f"load {x:g}" for x in loads], "capacity"], rows)
    return lines


def _failures(results: BenchResults) -> list[str]:
    failed = results.failures
    lines = ["## Failures", ""]
    if not failed:
        return [*lines, "None: every cell ran.", ""]
    groups: dict[str, list[str]] = {}
    for c in failed:
        groups.setdefault(c.error, []).append(f"{c.task.policy} @ {c.task.plant} × {c.task.workload} × {c.task.load:g}")
    for err, where in groups.items():
        more = f" and {len(where) - 5} more" if len(where) > 5 else ""
        lines.append(f"- `{err[:300]}`: {'; '.join(where[:5])}{more}")
    return [*lines, ""]


def render_markdown(results: BenchResults, *, image_paths: Sequence[str] = ()) -> str:
    """Render the full report as Markdown text."""
    head = [
        "# Benchmarks",
        "",
        "Generated by `controlkit bench`; do not edit by hand. All numbers come from the closed-loop "
        "simulator (`controlkit.sim`) on plants built from measured GPU data.",
        "",
    ]
    if results.command:
        head += ["```", results.command, "```", ""]
    n_sim = sum(
        1 for c in results.cells if c.task.policy != BEST_STATIC and not (c.task.policy == STATIC_DEFAULT and c.chosen)
    )
    head += [
        f"{n_sim} simulated cells ({len(results.failures)} failed) in {results.wall_s:.0f} s ({results.executor}).",
        "",
    ]
    body = [*_headline(results), *_losses(results), *_non_stationary(results)]
    body += [f"![{Path(p).stem}]({p})" for p in image_paths] + [""]
    body += [*_setup_section(results), *_full_tables(results), *_failures(results)]
    body += [
        "## Method",
        "",
        "- Goodput ratio per (plant, workload) = Σ over loads of the policy's goodput ÷ the same sum for the "
        "reference (cells where both ran); the headline takes the median over (plant, workload) pairs.",
        f"- A load is *feasible* when the best static in hindsight attains ≥ {FEASIBLE_ATTAINMENT:.0%}; "
        "the attainment goal counts feasible cells only.",
        "- The controllers (pid, optimal, mpc) are designed by `controlkit design` from a model that "
        "`identification.identify` fitted to a simulated step log, never from the plant's table; "
        "they are evaluated on the measured plant.",
        "",
    ]
    return "\n".join(head + body)


def write_plots(results: BenchResults, img_dir: Path) -> list[Path]:
    """Goodput-vs-load panels and the headline ratio bars; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    table = results.lookup()
    pols = _main_policies(results)
    plants, workloads, loads = results.grid.plants, results.grid.workloads, results.grid.loads
    fig, axes = plt.subplots(
        len(plants), len(workloads), figsize=(3.2 * len(workloads), 2.6 * len(plants)), squeeze=False
    )
    for i, plant in enumerate(plants):
        for j, workload in enumerate(workloads):
            ax = axes[i][j]
            for p in pols:
                ys = [
                    table[(plant, workload, x, p)].goodput_req_s if (plant, workload, x, p) in table else math.nan
                    for x in loads
                ]
                hi = p in _HIGHLIGHT
                ax.plot(
                    loads,
                    ys,
                    marker="o" if hi else None,
                    lw=1.8 if hi else 0.8,
                    color=None if hi else "0.7",
                    label=p if hi else None,
                )
            ax.set_title(f"{plant}\n{workload}", fontsize=7)
            ax.tick_params(labelsize=6)
            if i == len(plants) - 1:
                ax.set_xlabel("load factor", fontsize=7)
            if j == 0:
                ax.set_ylabel("goodput (req/s)", fontsize=7)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=7)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    goodput_png = img_dir / "bench_goodput.png"
    fig.savefig(goodput_png, dpi=70)
    plt.close(fig)

    rows = summarize(results)
    fig, ax = plt.subplots(figsize=(9, 3.5))
    xs = range(len(rows))
    w = 0.4
    ax.bar([x - w / 2 for x in xs], [r.goodput_vs_static for r in rows], w, label="vs static default")
    ax.bar([x + w / 2 for x in xs], [r.goodput_vs_best for r in rows], w, label="vs best static (hindsight)")
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(list(xs), [r.policy for r in rows], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("median goodput ratio")
    ax.legend(fontsize=7)
    fig.tight_layout()
    ratio_png = img_dir / "bench_ratios.png"
    fig.savefig(ratio_png, dpi=90)
    plt.close(fig)
    return [ratio_png, goodput_png]


def write_report(results: BenchResults, path: str | Path, *, plots: bool = True) -> Path:
    """Write the Markdown report to ``path`` and its plots to ``<dir of path>/img/``."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    images: list[str] = []
    if plots:
        for p in write_plots(results, out.parent / "img"):
            images.append(str(p.relative_to(out.parent)))
    out.write_text(render_markdown(results, image_paths=images))
    return out
