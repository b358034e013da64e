"""How long the commands take to start, against ``python -c "import torch"`` in the same run.

    python scripts/bench_startup.py                       # the shipped model, best of 5
    python scripts/bench_startup.py --ckpt RUN --repeat 7

Runs, in turn and alternated (so machine noise hits all of them alike): ``python -c "import
torch"`` (the reference), ``echo Hola. | nmt-translate ckpt=CKPT``, ``--help`` of every
command and a refused setting of one. Prints one JSON line per command, with its best and
median wall time and its ratio to the reference's best (issue 29's targets: translating one
line within 1.25 x, --help within 0.5 x), and a closing line with the machine.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ["train", "translate", "evaluate", "score", "embed", "average", "export"]


def command(name: str) -> list[str]:
    """The console script (beside this Python), as a user runs it."""
    script = Path(sys.executable).parent / f"nmt-{name}"
    return [str(script)] if script.exists() else [shutil.which(f"nmt-{name}") or f"nmt-{name}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default=str(ROOT / "data" / "models" / "bible-es-en"), help="the model nmt-translate loads")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command (the best counts)")
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cases = {
        "import torch": ([sys.executable, "-c", "import torch"], None),
        "nmt-translate (one line)": ([*command("translate"), f"ckpt={args.ckpt}"], b"Hola.\n"),
        "nmt-translate ckpt=x beam_size=5 (refused)": ([*command("translate"), "ckpt=x", "beam_size=5"], None),
        **{f"nmt-{name} --help": ([*command(name), "--help"], None) for name in COMMANDS},
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.repeat):
        for name, (argv, stdin) in cases.items():  # alternated: one run of each, then again
            start = time.perf_counter()
            result = subprocess.run(argv, input=stdin, capture_output=True, env=env, cwd=ROOT)
            times[name].append(time.perf_counter() - start)
            expected = 1 if "refused" in name else 0
            if result.returncode != expected:
                sys.exit(f"{name}: exit {result.returncode}: {result.stderr.decode(errors='replace')[-500:]}")
    reference = min(times["import torch"])
    for name, seconds in times.items():
        row = {
            "command": name,
            "best_s": round(min(seconds), 3),
            "median_s": round(statistics.median(seconds), 3),
            "ratio_to_import_torch": round(min(seconds) / reference, 3),
            "runs": len(seconds),
        }
        print(json.dumps(row), flush=True)
    print(
        json.dumps(
            {
                "machine": platform.processor() or platform.machine(),
                "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
                "python": platform.python_version(),
                "date": datetime.date.today().isoformat(),
                "command": " ".join(sys.argv),
            }
        )
    )


if __name__ == "__main__":
    main()
