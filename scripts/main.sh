#!/usr/bin/env bash
# The main job on the embedded default (sets up .venv first): the `quick` benchmark — Fashion-MNIST 5k subset,
# a memorizing original, 5 trials each with its own Retrain, SFRon/SalUn/SCRUB each with the shared optimizer
# and with DualOptim, sgd+sgd controls for SalUn and SFRon.
# Prints the Table-1 style table; outputs in runs/quick/. Extra arguments go to `dualoptim bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dualoptim bench --preset quick "$@"
