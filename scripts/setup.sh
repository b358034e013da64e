#!/usr/bin/env bash
# Create .venv (once) and install nmt into it, editable, with its test extras.
#
# PyTorch: an unpinned `pip install torch` on Linux pulls a multi-GB CUDA build.
# This script installs the pinned release below (set NMT_TORCH to change it, e.g.
# NMT_TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"),
# and leaves an already installed torch alone. Everything else is installed within
# constraints.txt: the versions CI last passed with (see that file to refresh it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${NMT_TORCH:=torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  pip install --quiet $NMT_TORCH
fi
# The constraints were tested on Python 3.11 (some pins need it); elsewhere pip resolves freely.
constraints=()
if python -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  constraints=(-c constraints.txt)
fi
pip install --quiet "${constraints[@]}" -e ".[test,tensorboard]"
python -c "import torch, nmt; print(f'nmt ready: torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}')"
