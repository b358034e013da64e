"""The Cho et al. model against RNNsearch on one budget, side by side.

Trains the two recipes of ``--sizes`` on the embedded Bible corpus for the same
wall-clock budget, at the same time, then evaluates both with beam 5 on the test split
(``nmt-evaluate ... compare_ckpt=``: the paired bootstrap test and both systems' BLEU by
source length in one plot) and prints JSON lines: one per model, then a summary with the
targets (attention BLEU >= 1.5x the Cho model's; its BLEU on 40+-word sentences within
2 points of its BLEU on 10-19-word ones; at the paper's sizes, RNNsearch >= 25 BLEU).

- ``--sizes small`` (default, a CPU run): ``+experiment=bible_small_cpu`` (model=small)
  against ``+experiment=bible_rnnsearch_small_cpu`` (model=rnnsearch_small), one thread
  each (so on a 2-core machine each has a core).
- ``--sizes paper`` (a GPU run, scripts/gpu_results.sh): ``+experiment=bible_cho_tuned``
  against ``+experiment=bible_rnnsearch``, the paper's 1000-unit sizes, sharing the device.

A run folder of ``--work`` that holds a finished run of the same settings is evaluated
again, not retrained (so an interrupted comparison resumes at its evaluation); a run of
other settings, or an unfinished one, is refused rather than reported as this one.

    python scripts/compare_models.py --minutes 15 --out docs/results/DATE-cpu-compare/bench.jsonl
    python scripts/compare_models.py --sizes paper --minutes 10 --set train.max_epochs=200
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_common import JsonLines, common_fields  # noqa: E402

from nmt.lines import read_lines  # noqa: E402
from nmt.metrics import bleu_by_length  # noqa: E402

# The experiments (conf/experiment) each --sizes trains, and the targets of issue 13 it is held to.
RECIPES = {
    "small": {"cho2014": "bible_small_cpu", "rnnsearch": "bible_rnnsearch_small_cpu"},
    "paper": {"cho2014": "bible_cho_tuned", "rnnsearch": "bible_rnnsearch"},
}
MIN_BLEU_RATIO, MAX_LENGTH_GAP = 1.5, 2.0
MIN_RNNSEARCH_BLEU = {"paper": 25.0}  # beam 5, test split; the small sizes have no absolute target


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--work",
        default="runs/compare-models",
        help="folder of the two runs and the report; finished runs of the same settings there are evaluated, not retrained",
    )
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each model")
    parser.add_argument("--beam", type=int, default=5, help="beam size of both evaluations")
    parser.add_argument("--sizes", choices=sorted(RECIPES), default="small", help="which pair of recipes")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an nmt-train override given to both runs (repeatable), e.g. train.max_epochs=200",
    )
    parser.add_argument(
        "--device",
        default=argparse.SUPPRESS,  # its default depends on --sizes
        help="device= of training and evaluation (default: cpu for --sizes small, auto for paper)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="also append the JSON lines to this file, and put both runs' records (config, metrics, curves, "
        "train.log) and both reports in its folder (unless that is --work, which holds them)",
    )
    args = parser.parse_args()
    out, work, models = JsonLines(args.out), Path(args.work), RECIPES[args.sizes]
    device = getattr(args, "device", "cpu" if args.sizes == "small" else "auto")
    runs = {arch: work / arch for arch in models}
    overrides = {
        arch: [
            f"+experiment={experiment}",
            f"train.max_minutes={args.minutes}",
            "evaluate_test=false",
            f"train.device={device}",
            *args.set,
        ]
        for arch, experiment in models.items()
    }
    to_train = [arch for arch in models if not finished_with(runs[arch], overrides[arch])]
    # On a CPU the two runs get a core each; on a GPU they share the device and the host's cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1"} if args.sizes == "small" else dict(os.environ)
    command = [sys.executable, "-m", "nmt.commands.train"]
    training = {
        arch: subprocess.Popen([*command, *overrides[arch], f"hydra.run.dir={runs[arch]}"], env=env) for arch in to_train
    }
    failed = [arch for arch, proc in training.items() if proc.wait() != 0]
    if failed:
        sys.exit(f"compare_models: training {' and '.join(failed)} failed (the error is above; {work}/ARCH/train.log)")
    report_dir = work / "report"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nmt.commands.evaluate",
            f"ckpt={runs['rnnsearch']}",
            f"compare_ckpt={runs['cho2014']}",
            "decode=beam",
            f"decode.beam_size={args.beam}",
            f"report_dir={report_dir}",
            f"device={device}",
        ],
        check=True,
    )
    report = json.loads((report_dir / "report.json").read_text())
    # The Cho model's own report: its speed, and its hypotheses for the by-length rows below.
    cho_report_dir = work / "report-cho2014"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "nmt.commands.evaluate",
            f"ckpt={runs['cho2014']}",
            "decode=beam",
            f"decode.beam_size={args.beam}",
            f"report_dir={cho_report_dir}",
            f"device={device}",
        ],
        check=True,
    )
    measured_on = torch.device("cpu" if device == "cpu" or not torch.cuda.is_available() else device.replace("auto", "cuda"))
    reports = {"rnnsearch": report, "cho2014": json.loads((cho_report_dir / "report.json").read_text())}
    test = _test_split()  # the sentences nmt-evaluate decoded, in its order
    sources, refs = list(test["src"]), list(test["tgt"])
    records = {}
    for arch, built in reports.items():
        hyps = read_lines((report_dir if arch == "rnnsearch" else cho_report_dir) / "hypotheses.txt")
        rows = bleu_by_length([len(s.split()) for s in sources], hyps, refs, bucket_edges=(10, 20, 40))
        by_bucket = {row["bucket"]: round(row["bleu"], 2) for row in rows}
        summary = json.loads((runs[arch] / "summary.json").read_text())
        records[arch] = {
            "test_bleu": round(built["bleu"], 2),
            "bleu_10_19": by_bucket.get("10-19"),
            "bleu_40_plus": by_bucket.get("40+"),
        }
        out.emit(
            {
                **common_fields("compare_models", measured_on),
                "model": arch,
                "experiment": models[arch],
                "sizes": args.sizes,
                "train_minutes": args.minutes,
                "train_overrides": args.set,
                "trained_now": arch in to_train,  # False: a finished run of these settings, evaluated again
                "steps": summary["steps"],
                "epochs": summary["epochs"],
                "best_val_bleu": round(summary["best_val_bleu"], 2),
                "beam": args.beam,
                "test_bleu": records[arch]["test_bleu"],
                "test_chrf": round(built["chrf"], 2),
                "bleu_ci95": built["ci95"]["bleu"],
                "bleu_by_length": by_bucket,
                "sentences_per_s": built["speed"]["sentences_per_s"],
            }
        )
    attention, cho = records["rnnsearch"], records["cho2014"]
    ratio = attention["test_bleu"] / cho["test_bleu"] if cho["test_bleu"] else None
    gap = (attention["bleu_10_19"] - attention["bleu_40_plus"]) if attention["bleu_40_plus"] is not None else None
    min_bleu = MIN_RNNSEARCH_BLEU.get(args.sizes)
    absolute = {}
    if min_bleu is not None:
        absolute = {
            "rnnsearch_test_bleu": attention["test_bleu"],
            "target_min_rnnsearch_bleu": min_bleu,
            "met_rnnsearch_bleu": attention["test_bleu"] >= min_bleu,
        }
    out.emit(
        {
            **common_fields("compare_models_summary", measured_on),
            "sizes": args.sizes,
            "bleu_ratio_rnnsearch_over_cho": None if ratio is None else round(ratio, 3),
            "target_min_bleu_ratio": MIN_BLEU_RATIO,
            "met_bleu_ratio": None if ratio is None else ratio >= MIN_BLEU_RATIO,
            "rnnsearch_bleu_10_19_minus_40_plus": None if gap is None else round(gap, 2),
            "target_max_gap": MAX_LENGTH_GAP,
            "met_gap": None if gap is None else gap <= MAX_LENGTH_GAP,
            **absolute,
            "paired_test": {k: report["compare"].get(k) for k in ("bleu", "chrf") if report.get("compare")},
            "joint_plot": str(report_dir / "bleu_by_length_compared.png"),
        }
    )
    # The plots and reports beside the JSON lines, unless those lie in the work folder already.
    if args.out and Path(args.out).parent.resolve() != work.resolve():
        target = Path(args.out).parent
        for folder, name in ((report_dir, "rnnsearch"), (cho_report_dir, "cho2014")):
            shutil.rmtree(target / f"report-{name}", ignore_errors=True)  # replaced whole: no earlier figures
            shutil.copytree(folder, target / f"report-{name}")
        for arch, run_dir in runs.items():
            shutil.rmtree(target / arch, ignore_errors=True)
            (target / arch).mkdir(parents=True)
            for name in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png", "train.log"):
                if (run_dir / name).exists():
                    shutil.copy(run_dir / name, target / arch / name)


def finished_with(run_dir: Path, overrides: list[str]) -> bool:
    """Whether ``run_dir`` holds a finished run trained with exactly ``overrides`` (then it is
    evaluated again, not retrained). A run of other settings, or one that did not finish, is
    an error: its numbers would be reported under this command's settings."""
    if not run_dir.exists():
        return False
    recorded = run_dir / ".hydra" / "overrides.yaml"  # the command line that started the run (hydra.* apart)
    started_with = yaml.safe_load(recorded.read_text()) if recorded.exists() else None
    if started_with != [o for o in overrides if not o.startswith("hydra.")]:
        sys.exit(
            f"compare_models: {run_dir} holds a run of other settings ({' '.join(started_with or ['none recorded'])}); "
            "give another --work, or remove that folder"
        )
    summary = run_dir / "summary.json"
    reason = json.loads(summary.read_text()).get("reason") if summary.exists() else None
    if reason in (None, "signal"):  # killed, or stopped by SIGTERM / Ctrl-C before its budget ran out
        sys.exit(f"compare_models: {run_dir} holds a run that did not finish; remove it to train it again")
    print(f"compare_models: {run_dir} is finished with these settings; evaluating it again", file=sys.stderr)
    return True


def _test_split():
    from nmt.config import DataConfig
    from nmt.data import load_corpus

    return load_corpus(DataConfig(), splits=("test",))["test"]


if __name__ == "__main__":
    main()
