"""``scripts/bench_decode.py --precisions``: reduced precision against float32 on a CPU (issue 29).

For each checkpoint and thread count, the precisions decode the whole test split of the
embedded corpus with beam ``--beam``, each in a fresh process (so that its peak memory is its
own), in turn: float32 first, then the others, then (with ``--repeats 2``) once more in the
opposite order; the median of a precision's runs is reported. One JSON line per run (target
tokens/s, sentences/s, BLEU, peak resident memory), then per checkpoint and thread count a
comparison with float32 and the issue's targets: >= 2x float32's target tokens/s with test BLEU
within 0.3.

    python scripts/bench_decode.py --precisions float32,bfloat16,int8 --ckpt data/models/bible-es-en,RUN \\
        --thread-counts 1,2 --out docs/results/DATE-cpu-precision/bench.jsonl
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import bench_common as bc
import torch

MIN_SPEEDUP, MAX_BLEU_DROP = 2.0, 0.3


def worker(ckpt: str, precision: str, threads: int, beam: int) -> dict:
    """One measurement in this process: load, warm up, decode the test split, score it."""
    torch.set_num_threads(threads)
    from nmt.config import DataConfig, DecodeConfig
    from nmt.data import load_corpus
    from nmt.inference import load_translator, translate_lines
    from nmt.metrics import bleu_and_chrf

    test = load_corpus(DataConfig(), splits=("test",))["test"]
    sources, refs = list(test["src"]), list(test["tgt"])
    start = time.perf_counter()
    translator = load_translator(ckpt, "cpu", precision=precision)
    load_seconds = time.perf_counter() - start
    decode = DecodeConfig(name="beam", beam_size=beam)
    translate_lines(translator, sources[:8], decode)  # warm-up: oneDNN's kernels for these shapes
    start = time.perf_counter()
    results = translate_lines(translator, sources, decode)
    seconds = time.perf_counter() - start
    tokens = sum(len(row[0][1].tokens) + 1 for row in results)
    bleu, chrf = bleu_and_chrf([row[0][0] for row in results], refs)
    return {
        "ckpt": ckpt,
        "arch": translator.checkpoint.model_config.arch,
        "precision": translator.precision,
        "threads": threads,
        "beam": beam,
        "sentences": len(sources),
        "tgt_tokens": tokens,
        "seconds": round(seconds, 2),
        "load_seconds": round(load_seconds, 2),
        "tgt_tokens_per_s": round(tokens / seconds, 1),
        "sentences_per_s": round(len(sources) / seconds, 2),
        "bleu": round(bleu, 2),
        "chrf": round(chrf, 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run(args) -> int:
    """The parent: the runs in turn, each a fresh process, and the comparisons."""
    out = bc.JsonLines(args.out)
    precisions = args.precisions.split(",")
    if precisions[0] != "float32":
        sys.exit("bench_decode: --precisions must start with float32, the reference")
    cpu = torch.device("cpu")
    for ckpt in args.ckpt.split(","):
        for threads in [int(t) for t in args.thread_counts.split(",")]:
            runs: dict[str, list[dict]] = {p: [] for p in precisions}
            for repeat in range(args.repeats or 1):
                for precision in precisions if repeat % 2 == 0 else precisions[::-1]:
                    command = [sys.executable, __file__, "--worker", ckpt, precision, str(threads), str(args.beam)]
                    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
                    if done.returncode != 0:
                        sys.exit(f"bench_decode: {precision} on {ckpt} failed:\n{done.stderr}")
                    record = json.loads(done.stdout.strip().splitlines()[-1])
                    out.emit({**bc.common_fields("decode_precision", cpu), "repeat": repeat, **record})
                    runs[precision].append(record)
            reference = _median(runs["float32"])
            for precision in precisions[1:]:
                measured = _median(runs[precision])
                speedup = measured["tgt_tokens_per_s"] / reference["tgt_tokens_per_s"]
                drop = reference["bleu"] - measured["bleu"]
                out.emit(
                    {
                        **bc.common_fields("decode_precision_vs_float32", cpu),
                        "ckpt": ckpt,
                        "threads": threads,
                        "precision": precision,
                        "speedup": round(speedup, 3),
                        "bleu_float32": reference["bleu"],
                        "bleu": measured["bleu"],
                        "bleu_drop": round(drop, 2),
                        "peak_rss_mib": measured["peak_rss_mib"],
                        "peak_rss_mib_float32": reference["peak_rss_mib"],
                        "target_min_speedup": MIN_SPEEDUP,
                        "met_speedup": speedup >= MIN_SPEEDUP,
                        "target_max_bleu_drop": MAX_BLEU_DROP,
                        "met_bleu": drop <= MAX_BLEU_DROP,
                    }
                )
    return 0


def _median(records: list[dict]) -> dict:
    """The run with the median speed (its BLEU and memory with it)."""
    ordered = sorted(records, key=lambda r: r["tgt_tokens_per_s"])
    middle = ordered[len(ordered) // 2]
    return {**middle, "tgt_tokens_per_s": statistics.median(r["tgt_tokens_per_s"] for r in records)}


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    ckpt, precision, threads, beam = sys.argv[2:6]
    print(json.dumps(worker(ckpt, precision, int(threads), int(beam))))
