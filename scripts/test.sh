#!/usr/bin/env bash
# Sets everything up and runs lint + the test suite (what CI runs).
# Usage: bash scripts/test.sh [--quick] [pytest args]   (--quick: skip tests marked slow, < 1 min)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
# Tests that need a real dataset fail (instead of skipping) when it could not be installed.
export PRIVQUANT_REQUIRE_DATA=1
ruff check .
ruff format --check .
shellcheck scripts/*.sh .ci/run
# --quick: the fast tier only (no test marked slow); CI runs everything.
if [[ "${1:-}" == "--quick" ]]; then
  shift
  python3 -m pytest tests -m "not slow" "$@"
else
  python3 -m pytest tests --durations=20 "$@"  # the slowest 20: the suite must stay well under 15 min
fi
