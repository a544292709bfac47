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
