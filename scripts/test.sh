#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
export NMT_CACHE_DIR="${NMT_CACHE_DIR:-$PWD/.cache/nmt}"
python -m pytest -q "$@"
