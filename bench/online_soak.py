"""Soak of the online slope estimator (controlkit.online): 1M steps, drifting slope, bounded noise.

A regulated batch (the cap the estimate gives for a 45 ms target, +-8 sequences of jitter) runs
on a plant ``y = a + k_t n + noise``: ``k_t`` jumps to a random factor in [0.5, 3] of the prior
every 50k steps (19 changes in 1M), the noise is uniform within +-5 % of the step, and 0.1 % of the
steps are engine pauses (x2 step time).  Checked at every step: the estimate stays in its box,
the covariance's eigenvalues in ``[0, p_max]`` (prior units), everything finite.  Reported: the
slope error once settled (2000 steps after a change), the steps to within 10 % after each
change, alarms per change and false alarms (alarms in the settled part).

Usage: PYTHONPATH=$PWD .venv/bin/python bench/online_soak.py [--steps 1000000] [--seed 0]
Exit status 1 if a bound is violated.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from controlkit.online import DriftDetector, SlopeEstimator

A_S, K0 = 0.01, 1e-4
SEGMENT = 50_000
SETTLE = 2_000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    factors = rng.uniform(0.5, 3.0, size=args.steps // SEGMENT + 1)
    jitter = rng.integers(-8, 9, size=args.steps)
    noise = rng.uniform(-0.05, 0.05, size=args.steps)
    pause = rng.random(args.steps) < 1e-3
    est, det = SlopeEstimator(A_S, K0), DriftDetector()
    errors: list[float] = []
    to_10pct: list[int] = []
    false_alarms = 0
    violations = 0
    reached = -1
    sa, sk = est.sd0
    t0 = time.perf_counter()
    for t in range(args.steps):
        seg, pos = divmod(t, SEGMENT)
        k = K0 * float(factors[seg])
        if pos == 0:
            reached = -1
        cap = max(1, min(512, math.floor((0.045 - est.intercept_s) / max(est.slope_s_per_seq, 1e-9))))
        n = float(max(1, cap + int(jitter[t])))
        y = (A_S + k * n) * (1.0 + float(noise[t])) * (2.0 if pause[t] else 1.0)
        e = est.update(n, y)
        if det.update(e.innovation_z):
            est.inflate()
            if pos >= SETTLE:
                false_alarms += 1
        rel = abs(est.slope_s_per_seq - k) / k
        if reached < 0 and rel <= 0.1:
            reached = pos
            to_10pct.append(pos)
        if pos >= SETTLE:
            errors.append(rel)
        if t % 997 == 0:  # the full check every ~1000 steps (eigenvalues), the box every step
            w = np.linalg.eigvalsh(np.diag([1 / sa, 1 / sk]) @ est.covariance @ np.diag([1 / sa, 1 / sk]))
            if not (np.all(np.isfinite(w)) and w.min() >= -1e-9 and w.max() <= est.p_max * (1 + 1e-9)):
                violations += 1
        if not (est.lo[0] <= est.intercept_s <= est.hi[0] and est.lo[1] <= est.slope_s_per_seq <= est.hi[1]):
            violations += 1
    wall = time.perf_counter() - t0
    err = np.asarray(errors)
    segments = -(-args.steps // SEGMENT)
    changes = segments - 1
    print(f"steps={args.steps} wall={wall:.1f} s ({args.steps / wall:,.0f} updates/s) changes={changes}")
    print(f"settled slope error: p50={np.median(err):.3%} p95={np.quantile(err, 0.95):.3%} max={err.max():.3%}")
    print(
        f"steps to within 10%: reached in {len(to_10pct)}/{segments} segments, "
        f"median {int(np.median(to_10pct)) if to_10pct else -1}, max {max(to_10pct) if to_10pct else -1}"
    )
    print(f"alarms={det.alarms} ({det.alarms / max(changes, 1):.1f} per change) false alarms (settled)={false_alarms}")
    print(f"bound violations={violations}")
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
