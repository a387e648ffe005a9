#!/usr/bin/env bash
# Sets everything up (including the Fashion-MNIST files) and runs the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --data
privquant demo "$@"
