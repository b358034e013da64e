#!/usr/bin/env bash
# The GPU figures of the README in one go: two recipes on the embedded Bible corpus
# trained side by side (PAIR, below: the tuned Cho recipe and RNNsearch by default),
# beam-5 BLEU reports on the test split, and the training / decoding benchmarks. Results and logs go to $OUT (default
# results/gpu); knobs for a quick CPU rehearsal: TRAIN_MINUTES, BENCH_ARGS, EXTRA. BENCH=0 skips the
# benchmarks, so that the Cho-vs-RNNsearch comparison (10 minutes of training each, side by side)
# fits one lease: PAIR=cho-rnnsearch TRAIN_MINUTES=10 BENCH=0 bash scripts/gpu_results.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
RUNS="${RUNS:-/tmp/nmt-runs}"
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

# PAIR: the two recipes trained side by side. cho-rnnsearch (default): the tuned Cho recipe
# against RNNsearch at the paper's sizes; paper-tuned: the paper's own recipe
# against the tuned one (the README's first table).
PAIR="${PAIR:-cho-rnnsearch}"
if [ "$PAIR" = paper-tuned ]; then first=paper; second=tuned; else first=tuned; second=rnnsearch; fi
declare -A EXPERIMENT=([paper]=bible_cho_paper [tuned]=bible_cho_tuned [rnnsearch]=bible_rnnsearch)
echo "=== training: $first and $second side by side ($TRAIN_MINUTES min each)"
for run in "$first" "$second"; do
  python -m nmt.commands.train +experiment="${EXPERIMENT[$run]}" train.max_minutes="$TRAIN_MINUTES" \
    hydra.run.dir="$RUNS/$run" $EXTRA > "$RUNS/train-$run.log" 2>&1 &
done
wait
for run in "$first" "$second"; do tail -c 600 "$RUNS/train-$run.log" | tr '\r' '\n' | tail -3; done
pack

echo "=== nmt-evaluate, beam 5, test split ($second also against $first: paired test, joint BLEU-by-length plot)"
timeout 90 python -m nmt.commands.evaluate ckpt="$RUNS/$first" decode=beam report_dir="$RUNS/$first/report" 2>&1 \
  | tr '\r' '\n' | grep -E '^(nmt-evaluate|error)' | tail -2
timeout 150 python -m nmt.commands.evaluate ckpt="$RUNS/$second" compare_ckpt="$RUNS/$first" decode=beam \
  report_dir="$RUNS/$second/report" 2>&1 | tr '\r' '\n' | grep -E '^(nmt-evaluate|error)' | tail -2
pack

if [ "$BENCH" = 1 ]; then
echo "=== bench_decode (tuned checkpoint)"
timeout 70 python scripts/bench_decode.py --ckpt "$RUNS/tuned" --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | tail -12
echo "=== bench_decode, c's terms once per sentence (for_decoding; off by default on CUDA until measured)"
timeout 70 python scripts/bench_decode.py --ckpt "$RUNS/tuned" --summary-terms on --out "$OUT/bench.jsonl" $BENCH_ARGS \
  2>&1 | grep -v '^\s*$' | grep '"nmt' | tail -4
if [ -d "$RUNS/rnnsearch" ]; then
  echo "=== bench_decode (RNNsearch checkpoint)"
  timeout 70 python scripts/bench_decode.py --ckpt "$RUNS/rnnsearch" --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 \
    | grep -v '^\s*$' | grep '"nmt/reference"' | tail -2
fi
fi
pack
echo "=== done"; date -u
