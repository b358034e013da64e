#!/usr/bin/env bash
# The GPU figures of the README in one go: the paper recipe and a tuned recipe on the
# embedded Bible corpus (trained side by side), beam-5 BLEU reports on the test split,
# and the training / decoding benchmarks. Results and logs go to $OUT (default
# results/gpu); knobs for a quick CPU rehearsal: TRAIN_MINUTES, BENCH_ARGS, EXTRA.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-results/gpu}"
RUNS="${RUNS:-/tmp/nmt-runs}"
TRAIN_MINUTES="${TRAIN_MINUTES:-3}"
BENCH_ARGS="${BENCH_ARGS:-}"
EXTRA="${EXTRA:-}"
mkdir -p "$OUT" "$RUNS"
export NMT_CACHE_DIR="${NMT_CACHE_DIR:-/tmp/nmt-cache}"
pack() { tar -czf "$OUT/results.tar.gz" -C "$RUNS" --exclude='*.pt' --exclude='tensorboard' . 2>/dev/null; }

{ date -u; nvidia-smi -L 2>/dev/null || echo "no GPU"; python -c "import torch; print('torch', torch.__version__)"; } | tee "$OUT/device.txt"

echo "=== bench_train (the nmt line carries host_syncs_per_step; the profile goes to profile.txt)"
timeout 80 python scripts/bench_train.py --configs yardstick-b1024,yardstick-b128,small-var --profile \
  --out "$OUT/bench.jsonl" $BENCH_ARGS 2> "$OUT/profile.txt" | tail -20
echo "=== bench_train, train.compile=true (yardstick sizes)"
timeout 120 python scripts/bench_train.py --configs yardstick-b1024 --impls nmt --compile \
  --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | tail -3

echo "=== training: paper recipe and tuned recipe side by side ($TRAIN_MINUTES min each)"
python -m nmt.commands.train model=cho2014 train=paper train.max_minutes="$TRAIN_MINUTES" \
  hydra.run.dir="$RUNS/paper" $EXTRA > "$RUNS/train-paper.log" 2>&1 &
python -m nmt.commands.train model=cho2014 model.embed_size=512 model.output_rank=0 model.paper_init=false \
  model.dropout=0.3 model.reverse_source=true train.label_smoothing=0.1 train.max_tokens=8192 \
  train.max_minutes="$TRAIN_MINUTES" hydra.run.dir="$RUNS/tuned" $EXTRA > "$RUNS/train-tuned.log" 2>&1 &
wait
for run in paper tuned; do tail -c 600 "$RUNS/train-$run.log" | tr '\r' '\n' | tail -3; done
pack

echo "=== nmt-evaluate, beam 5, test split"
for run in tuned paper; do
  timeout 90 python -m nmt.commands.evaluate ckpt="$RUNS/$run" decode=beam report_dir="$RUNS/$run/report" 2>&1 \
    | tr '\r' '\n' | grep -E '^(nmt-evaluate|error)' | tail -2
done
pack

echo "=== bench_decode (tuned checkpoint)"
timeout 70 python scripts/bench_decode.py --ckpt "$RUNS/tuned" --out "$OUT/bench.jsonl" $BENCH_ARGS 2>&1 | grep -v '^\s*$' | tail -12
echo "=== bench_decode, c's terms once per sentence (for_decoding; off by default on CUDA until measured)"
timeout 70 python scripts/bench_decode.py --ckpt "$RUNS/tuned" --summary-terms on --out "$OUT/bench.jsonl" $BENCH_ARGS \
  2>&1 | grep -v '^\s*$' | grep '"nmt' | tail -4
pack
echo "=== done"; date -u
