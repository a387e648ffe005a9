#!/usr/bin/env bash
# Sets everything up and runs lint + the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ruff check .
ruff format --check .
python3 -m pytest tests "$@"
