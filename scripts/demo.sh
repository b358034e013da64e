#!/usr/bin/env bash
# The main job on a fresh machine: set up, train on the embedded Spanish-English Bible
# corpus (a CPU-sized model, at most DEMO_MINUTES of training), translate a few
# sentences and write a BLEU report. Extra arguments are passed to nmt-train.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
: "${DEMO_MINUTES:=15}"
RUN_DIR="${RUN_DIR:-runs/demo-$(date +%Y%m%d-%H%M%S)}"

nmt-train model=small train.max_minutes="$DEMO_MINUTES" hydra.run.dir="$RUN_DIR" "$@"

echo "--- translating a few sentences (beam 5)"
printf '%s\n' \
  "En el principio crió Dios los cielos y la tierra." \
  "Y dijo Dios: Sea la luz: y fué la luz." \
  "Bienaventurados los pacíficos: porque ellos serán llamados hijos de Dios." \
  "" \
  "El amor es sufrido, es benigno." |
  nmt-translate ckpt="$RUN_DIR" decode=beam

echo "--- BLEU report on the test split (Judges, Ruth, Galatians, I Peter)"
nmt-evaluate ckpt="$RUN_DIR" decode=beam report_dir="$RUN_DIR/report"
