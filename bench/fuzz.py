"""The long fuzz run: N generated cases per target, counted by outcome (docs/validation.md).

Targets: ``telemetry`` (mutated real rows through read_telemetry + identify), ``model`` (mutated
model files through load_model), ``policy`` (mutated policy files through build_policy and
decide), ``cli`` (generated command lines through controlkit.app.cli.main in-process).  Each case is
seeded by ``(seed, target, i)``, so a reported case is re-run with ``--only TARGET --start I -n 1``.

Run: ``PYTHONPATH=$PWD .venv/bin/python bench/fuzz.py [-n 10000] [--targets telemetry,model,policy,cli]``

Prints, per target: tried / own error / accepted / crash / accepted-nonsense, and up to 8
examples of each crash and nonsense.  Exit status 1 when any crash or nonsense was found.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "fuzz"))
os.environ.setdefault("MPLBACKEND", "Agg")

from fuzz_cases import Tally
from fuzz_targets import cli_case, model_case, policy_case, telemetry_case

TARGETS = {"telemetry": telemetry_case, "model": model_case, "policy": policy_case, "cli": cli_case}


def run_target(name: str, n: int, start: int, seed: int, root: Path) -> Tally:
    """Run cases ``start .. start+n-1`` of one target; return the tally."""
    tally = Tally()
    case_fn = TARGETS[name]
    t0 = time.perf_counter()
    for i in range(start, start + n):
        tmp = root / name / f"case{i}"
        tmp.mkdir(parents=True, exist_ok=True)
        outcome, detail = case_fn(random.Random(f"{seed}:{name}:{i}"), tmp)
        tally.add(outcome, f"case {i}: {detail}")
        shutil.rmtree(tmp, ignore_errors=True)
        if (i - start + 1) % 500 == 0:
            print(f"  {name}: {i - start + 1}/{n} ({time.perf_counter() - t0:.0f} s): own error {tally.own_error}, "
                  f"accepted {tally.accepted}, crash {tally.crash}, nonsense {tally.nonsense}",
                  file=sys.stderr, flush=True)
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10_000, help="cases per target")
    ap.add_argument("--start", type=int, default=0, help="first case number")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated targets")
    args = ap.parse_args()
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if bad:
        ap.error(f"unknown targets {bad}; known: {list(TARGETS)}")
    root = Path(tempfile.mkdtemp(prefix="controlkit-fuzz-"))
    found = 0
    rows = []
    try:
        for name in names:
            t0 = time.perf_counter()
            tally = run_target(name, args.n, args.start, args.seed, root)
            rows.append((name, tally, time.perf_counter() - t0))
            found += tally.crash + tally.nonsense
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("| target | tried | own error | accepted | crash | accepted-nonsense | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, t, wall in rows:
        print(f"| {name} | {t.tried} | {t.own_error} | {t.accepted} | {t.crash} | {t.nonsense} | {wall:.0f} |")
    for name, t, _ in rows:
        for outcome, examples in t.examples.items():
            print(f"\n{name} {outcome} examples:")
            for ex in examples:
                print("  " + ex.replace("\n", "\n    "))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
