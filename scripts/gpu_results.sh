#!/usr/bin/env bash
# The GPU figures of the README in one go: two recipes on the embedded Bible corpus
# trained side by side (PAIR, below), beam-5 BLEU reports on the test split, and the
# training / decoding benchmarks. Results and logs go to $OUT (default results/gpu), the
# runs to $RUNS (default results/gpu-runs: inside the checkout, so that a second device
# call on the same warm machine finds them); knobs for a quick CPU rehearsal:
# TRAIN_MINUTES, BENCH_ARGS, EXTRA. BENCH=0 skips the benchmarks.
#   PAIR=cho-rnnsearch (default): scripts/compare_models.py --sizes paper, the tuned Cho
#     recipe against RNNsearch at the paper's sizes for TRAIN_MINUTES each, the epoch cap
#     lifted (MAX_EPOCHS) so that the budget and early stopping end them; its JSON lines
#     go to $OUT/compare.jsonl. Rerun with the same settings (on a warm machine: a second
#     device call), it evaluates the runs that finished instead of training them again:
#       PAIR=cho-rnnsearch TRAIN_MINUTES=6.5 BENCH=0 bash scripts/gpu_results.sh
#   PAIR=paper-tuned: the paper's own recipe against the tuned one (the README's first table).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
RUNS="${RUNS:-results/gpu-runs}"
MAX_EPOCHS="${MAX_EPOCHS:-1000}"
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
BENCH_ARGS="${BENCH_ARGS:-}"
EXTRA="${EXTRA:-}"
BENCH="${BENCH:-1}"
mkdir -p "$OUT" "$RUNS"
export NMT_CACHE_DIR="${NMT_CACHE_DIR:-/tmp/nmt-cache}"
pack() { tar -czf "$OUT/results.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='tensorboard' . 2>/dev/null; }

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; python -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/device.txt"

if [ "$BENCH" = 1 ]; then
echo "=== bench_train (the nmt line carries host_syncs_per_step; the profile goes to profile.txt)"
timeout 80 python scripts/bench_train.py --configs yardstick-b1024,yardstick-b128,small-var --profile \
  --out "$OUT/bench.jsonl" $BENCH_ARGS 2> "$OUT/profile.txt" | tail -20
echo "=== bench_train, train.compile=true (yardstick sizes)"
timeout 120 python scripts/bench_train.py --configs yardstick-b1024 --impls nmt --compile \
  --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | tail -3

echo "=== bench_train, RNNsearch at the yardstick sizes against its reference, and its cost per token against Cho's"
timeout 120 python scripts/bench_train.py --configs yardstick-var,rnnsearch-yardstick-var \
  --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | grep -E '"(nmt/reference|nmt)"' | tail -4
fi

PAIR="${PAIR:-cho-rnnsearch}"
TUNED_RUN="" RNNSEARCH_RUN=""  # the checkpoints bench_decode times below, once trained
if [ "$PAIR" = cho-rnnsearch ]; then
  echo "=== compare_models --sizes paper: the tuned Cho recipe and RNNsearch side by side ($TRAIN_MINUTES min each), beam 5"
  sets=(--set train.max_epochs="$MAX_EPOCHS")
  set -f  # EXTRA's words are overrides, never file patterns (x=[a,b])
  for override in $EXTRA; do sets+=(--set "$override"); done
  set +f
  # The whole log (progress bars included) goes with the runs; here the lines that say where it stands.
  python scripts/compare_models.py --sizes paper --minutes "$TRAIN_MINUTES" --work "$RUNS/compare" \
    "${sets[@]}" --out "$RUNS/compare/bench.jsonl" 2>&1 \
    | tee "$RUNS/compare.log" | tr '\r' '\n' | grep --line-buffered -E '^(step |nmt-|\{|error|compare_models|Traceback)'
  if [ "${PIPESTATUS[0]}" = 0 ]; then
    cp "$RUNS/compare/bench.jsonl" "$OUT/compare.jsonl"
    TUNED_RUN="$RUNS/compare/cho2014" RNNSEARCH_RUN="$RUNS/compare/rnnsearch"
  else
    echo "compare_models failed (above; the whole log: $RUNS/compare.log)"
  fi
  pack
else
  # The paper's own recipe against the tuned one, side by side, each with its own report.
  first=paper; second=tuned
  declare -A EXPERIMENT=([paper]=bible_cho_paper [tuned]=bible_cho_tuned)
  echo "=== training: $first and $second side by side ($TRAIN_MINUTES min each)"
  declare -A PID
  for run in "$first" "$second"; do
    # shellcheck disable=SC2086
    python -m nmt.commands.train +experiment="${EXPERIMENT[$run]}" train.max_minutes="$TRAIN_MINUTES" \
      hydra.run.dir="$RUNS/$run" $EXTRA > "$RUNS/train-$run.log" 2>&1 &
    PID[$run]=$!
  done
  trained=1
  for run in "$first" "$second"; do
    wait "${PID[$run]}" || trained=0  # e.g. a run folder of an earlier call: nmt-train refuses it
    tail -c 600 "$RUNS/train-$run.log" | tr '\r' '\n' | tail -3
  done
  pack
  if [ "$trained" = 1 ]; then
    echo "=== nmt-evaluate, beam 5, test split ($second also against $first: paired test, joint BLEU-by-length plot)"
    timeout 90 python -m nmt.commands.evaluate ckpt="$RUNS/$first" decode=beam report_dir="$RUNS/$first/report" 2>&1 \
      | tr '\r' '\n' | grep -E '^(nmt-evaluate|error)' | tail -2
    timeout 150 python -m nmt.commands.evaluate ckpt="$RUNS/$second" compare_ckpt="$RUNS/$first" decode=beam \
      report_dir="$RUNS/$second/report" 2>&1 | tr '\r' '\n' | grep -E '^(nmt-evaluate|error)' | tail -2
    TUNED_RUN="$RUNS/tuned"
  else
    echo "a training run failed (above; its log: $RUNS/train-RUN.log): nothing evaluated"
  fi
  pack
fi

if [ "$BENCH" = 1 ] && [ -n "$TUNED_RUN" ]; then
echo "=== bench_decode (tuned checkpoint)"
timeout 70 python scripts/bench_decode.py --ckpt "$TUNED_RUN" --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | tail -12
echo "=== bench_decode, c's terms once per sentence (for_decoding; off on CUDA: no gain on an H200, 2026-12-04)"
timeout 70 python scripts/bench_decode.py --ckpt "$TUNED_RUN" --summary-terms on --out "$OUT/bench.jsonl" $BENCH_ARGS \
  2>&1 | grep -v '^\s*$' | grep '"nmt' | tail -4
if [ -n "$RNNSEARCH_RUN" ]; then
  echo "=== bench_decode (RNNsearch checkpoint)"
  timeout 70 python scripts/bench_decode.py --ckpt "$RNNSEARCH_RUN" --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 \
    | grep -v '^\s*$' | grep '"nmt/reference"' | tail -2
fi
fi
pack
echo "=== done"; date -u
