"""Corpus loading (``data=files``): the project's block-by-block Arrow conversion against
reading whole files into Python lists, in one run, on the same synthetic corpus.

    python scripts/bench_data.py                 # 1 000 000 training pairs (about 300 MB of text)
    python scripts/bench_data.py --quick         # 100 000 pairs, well under a minute
    python scripts/bench_data.py --pairs 5000000 --workdir /big/disk --out bench.jsonl

The corpus is plain-text ``{train,validation,test}.{es,en}`` files of random words
(Zipf-distributed, 3 to 40 per line). Each measurement runs in a fresh process, so
that its peak memory (Linux's ``VmHWM``) is its own:

nmt        ``nmt.data.load_corpus`` with ``data.source=files``: every file converted
           block by block into a memory-mapped Arrow file under the cache, then
           cleaned by ``datasets.map`` (cached beside it). Measured twice: the first
           load, then a second one that finds both caches.
           Both clean in one process (``data.num_proc=1``), so that the peak memory
           of this process is that of the whole load.
reference  how a corpus is commonly read, and how this project read it before: each
           file into memory whole, split into a Python list of lines
           (``nmt.lines.read_lines``), ``datasets.Dataset.from_dict``, then the same
           cleaning (``nmt.data._clean_split``; an in-memory dataset is never cached).

One JSON line per measurement (``bench``, ``impl``, ``phase``, ``pairs``,
``seconds``, ``peak_rss_gb``, ``pairs_per_s``), then a comparison line with
``speedup`` (reference seconds / nmt first-load seconds) and ``memory_ratio``
(reference peak / nmt peak). Both loads must give the same corpus: the comparison
line says whether they did (``same_corpus``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nmt.reference_corpus import write_text_corpus as write_corpus

# --------------------------------------------------------------------------- one measurement (a child process)


def measure(impl: str, corpus: Path, cache: Path) -> dict:
    """Load the corpus one way; return seconds, peak memory and a fingerprint of what was loaded."""
    import datasets

    from nmt.config import DataConfig
    from nmt.reference_corpus import reference_load_corpus, train_fingerprint

    datasets.disable_progress_bars()
    # One process each: VmHWM sees this process only, not datasets.map's workers.
    cfg = DataConfig(
        name="synthetic", source="files", path=str(corpus), src_lang="es", tgt_lang="en", cache_dir=str(cache), num_proc=1
    )
    start = time.perf_counter()
    if impl == "nmt":
        from nmt.data import load_corpus

        loaded = load_corpus(cfg)
    else:
        loaded = reference_load_corpus(cfg)
    seconds = time.perf_counter() - start
    # Read before the check below, which pages every memory-mapped byte in.
    peak_rss_gb = peak_rss_bytes() / 1e9
    train = loaded["train"]
    return {"seconds": seconds, "peak_rss_gb": peak_rss_gb, "pairs": len(train), "fingerprint": train_fingerprint(train)}


def peak_rss_bytes() -> int:
    """This process's peak resident memory. Linux's VmHWM starts afresh at exec;
    ``ru_maxrss`` would carry over the parent's peak (here: writing the corpus)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) * 1024
    except (OSError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux and BSDs


def run_child(impl: str, corpus: Path, cache: Path) -> dict:
    result = subprocess.run(
        [sys.executable, __file__, "--child", impl, "--corpus", str(corpus), "--cache", str(cache)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "HF_DATASETS_CACHE": str(cache / "hf")},
    )
    if result.returncode != 0:
        raise SystemExit(f"bench_data: the {impl} load failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=None, help="training pairs (default 1 000 000; --quick 100 000)")
    parser.add_argument("--quick", action="store_true", help="100 000 pairs")
    parser.add_argument("--workdir", default=None, help="where the corpus and caches go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--child", choices=["nmt", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure(args.child, Path(args.corpus), Path(args.cache))))
        return 0

    # Only here, not in the measuring processes: torch alone would add to their memory.
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_common as bc

    pairs = args.pairs or (100_000 if args.quick else 1_000_000)
    out = bc.JsonLines(args.out)

    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        text_bytes = write_corpus(work / "corpus", pairs)
        print(
            f"bench_data: wrote {text_bytes / 1e6:.0f} MB of text ({pairs} training pairs) in "
            f"{time.perf_counter() - start:.0f} s",
            file=sys.stderr,
        )
        cache = work / "cache"
        runs = {
            ("reference", "every load"): run_child("reference", work / "corpus", work / "reference-cache"),
            ("nmt", "first load"): run_child("nmt", work / "corpus", cache),
            ("nmt", "cached"): run_child("nmt", work / "corpus", cache),
        }
        cache_bytes = folder_bytes(cache)
    common = {
        **bc.common_fields("data", torch.device("cpu")),
        "corpus": "synthetic files, data=files",
        "text_bytes": text_bytes,
        "train_pairs_in_files": pairs,
    }
    for (impl, phase), run in runs.items():
        record = {
            **common,
            "impl": impl,
            "phase": phase,
            "pairs": run["pairs"],
            "seconds": bc.rounded(run["seconds"]),
            "peak_rss_gb": bc.rounded(run["peak_rss_gb"], 3),
            "pairs_per_s": bc.rounded(run["pairs"] / run["seconds"]),
        }
        if impl == "nmt" and phase == "first load":
            record["cache_bytes"] = cache_bytes
        out.emit(record)
    ref, first, cached = runs[("reference", "every load")], runs[("nmt", "first load")], runs[("nmt", "cached")]
    out.emit(
        {
            **common,
            "impl": "nmt/reference",
            "comparison": "speedup = reference seconds / nmt seconds; memory_ratio = reference peak / nmt peak",
            "speedup": bc.rounded(ref["seconds"] / first["seconds"], 3),
            "speedup_cached": bc.rounded(ref["seconds"] / cached["seconds"], 3),
            "memory_ratio": bc.rounded(ref["peak_rss_gb"] / first["peak_rss_gb"], 3),
            "same_corpus": ref["fingerprint"] == first["fingerprint"] == cached["fingerprint"],
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
