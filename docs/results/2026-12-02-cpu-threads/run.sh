set -e
cd "$(dirname "$0")/../../.." && . .venv/bin/activate
OUT=docs/results/2026-12-02-cpu-threads/bench.jsonl; : > $OUT
for t in 2 1; do python scripts/bench_train.py --quick --configs small-var --impls nmt --threads $t --out $OUT > /dev/null; done
# one core kept busy by another process, as on a shared machine
python -c "while True: pass" & BUSY=$!
for t in 2 1; do python scripts/bench_train.py --quick --configs small-var --impls nmt --threads $t --out $OUT > /dev/null; done
kill $BUSY
echo done
