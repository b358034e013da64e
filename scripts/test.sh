#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint and check formatting (ruff, configured in pyproject.toml) and run the test
# suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
ruff format --check .  # the formatter's style: `ruff format .` fixes any difference
export NMT_CACHE_DIR="${NMT_CACHE_DIR:-$PWD/.cache/nmt}"
# The tests' models are tiny: one thread per process beats threads fighting over 2 cores.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
python -m pytest -q "$@"
