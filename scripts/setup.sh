#!/usr/bin/env bash
# Create .venv with the pinned CPU PyTorch and rlchat (editable) with its test tools.
# GPU users: see "Installing on a GPU machine" in the README.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Pinned: a bare `torch` would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[test]"
echo "rlchat installed in .venv ($(.venv/bin/rlchat --version))"
