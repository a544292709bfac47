#!/usr/bin/env bash
# Creates .venv with controlkit (editable), its dev tools and vLLM 0.33.0's scheduler stack.
# Usage: bash scripts/setup-env.sh [--no-vllm]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VENV:-.venv}
want_vllm=1
[ "${1:-}" = "--no-vllm" ] && want_vllm=0
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
hash=$(cat pyproject.toml requirements/*.txt scripts/setup-env.sh | sha1sum | cut -c1-12)
stamp="$VENV/.controlkit-setup-$hash-$want_vllm"
# A full install (with vLLM) also satisfies --no-vllm.
if [ -f "$stamp" ] || [ -f "$VENV/.controlkit-setup-$hash-1" ]; then
  echo "setup-env: $VENV is up to date"
  exit 0
fi
if [ "$want_vllm" = 1 ]; then
  echo "setup-env: installing vLLM 0.33.0 scheduler stack (no-deps route, see docs/vllm.md)"
  $PIP install --no-deps vllm==0.33.0 xgrammar==0.2.8
  TORCH_CPU_WHEEL=${TORCH_CPU_WHEEL:-$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n1 || true)}
  if [ -n "$TORCH_CPU_WHEEL" ] && [ -f "$TORCH_CPU_WHEEL" ]; then
    $PIP install "$TORCH_CPU_WHEEL" -r requirements/vllm-sched.txt
  else
    $PIP install --no-deps torch==2.14.0
    $PIP install -r requirements/torch-runtime.txt -r requirements/vllm-sched.txt
  fi
fi
echo "setup-env: installing controlkit and dev tools"
$PIP install -e ".[dev,bench]" -c requirements/constraints.txt
rm -f "$VENV"/.controlkit-setup-*
touch "$stamp"
echo "setup-env: done"
