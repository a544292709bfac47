"""Speed of identification: ``identify`` on N synthetic step records (target: 1M in <= 3 s).

The records come from a known plant (affine in batch, context and prefill tokens, Gaussian
noise plus 1 % outlier steps), so the benchmark also prints the recovered coefficients.

Run: ``.venv/bin/python bench/bench_identify.py [N] [REPEATS]``
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pandas as pd

from identification import Telemetry, identify

TRUE = {"c0_s": 0.006, "c_seq_s": 1.2e-4, "c_prefill_s": 2.5e-5, "c_ctx_s": 3e-8}


def make_steps(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    b = rng.integers(1, 257, n)
    ctx = rng.uniform(64, 1800, n)
    prefill = np.where(rng.random(n) < 0.25, rng.integers(16, 2048, n), 0)
    step = TRUE["c0_s"] + TRUE["c_seq_s"] * b + TRUE["c_prefill_s"] * prefill + TRUE["c_ctx_s"] * b * ctx
    step = step + rng.normal(0, 4e-4, n)
    outliers = rng.random(n) < 0.01
    step[outliers] *= 5.0
    return pd.DataFrame({
        "t_s": np.cumsum(step), "step_s": step, "num_running": b, "num_waiting": rng.integers(0, 50, n),
        "num_prefill_tokens": prefill, "num_decode_tokens": b,
        "kv_blocks_used": np.ceil(b * ctx / 16 + b / 2).astype(np.int64), "kv_blocks_total": 60_000,
        "num_preempted": 0, "num_context_tokens": np.round(b * ctx).astype(np.int64),
        "run": np.repeat([f"run{i}" for i in range(8)], -(-n // 8))[:n],
    })


def main(argv: list[str]) -> int:
    n = int(argv[0]) if argv else 1_000_000
    repeats = int(argv[1]) if len(argv) > 1 else 3
    steps = make_steps(n)
    tel = Telemetry(steps=steps)
    times = []
    plant = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            plant = identify(tel)
        times.append(time.perf_counter() - t0)
    assert plant is not None
    lat = plant.latency
    print(f"identify on {n:,} step records: best {min(times):.2f} s, median {np.median(times):.2f} s "
          f"over {repeats} runs (target <= 3 s: {'PASS' if min(times) <= 3.0 else 'FAIL'})")
    print(f"form {lat.form_}, fitted on {lat.n_samples_fit_:,} of {lat.n_samples_seen_:,} rows, "
          f"held-out MAPE {lat.mape_holdout_:.2%}, {lat.interval_method_}")
    for name, truth in TRUE.items():
        lo, hi = lat.coef_interval_[name]
        print(f"  {name:12s} true {truth:.4g}  fitted {lat.coef_[name]:.4g}  95% [{lo:.4g}, {hi:.4g}]"
              f"  covers: {lo <= truth <= hi}")
    mem = plant.memory
    print(f"  capacity {mem.capacity_blocks_} blocks, blocks/token {mem.blocks_per_token_:.4f}")
    return 0 if min(times) <= 3.0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
