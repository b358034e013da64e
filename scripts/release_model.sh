#!/usr/bin/env bash
# The shipped model, data/models/bible-es-en, made again: from a run folder, or from a new run.
#
#   bash scripts/release_model.sh RUN_DIR                  # export a run you have (its best.pt)
#   MINUTES=105 bash scripts/release_model.sh              # train one first: +experiment=bible_rnnsearch_small_cpu
#   bash scripts/release_model.sh RUN_DIR models/mine      # another output folder
#
# It evaluates the checkpoint with beam 5 on the whole test split (the model card's figures)
# and on its first 200 sentences (the floor tests/test_shipped_model.py holds the release to),
# then exports it (float16 weights) with both in its model card, replacing the old release:
# commit the folder, and update the pinned translations in tests/test_shipped_model.py.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-}
OUT=${2:-data/models/bible-es-en}
if [ -z "$RUN" ]; then
  RUN=runs/release-$(date +%Y%m%d-%H%M%S)
  nmt-train +experiment=bible_rnnsearch_small_cpu train.max_minutes="${MINUTES:-105}" hydra.run.dir="$RUN"
fi
nmt-evaluate ckpt="$RUN" report_dir="$RUN/eval-test"
nmt-evaluate ckpt="$RUN" report_dir="$RUN/eval-test-200" max_sentences=200
nmt-export ckpt="$RUN" output="$OUT" overwrite=true report="$RUN/eval-test/report.json"
export RELEASE_DATE="$(date +%Y-%m-%d)"
python - "$RUN/eval-test-200/report.json" "$OUT/README.md" "$RUN" <<'PY'
import json, os, platform, sys
import torch
report = json.load(open(sys.argv[1], encoding="utf-8"))
with open(sys.argv[2], "a", encoding="utf-8") as card:
    card.write(
        "\n## Regression floor\n\n"
        f"| first {report['n_sentences']} test sentences, beam 5 | BLEU {report['bleu']:.2f} |\n"
        "| --- | ---: |\n\n"
        "tests/test_shipped_model.py requires at least this BLEU minus 0.5 of the release (measured on the\n"
        "checkpoint it was exported from; the float16 weights may move it by a few hundredths).\n\n"
        "## Reproduce\n\n"
        "```bash\n"
        "MINUTES=105 OMP_NUM_THREADS=1 bash scripts/release_model.sh   # train, evaluate, export: this folder\n"
        "```\n\n"
        f"Exported {os.environ.get('RELEASE_DATE', '')} on {platform.processor() or platform.machine()} "
        f"with torch {torch.__version__}, from the run folder {os.path.basename(sys.argv[3].rstrip('/'))}.\n"
    )
PY
echo "release_model: $OUT from $RUN; now update the pinned translations in tests/test_shipped_model.py"
