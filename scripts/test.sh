#!/usr/bin/env bash
# Sets everything up and runs lint + the test suite (what CI runs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
# Tests that need a real dataset fail (instead of skipping) when it could not be installed.
export PRIVQUANT_REQUIRE_DATA=1
ruff check .
ruff format --check .
python3 -m pytest tests "$@"
