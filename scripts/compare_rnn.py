"""GRU against LSTM (issue 33): is the GRU faster to train, and is its quality comparable?

For each architecture (the Cho et al. model and RNNsearch) three runs on the embedded Bible
corpus, each for the same wall-clock budget:

- ``gru``: the recipe as it is (``+experiment=bible_small_cpu`` / ``bible_rnnsearch_small_cpu``
  on a CPU, ``bible_cho_tuned`` / ``bible_rnnsearch`` with ``--sizes paper``);
- ``lstm``: the same with ``model.rnn=lstm``, at the same hidden size (a third more parameters
  in every recurrent layer);
- ``lstm_params``: ``model.rnn=lstm`` with the hidden size whose parameter count is nearest the
  GRU model's (searched in steps of 8 units).

On a CPU the runs go two at a time, each pinned to its own core with one thread, the GRU and
the LSTM of the same architecture side by side. Each run validates every ``--val-every`` steps
(greedy BLEU on the validation split), then the best checkpoint is evaluated with beam 5 on
the test split. JSON lines: one per run (parameters, steps, training target tokens/s, best
validation BLEU, test BLEU with its 95 % interval, the seconds it took to first reach each
validation BLEU), then one summary per architecture: the LSTMs' speed and BLEU relative to
the GRU's and the seconds each needed to reach the BLEU the slower of the pair reached.

    python scripts/compare_rnn.py --minutes 15 --out docs/results/DATE-cpu-gru-lstm/bench.jsonl
    python scripts/compare_rnn.py --sizes paper --minutes 10 --device cuda   # a GPU, one run at a time
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
from compare_models import RECIPES, finished_with  # noqa: E402

from nmt.architectures import build_model, count_parameters  # noqa: E402
from nmt.config import ModelConfig, from_dict  # noqa: E402

ARCHS = ("cho2014", "rnnsearch")
VOCAB = 8000  # conf/data/bible_es_en.yaml: tokenizer.vocab_size, both sides


def parameters(model: dict, rnn: str, hidden: int) -> int:
    config = from_dict(ModelConfig, {**model, "rnn": rnn, "hidden_size": hidden})
    with torch.device("meta"):  # counts without allocating
        return count_parameters(build_model(config, VOCAB, VOCAB))


def equal_params_hidden(model: dict) -> int:
    """The LSTM hidden size (a multiple of 8) whose model is nearest the GRU model in parameters."""
    target = parameters(model, "gru", model["hidden_size"])
    return min(range(8, model["hidden_size"] + 8, 8), key=lambda h: abs(parameters(model, "lstm", h) - target))


def model_settings(experiment: str) -> dict:
    """The model config group an experiment selects (conf/experiment/*.yaml -> conf/model/*.yaml)."""
    conf = Path(__file__).resolve().parent.parent / "conf"
    defaults = yaml.safe_load((conf / "experiment" / f"{experiment}.yaml").read_text())["defaults"]
    name = next(d["override /model"] for d in defaults if isinstance(d, dict) and "override /model" in d)
    model = yaml.safe_load((conf / "model" / f"{name}.yaml").read_text())
    model.update(yaml.safe_load((conf / "experiment" / f"{experiment}.yaml").read_text()).get("model") or {})
    return model


def seconds_to_reach(metrics: list[dict], bleu: float) -> float | None:
    """Training seconds at the first validation whose BLEU reached ``bleu`` (None: never)."""
    for row in metrics:
        if row.get("val_bleu") is not None and row["val_bleu"] >= bleu - 1e-9:
            return round(row["train_seconds"], 1)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--work", default="runs/compare-rnn", help="folder of the runs and their reports")
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each run")
    parser.add_argument("--beam", type=int, default=5, help="beam size of the test evaluations")
    parser.add_argument("--sizes", choices=sorted(RECIPES), default="small", help="the recipes' sizes (as compare_models.py)")
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated subset of " + ",".join(ARCHS))
    parser.add_argument("--val-every", type=int, default=100, help="train.val_every of every run (the curves)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an override for every run")
    parser.add_argument("--device", default=None, help="device= of training and evaluation (default: cpu / auto)")
    parser.add_argument("--out", default=None, help="also append the JSON lines here, and copy the runs' records beside it")
    args = parser.parse_args()
    out, work = JsonLines(args.out), Path(args.work)
    device = args.device or ("cpu" if args.sizes == "small" else "auto")
    on_cpu = device == "cpu"
    archs = [a for a in args.archs.split(",") if a]
    unknown = sorted(set(archs) - set(ARCHS))
    if unknown:
        sys.exit(f"compare_rnn: --archs {','.join(unknown)} unknown; choose from {','.join(ARCHS)}")

    runs: dict[str, dict] = {}  # name -> {arch, unit, experiment, overrides, params, hidden}
    for arch in archs:
        experiment = RECIPES[args.sizes][arch]
        model = model_settings(experiment)
        hidden, lstm_hidden = model["hidden_size"], equal_params_hidden(model)
        for unit, rnn, size in (("gru", "gru", hidden), ("lstm", "lstm", hidden), ("lstm_params", "lstm", lstm_hidden)):
            overrides = [f"+experiment={experiment}", f"train.max_minutes={args.minutes}", f"train.val_every={args.val_every}"]
            overrides += ["evaluate_test=false", f"train.device={device}", *args.set]
            if rnn == "lstm":
                overrides.append("model.rnn=lstm")
            if size != hidden:
                overrides.append(f"model.hidden_size={size}")
            runs[f"{arch}-{unit}"] = {
                "arch": arch,
                "unit": unit,
                "experiment": experiment,
                "overrides": overrides,
                "hidden_size": size,
                "params": parameters(model, rnn, size),
            }

    # Pairs run side by side on a CPU (a core each): each architecture's GRU with its LSTM, then the equal-size LSTMs.
    order = [f"{a}-{u}" for a in archs for u in ("gru", "lstm")] + [f"{a}-lstm_params" for a in archs]
    todo = [name for name in order if not finished_with(work / name, runs[name]["overrides"])]
    width = 2 if on_cpu else 1
    for start in range(0, len(todo), width):
        batch = todo[start : start + width]
        procs = {name: _start(name, runs[name]["overrides"], work, core=i if on_cpu else None) for i, name in enumerate(batch)}
        failed = [name for name, proc in procs.items() if proc.wait() != 0]
        if failed:
            sys.exit(f"compare_rnn: training {' and '.join(failed)} failed (the error is above; {work}/NAME/train.log)")

    for start in range(0, len(order), width):  # the test evaluations, also two at a time on a CPU
        batch = order[start : start + width]
        procs = {
            name: _evaluate(work / name, work / f"report-{name}", args.beam, device, core=i if on_cpu else None)
            for i, name in enumerate(batch)
        }
        failed = [name for name, proc in procs.items() if proc.wait() != 0]
        if failed:
            sys.exit(f"compare_rnn: evaluating {' and '.join(failed)} failed (the error is above)")

    measured_on = torch.device("cpu" if on_cpu or not torch.cuda.is_available() else "cuda")
    records, raw_best = {}, {}
    for name in order:
        run, run_dir = runs[name], work / name
        summary = json.loads((run_dir / "summary.json").read_text())
        metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
        report = json.loads((work / f"report-{name}" / "report.json").read_text())
        speeds = [row["tokens_per_s"] for row in metrics if row.get("tokens_per_s")]
        raw_best[name] = summary["best_val_bleu"]
        records[name] = record = {
            **common_fields("compare_rnn", measured_on),
            "run": name,
            "arch": run["arch"],
            "unit": run["unit"],
            "experiment": run["experiment"],
            "overrides": run["overrides"][1:],
            "hidden_size": run["hidden_size"],
            "params": run["params"],
            "threads": 1 if on_cpu else torch.get_num_threads(),
            "train_minutes": args.minutes,
            "steps": summary["steps"],
            "epochs": summary["epochs"],
            "train_tokens_per_s": round(sum(speeds) / len(speeds), 1) if speeds else None,
            "best_val_bleu": round(summary["best_val_bleu"], 2),
            "val_curve": [[round(row["train_seconds"], 1), round(row["val_bleu"], 2)] for row in metrics if "val_bleu" in row],
            "beam": args.beam,
            "test_bleu": round(report["bleu"], 2),
            "test_bleu_ci95": report["ci95"]["bleu"],
            "test_chrf": round(report["chrf"], 2),
        }
        out.emit(record)

    for arch in archs:
        gru = records[f"{arch}-gru"]
        row = {**common_fields("compare_rnn_summary", measured_on), "arch": arch, "gru_test_bleu": gru["test_bleu"]}
        for unit in ("lstm", "lstm_params"):
            lstm = records[f"{arch}-{unit}"]
            both = min(raw_best[f"{arch}-gru"], raw_best[f"{arch}-{unit}"])  # the val BLEU both reached
            row[unit] = {
                "params_over_gru": round(lstm["params"] / gru["params"], 3),
                "gru_tokens_per_s_over_lstm": round(gru["train_tokens_per_s"] / lstm["train_tokens_per_s"], 3),
                "test_bleu_gru_minus_lstm": round(gru["test_bleu"] - lstm["test_bleu"], 2),
                "val_bleu_both_reached": round(both, 2),
                "seconds_to_reach_it": {
                    "gru": seconds_to_reach(_metrics(work / f"{arch}-gru"), both),
                    "lstm": seconds_to_reach(_metrics(work / f"{arch}-{unit}"), both),
                },
            }
        out.emit(row)

    if args.out and Path(args.out).parent.resolve() != work.resolve():
        target = Path(args.out).parent
        for name in order:
            shutil.rmtree(target / name, ignore_errors=True)
            (target / name).mkdir(parents=True)
            for file in ("config.yaml", "metrics.jsonl", "summary.json", "curves.png", "train.log"):
                if (work / name / file).exists():
                    shutil.copy(work / name / file, target / name / file)
            shutil.copy(work / f"report-{name}" / "report.json", target / name / "test-report.json")


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def _pinned(core: int | None):
    """A subprocess's environment and pre-exec hook: one thread on ``core`` (None: as it is)."""
    if core is None:
        return dict(os.environ), None
    cores = sorted(os.sched_getaffinity(0))
    cpu = cores[core % len(cores)]
    return {**os.environ, "OMP_NUM_THREADS": "1"}, lambda: os.sched_setaffinity(0, {cpu})


def _start(name: str, overrides: list[str], work: Path, core: int | None) -> subprocess.Popen:
    env, pin = _pinned(core)
    command = [sys.executable, "-m", "nmt.commands.train", *overrides, f"hydra.run.dir={work / name}"]
    return subprocess.Popen(command, env=env, preexec_fn=pin)


def _evaluate(run_dir: Path, report_dir: Path, beam: int, device: str, core: int | None) -> subprocess.Popen:
    env, pin = _pinned(core)
    command = [sys.executable, "-m", "nmt.commands.evaluate", f"ckpt={run_dir}", "decode=beam", f"decode.beam_size={beam}"]
    command += [f"report_dir={report_dir}", f"device={device}"]
    return subprocess.Popen(command, env=env, preexec_fn=pin)


if __name__ == "__main__":
    main()
