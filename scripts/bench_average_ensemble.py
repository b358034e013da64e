"""Checkpoint averaging and ensembles against their references, in one run.

Trains two runs of ``model=small`` on the embedded Bible corpus with different seeds
(a fixed number of steps, so that a busy machine changes the wall time but not the
models), each saving a step checkpoint every ``--save-every`` steps and averaging its
last ``--average`` of them into ``averaged.pt`` (``train.average_last``). Then decodes
the test split with beam 5 (``nmt-evaluate``), one system at a time:

    seed 1 best.pt        the reference for ...
    seed 1 averaged.pt    ... the average of its last step checkpoints
    seed 2 best.pt        (the second reference for the ensemble)
    ensemble [seed 1 best.pt, seed 2 best.pt]

and prints one JSON line per system (test BLEU, chrF, sentences/s), then a summary line
with the differences (``--out`` appends them to a file too).

    python scripts/bench_average_ensemble.py --out docs/results/DATE-cpu-average-ensemble/bench.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import JsonLines, common_fields  # noqa: E402


def nmt(command: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"nmt.commands.{command}", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--work", default="runs/bench-average-ensemble", help="folder of the two runs and reports")
    parser.add_argument("--steps", type=int, default=600, help="training steps of each run")
    parser.add_argument("--save-every", type=int, default=50, help="steps between step checkpoints")
    parser.add_argument("--average", type=int, default=5, help="step checkpoints averaged")
    parser.add_argument("--beam", type=int, default=5, help="beam size of every evaluation")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args()
    out, work = JsonLines(args.out), Path(args.work)
    runs = {seed: work / f"seed{seed}" for seed in (1, 2)}
    for seed, run_dir in runs.items():
        if not (run_dir / "summary.json").exists():
            nmt(
                "train",
                "model=small",
                f"train.seed={seed}",
                f"train.max_steps={args.steps}",
                "train.max_epochs=1000",
                f"train.save_every={args.save_every}",
                f"train.keep_last={args.average}",
                f"train.average_last={args.average}",
                "evaluate_test=false",
                f"hydra.run.dir={run_dir}",
            )
    systems = {
        "seed1_best": str(runs[1] / "best.pt"),
        "seed1_averaged": str(runs[1] / "averaged.pt"),
        "seed2_best": str(runs[2] / "best.pt"),
        "ensemble_seed1_seed2": f"[{runs[1] / 'best.pt'},{runs[2] / 'best.pt'}]",
    }
    scores = {}
    for name, ckpt in systems.items():
        report_dir = work / f"report-{name}"
        nmt(
            "evaluate", f"ckpt={ckpt}", "decode=beam", f"decode.beam_size={args.beam}", f"report_dir={report_dir}", "device=cpu"
        )
        report = json.loads((report_dir / "report.json").read_text())
        scores[name] = report
        summary = json.loads((runs[1 if "seed1" in name else 2] / "summary.json").read_text())
        # The steps this system's weights come from: the averaged checkpoint's, else each best.pt's.
        if name.endswith("averaged"):
            steps = summary["averaged_steps"]
        elif name.startswith("ensemble"):
            steps = [json.loads((runs[seed] / "summary.json").read_text())["best_step"] for seed in (1, 2)]
        else:
            steps = [summary["best_step"]]
        out.emit(
            {
                **common_fields("average_ensemble", torch.device("cpu")),
                "system": name,
                "ckpt": ckpt,
                "train_steps": summary["steps"],
                "weights_from_steps": steps,
                "beam": args.beam,
                "test_bleu": round(report["bleu"], 2),
                "test_chrf": round(report["chrf"], 2),
                "bleu_ci95": report["ci95"]["bleu"],
                "sentences_per_s": report["speed"]["sentences_per_s"],
                "threads": torch.get_num_threads(),
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            }
        )
    bleu = {name: report["bleu"] for name, report in scores.items()}
    speed = {name: report["speed"]["sentences_per_s"] for name, report in scores.items()}
    out.emit(
        {
            **common_fields("average_ensemble_summary", torch.device("cpu")),
            "averaged_minus_best_bleu": round(bleu["seed1_averaged"] - bleu["seed1_best"], 2),
            "ensemble_minus_best_single_bleu": round(
                bleu["ensemble_seed1_seed2"] - max(bleu["seed1_best"], bleu["seed2_best"]), 2
            ),
            "ensemble_speed_ratio": round(speed["ensemble_seed1_seed2"] / speed["seed1_best"], 3),
        }
    )


if __name__ == "__main__":
    main()
