#!/usr/bin/env bash
# The live workflow as one command: vllm serve (127.0.0.1, small KV cache) with the hook in
# logging mode -> identify -> design -> hot reload -> TTFT/TPOT/goodput vs static caps.
# Usage: bash scripts/live-demo.sh [--quick] [--out DIR] [controlkit live-demo options...]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${REAL_ENGINE_VENV:-.venv-cpu}
out=out/live-demo
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) args+=(--num-requests 80 --static-caps 4,8,16); shift ;;
    --out) out=$2; shift 2 ;;
    *) args+=("$1"); shift ;;
  esac
done
[ -x "$VENV/bin/python" ] || { echo "live-demo: no $VENV; run: bash scripts/setup-real-engine.sh"; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
[ -f "$out/tiny/config.json" ] || timeout 300 "$VENV/bin/python" -m controlkit.app.realengine.tinymodel "$out/tiny" --seed 0 >/dev/null
timeout "${LIVE_DEMO_TIMEOUT_S:-1800}" "$VENV/bin/python" -m controlkit.app.cli live-demo "$out/tiny" --out "$out" ${args[@]+"${args[@]}"}
