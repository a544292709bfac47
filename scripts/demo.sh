#!/usr/bin/env bash
# The controlkit demo, end to end, on real vLLM telemetry (an H100, ../shared/data/bca_memory_gap):
#   1. identify a latency and a memory model from the engine's Prometheus samples;
#   2. design a certified PID controller and the constrained-optimal operating point from that model;
#   3. evaluate both in the closed-loop simulator on the measured plant with the Azure conversation trace;
#   4. export the operating point as a vLLM command line.
# Outputs land in out/ (fit.png, design.png, run.png, *.json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh --no-vllm >/dev/null
export MPLBACKEND=Agg
DATA=${CONTROLKIT_SHARED_DATA:-../shared/data}
CK=.venv/bin/controlkit
mkdir -p out
echo "== 1. identify: real vLLM 0.5 telemetry, Llama-2-7B on an H100 (all max_num_seqs runs)"
$CK identify "$DATA/bca_memory_gap/background_engine_metrics.csv.gz" "$DATA/bca_memory_gap/background_runs_index.csv" \
    --where model=llama-2-7b -o out/model.json --plot out/fit.png
echo "wrote out/model.json and out/fit.png"

echo
echo "== 2. design: certified PID (TPOT SLO 50 ms, TTFT SLO 2 s) and the constrained-optimal operating point"
$CK design out/model.json --tpot-slo-s 0.05 --ttft-slo-s 2 --controller pid -o out/pid.json --plot out/design.png
$CK design out/model.json --tpot-slo-s 0.05 --ttft-slo-s 2 --controller optimal -o out/optimal.json

echo
echo "== 3. simulate on the measured H100 plant, Azure conversation trace (first 4000 requests, 1.1x its rate, clients give up after 6 s without a first token), vs vLLM's default and Pang A1+A2"
for policy in out/pid.json static:max_num_seqs=256 pang-a1a2:sla_s=0.05; do
  name=$(basename "$policy" .json | tr ':=' '__')
  $CK simulate --plant vllm-h100:llama-2-7b --workload azure-conv --num-requests 4000 --rate-scale 1.1 \
      --tpot-slo-s 0.05 --ttft-slo-s 2 --timeout-s 6 --policy "$policy" -o "out/sim_$name.json" --plot "out/run_$name.png"
done
.venv/bin/python - <<'PY'
import json, pathlib
print(f"{'policy':28s} {'goodput req/s':>14s} {'attainment':>11s} {'TPOT p99 ms':>12s} {'TTFT p99 s':>11s} "
      f"{'timed out':>10s} {'preemptions':>12s}")
for path in sorted(pathlib.Path("out").glob("sim_*.json")):
    m = json.loads(path.read_text())
    print(f"{m['policy']:28s} {m['goodput_req_s']:14.2f} {m['slo_attainment']:11.3f} "
          f"{1000 * m['tpot_p99_s']:12.1f} {m['ttft_p99_s']:11.2f} {100 * m['timeout_rate']:9.1f}% {m['num_preemptions']:12d}")
PY

echo
echo "== 4. export the operating point as a vLLM command line"
$CK export out/optimal.json --format vllm-args --max-model-len 4096
echo
echo "plots: out/fit.png out/design.png out/run_*.png"
