#!/usr/bin/env bash
# Create/reuse .venv and install dualoptim with everything the main job and the tests need.
# Idempotent: a second run only checks. Works on a fresh machine with package registries only.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DUALOPTIM_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.dualoptim-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] installing dualoptim and its dependencies (pinned in constraints.txt)"
  # torch first, from the pinned CPU build (a local wheel on this kind of machine).
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt torch 2>&1 | grep -v "^WARNING: Location" || true
  "$VENV/bin/pip" install -q --disable-pip-version-check -c constraints.txt -e ".[dev,llm,diffusion]" 2>&1 \
    | grep -v "^WARNING: Location" || true
  "$VENV/bin/python" -c "import torch, dualoptim" || { echo "[setup] install failed" >&2; exit 1; }
  echo "$want" > "$stamp"
fi

# The default offline dataset: Debian's dataset-fashion-mnist (60k + 10k real images).
FMNIST=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$FMNIST" ] && [ -z "${DUALOPTIM_DATA_DIR:-}" ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian package dataset-fashion-mnist"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 \
      || echo "[setup] apt-get could not install dataset-fashion-mnist" >&2
  fi
  if [ ! -f "$FMNIST" ]; then
    echo "[setup] Fashion-MNIST not found. Provide it by one of:" >&2
    echo "  1. sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu)" >&2
    echo "  2. export DUALOPTIM_DATA_DIR=/path/to/folder with {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz" >&2
    echo "  3. pip install torchvision (then the loader downloads it when the network allows)" >&2
  fi
fi
