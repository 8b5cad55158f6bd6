#!/usr/bin/env bash
# The main job on the embedded default (sets up .venv first). Extra arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/own_loop.py "$@"
