"""What ``--priority ttft`` changes: the benchmark's controller cells re-run with it.

Reads the results JSON of a full ``controlkit bench`` run (``--json``), takes its pid, optimal
and mpc cells on the vllm-h100 plants for one workload at loads 0.75, 1.0 and 1.25 (the same
designed policy files, plants, workloads, SLOs and seeds), re-simulates each with
``params.priority = "ttft"``, and prints goodput against the run's best static for both
priorities (the ``tpot`` column is the run's own figure).
Usage: .venv/bin/python bench/priority_ttft.py RESULTS.json [WORKLOAD]   (default mooncake)
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import warnings
from typing import Any

from controlkit.app.bench.backend import SimBackend
from controlkit.app.bench.grid import CellTask

PLANTS = ("vllm-h100:llama-2-7b", "vllm-h100:llama-2-13b", "vllm-h100:opt-2.7b")
CONTROLLERS = ("pid", "optimal", "mpc")


def main() -> None:
    path = sys.argv[1]
    workload = sys.argv[2] if len(sys.argv) > 2 else "mooncake"
    with open(path) as f:
        doc = json.load(f)
    cells: dict[tuple[str, str, float, str], tuple[dict[str, Any], dict[str, float]]] = {}
    for c in doc["cells"]:
        t = c["task"]
        cells[(t["plant"], t["workload"], t["load"], t["policy"])] = (t, c["metrics"])
    head = " | ".join(f"{p} tpot | {p} ttft" for p in CONTROLLERS)
    print(f"| plant | load | best static (req/s) | {head} |")
    print("|---|---:|---:|" + "---:|" * (2 * len(CONTROLLERS)))
    warnings.simplefilter("ignore")
    sim = SimBackend()
    for plant_name in PLANTS:
        for load in (0.75, 1.0, 1.25):
            best = cells[(plant_name, workload, load, "best-static")][1]["goodput_req_s"]
            row = [f"`{plant_name}`", f"{load}", f"{best:.2f}"]
            for name in CONTROLLERS:
                t, m = cells[(plant_name, workload, load, name)]
                task = CellTask(**t)
                spec = copy.deepcopy(task.spec)
                assert isinstance(spec, dict), "controller cells carry their designed policy file"
                spec["params"]["priority"] = "ttft"
                ttft = sim.run_cell(dataclasses.replace(task, spec=spec))
                row += [f"{m['goodput_req_s'] / best:.2f}x", f"{ttft['goodput_req_s'] / best:.2f}x"]
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
