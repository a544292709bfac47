"""Fit reports: a rich summary table of a :class:`PlantModel` and matplotlib fit/residual plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.table import Table

from identification.derive import StepObservations
from identification.plant import PlantModel

__all__ = ["plot_fit", "summary_table"]


def _ms(x: float) -> str:
    return f"{x * 1e3:.4g}"


def summary_table(plant: PlantModel) -> Table:
    """Build a rich table: latency coefficients with intervals, fit metrics, validity, memory, workload."""
    lat, mem, wl = plant.latency, plant.memory, plant.workload
    conf = lat.params.confidence
    table = Table(title="controlkit identify: plant model", show_lines=False)
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_column(f"{conf:.0%} interval / note")
    table.add_row("latency form", lat.form_, "held-out MAPE by form: "
                  + ", ".join(f"{k} {v:.2%}" for k, v in lat.form_scores_.items()))
    for name, value in lat.coef_.items():
        lo, hi = lat.coef_interval_[name]
        unit = "ms" if name == "c0_s" else ("ms/seq" if "seq" in name else "ms/token")
        note = lat.dropped_terms_.get(name, f"[{_ms(lo)}, {_ms(hi)}]")
        table.add_row(f"{name[:-2]} ({unit})", _ms(value), note)
    if lat.knee_batch_ is not None:
        table.add_row("knee (seqs)", f"{lat.knee_batch_:.1f}", "")
    table.add_row("slope d step/d batch (ms/seq)", _ms(lat.slope_),
                  f"[{_ms(lat.slope_interval_[0])}, {_ms(lat.slope_interval_[1])}] over the range")
    table.add_row("step at batch 0 (ms)", _ms(lat.intercept_s_), "")
    table.add_row("R² (batch-level medians)", f"{lat.r2_:.4f}", f"rows: {lat.r2_rows_:.3f}")
    mape = "n/a (no held-out runs)" if np.isnan(lat.mape_holdout_) else f"{lat.mape_holdout_:.2%}"
    by_level = lat.mape_holdout_levels_
    levels = "" if np.isnan(by_level) else f"run/level medians {by_level:.2%}; "
    table.add_row("held-out MAPE (rows)", mape, f"{levels}in-sample {lat.mape_fit_:.2%}")
    table.add_row("validity: batch range (seqs)", f"{lat.batch_range_[0]:g} .. {lat.batch_range_[1]:g}",
                  f"typical context {lat.typical_context_tokens_:.0f} tokens/seq")
    table.add_row("residual scale (ms)", _ms(lat.residual_scale_s_),
                  f"{lat.n_samples_fit_} steps in {lat.n_groups_fit_} run(s); {lat.interval_method_}")
    if not getattr(mem, "known_", True):
        table.add_row("KV memory", "UNKNOWN", f"{mem.unknown_reason_}; design makes no memory-safety claim")
    else:
        table.add_row("KV capacity (blocks)", str(mem.capacity_blocks_), f"block size {mem.block_size_}")
        table.add_row("KV blocks per running seq", f"{mem.blocks_per_seq_:.2f}",
                      f"≈ {mem.tokens_per_seq_:.0f} tokens/seq; blocks/token {mem.blocks_per_token_method_}")
        observed = mem.observed_preemption_onset_
        table.add_row("preemption onset (seqs)", str(mem.preemption_onset_),
                      "observed: " + (str(observed) if observed is not None else "none in the data"))
    if wl is not None:
        means = f"{wl.prompt_tokens_mean_:.1f} / {wl.output_tokens_mean_:.1f}"
        table.add_row("prompt / output tokens (mean)", means,
                      f"{wl.length_model_}, {wl.n_requests_} requests ({wl.source_})")
        if wl.arrival_rate_per_s_ is not None:
            cv2 = "n/a" if wl.interarrival_cv2_ is None else f"{wl.interarrival_cv2_:.2f}"
            table.add_row("arrival rate (req/s)", f"{wl.arrival_rate_per_s_:.3f}", f"inter-arrival CV² {cv2}")
    return table


def plot_fit(plant: PlantModel, obs: StepObservations, path: str | Path, *,
             max_points: int = 20_000) -> None:
    """Write a two-panel figure: step time vs batch with the fit, and relative residuals vs batch.

    Parameters
    ----------
    plant
        The identified plant.
    obs
        The observations it was fitted on (``derive_observations(telemetry)``).
    path
        Output image (format from the suffix, e.g. ``.png``, ``.svg``).
    max_points
        Scatter at most this many points (a uniform random subset).
    """
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = plant.latency
    rng = np.random.default_rng(0)
    pick = np.arange(len(obs)) if len(obs) <= max_points else rng.choice(len(obs), max_points, replace=False)
    b, y = obs.batch[pick], obs.step_s[pick]
    ctx_seen = obs.context_tokens[pick]
    ctx = np.where(np.isfinite(ctx_seen), ctx_seen, lat.typical_context_tokens_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = np.asarray(lat.predict_step_s(b, ctx, obs.prefill_tokens[pick] if "c_prefill_s" not in
                                             lat.dropped_terms_ else 0.0))
        grid = np.linspace(lat.batch_range_[0], lat.batch_range_[1], 200)
        curve = np.asarray(lat.predict_step_s(grid))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, height_ratios=(2, 1))
    ax1.scatter(b, y * 1e3, s=4, alpha=0.25, color="tab:blue", label="observed steps")
    ax1.plot(grid, curve * 1e3, color="tab:red", lw=2, label=f"{lat.form_} fit (typical context)")
    top = float(np.quantile(y, 0.99)) * 1e3 * 1.2
    ax1.set_ylim(0, max(top, float(curve.max()) * 1e3 * 1.1))
    ax1.set_ylabel("step time (ms)")
    lo, hi = lat.slope_interval_
    ax1.set_title(f"slope {lat.slope_ * 1e3:.4g} ms/seq [{lo * 1e3:.4g}, {hi * 1e3:.4g}], R² {lat.r2_:.3f}")
    ax1.legend(loc="upper left")
    rel = (y - pred) / pred * 100.0
    ax2.scatter(b, rel, s=4, alpha=0.25, color="tab:gray")
    ax2.axhline(0.0, color="tab:red", lw=1)
    ax2.set_ylim(*np.quantile(rel, [0.01, 0.99]) * 1.5 if rel.size > 10 else (-50, 50))
    ax2.set_xlabel("batch (running sequences)")
    ax2.set_ylabel("residual (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
