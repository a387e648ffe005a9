#!/usr/bin/env bash
# Installs privquant and what its tests need. Safe to run again (it skips what is present).
# Usage: bash scripts/setup.sh [--data]   (--data also installs the demo's Fashion-MNIST files)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Torch first, pinned: on the reference machine torch==2.13.0 is a local CPU build, while an
# unpinned `torch` pulls a multi-GB CUDA build. Any torch >= 2.4 already installed is kept.
if ! "$PY" -c 'import sys, torch; v = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]); sys.exit(v < (2, 4))' 2>/dev/null; then
  "$PY" -m pip install --quiet torch==2.13.0
fi
"$PY" -m pip install --quiet -e ".[test]"

if [[ "${1:-}" == "--data" ]]; then
  if ! privquant data info fashion-mnist >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
      apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
    else
      privquant data fetch fashion-mnist
    fi
  fi
fi
