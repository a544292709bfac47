#!/usr/bin/env bash
# The one test command (README, CI): installs everything into .venv, then ruff, import-linter, mypy --strict, pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
export HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_DO_NOT_TRACK=1 TRANSFORMERS_OFFLINE=1
export VLLM_CACHE_ROOT="${VLLM_CACHE_ROOT:-$(mktemp -d)}"
export HYPOTHESIS_PROFILE="${HYPOTHESIS_PROFILE:-ci}"
export MPLBACKEND=Agg
echo "== ruff"
.venv/bin/ruff check identification controlkit policies tests bench
echo "== import-linter (the layer contract of DESIGN.md §1, pyproject.toml [tool.importlinter])"
.venv/bin/lint-imports --no-logo --no-cache
echo "== mypy --strict"
.venv/bin/mypy --strict
echo "== pytest"
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
