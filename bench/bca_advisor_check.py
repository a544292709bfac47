"""Check our BCA rule against the values the Mind-the-Memory-Gap repository reports.

Data: ``../shared/data/bca_memory_gap`` (real vLLM on an H100-64GB; SOURCES.md §2.8).

* Background sweep (ShareGPT, ``background_runs_index.csv``): official rule A (ε = 0.2,
  L_max = 5·ITL(32), T = request throughput) should give OPT-1.3B 96, OPT-2.7B 128,
  Llama-2-7B 192, Llama-2-13B 192 (SEEDS.md §4.5; 96 and 128 are the caps the authors used in
  their replication runs).
* Advisor runs (390-token outputs, ``advisor_runs_index.csv``): official rule B
  (L_max = 3·TPOT(32)) should give 128 for OPT-1.3B, OPT-2.7B and Llama-2-7B, and the freed
  memory KV_full·(1 − u(B_opt))/64 GB should be 63.23%, 45.05% and 10.51% (the paper's figures).

Run: ``.venv/bin/python bench/bca_advisor_check.py [--data ../shared/data]``.  Exit status 1
when a choice differs from the reported one.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from policies.baselines.bca import BcaPoint, bca_select

# Reported values (SEEDS.md §4.5, §4.6).
RULE_A_REPORTED = {"opt-1.3b": 96, "opt-2.7b": 128, "llama-2-7b": 192, "llama-2-13b": 192}
RULE_B_REPORTED = {"opt-1.3b": 128, "opt-2.7b": 128, "llama-2-7b": 128}
FREED_REPORTED_PCT = {"opt-1.3b": 63.23, "opt-2.7b": 45.05, "llama-2-7b": 10.51}
KV_FULL_GB = {"opt-1.3b": 54.48, "opt-2.7b": 51.97, "llama-2-7b": 44.36, "llama-2-13b": 32.61}
GPU_GB = 64.0


def sweep_table(runs: pd.DataFrame, model: str, latency_ms_column: str) -> list[BcaPoint]:
    """Build the BCA table of one model from a runs index (request throughput, latency in s)."""
    rows = runs[(runs["model"] == model) & runs["request_throughput"].notna()]
    batches: list[int] = [int(b) for b in rows["max_num_seqs"].tolist()]
    throughputs: list[float] = [float(t) for t in rows["request_throughput"].tolist()]
    latencies_s: list[float] = [float(v) / 1e3 for v in rows[latency_ms_column].tolist()]
    return [BcaPoint(b, t, lat) for b, t, lat in zip(batches, throughputs, latencies_s, strict=True)]


def peak_kv(metrics: pd.DataFrame, model: str, batch: int) -> float:
    """Peak ``gpu_cache_usage_perc`` (fraction) of one advisor run."""
    run = metrics[(metrics["model"] == model) & (metrics["max_num_seqs"] == batch)]
    return float(run["gpu_cache_usage_perc"].max())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args(argv)
    root = args.data / "bca_memory_gap"
    background = pd.read_csv(root / "background_runs_index.csv")
    advisor = pd.read_csv(root / "advisor_runs_index.csv")
    advisor = advisor[advisor["output_len"] == 390]
    metrics = pd.read_csv(root / "advisor_engine_metrics.csv.gz")
    metrics = metrics[metrics["output_len"] == 390]

    mismatches = 0
    print("Rule A (eps=0.2, L_max=5*ITL(32), background ShareGPT sweep)")
    print(f"{'model':<12} {'ours':>5} {'reported':>9} {'T(B)/T_max':>11}  match")
    for model, reported in RULE_A_REPORTED.items():
        table = sweep_table(background, model, "mean_itl_ms")
        ours = bca_select(table, rule="a")
        share = max(p.throughput for p in table if p.batch == ours) / max(p.throughput for p in table)
        ok = ours == reported
        mismatches += not ok
        print(f"{model:<12} {ours:>5} {reported:>9} {share:>10.1%}  {'yes' if ok else 'NO'}")

    print("\nRule B (L_max=3*TPOT(32), advisor runs, 390 output tokens) and memory freed")
    header = f"{'model':<12} {'ours':>5} {'reported':>9} {'u(B_opt)':>9}"
    print(header + f" {'freed ours':>11} {'freed paper':>12}  match")
    for model, reported in RULE_B_REPORTED.items():
        ours = bca_select(sweep_table(advisor, model, "mean_tpot_ms"), rule="b")
        u = peak_kv(metrics, model, ours)
        freed = 100.0 * KV_FULL_GB[model] * (1.0 - u) / GPU_GB
        ok = ours == reported and abs(freed - FREED_REPORTED_PCT[model]) < 0.1
        mismatches += not ok
        print(
            f"{model:<12} {ours:>5} {reported:>9} {u:>9.1%} {freed:>10.2f}%"
            f" {FREED_REPORTED_PCT[model]:>11.2f}%  {'yes' if ok else 'NO'}"
        )
    print(f"\n{mismatches} mismatch(es)")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
