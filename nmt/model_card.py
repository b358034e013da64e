"""The model card of a release (its README.md): what the model is, how it was made, how good
it is (from an ``nmt-evaluate`` report.json), how to use and reproduce it, and its limits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from nmt.checkpoint import Checkpoint

ARCHITECTURES = {
    "cho2014": "RNN Encoder–Decoder (Cho et al. 2014): a {unit} encoder's summary vector c feeds a {unit} decoder "
    "at every step, with a maxout deep output",
    "rnnsearch": "RNNsearch (Bahdanau, Cho & Bengio 2015): a bidirectional {unit} encoder and a {unit} decoder "
    "that attends over its annotations at every step, with a maxout deep output",
}
LICENCES = {  # corpora this toolkit ships
    "bible_es_en": "Reina-Valera 1909 (es) and World English Bible (en), both in the public domain "
    "(see data/bible-es-en/README.md in nmt)",
}


def run_of(checkpoint_path: Path) -> dict[str, Any]:
    """What the run folder around ``checkpoint_path`` says about its training (empty outside a run):
    the command line, steps and time (summary.json), the device (train.log)."""
    folder = Path(checkpoint_path).parent
    found: dict[str, Any] = {}
    if not (folder / "config.yaml").is_file():  # a checkpoint file outside a run folder
        return found
    try:
        overrides = yaml.safe_load((folder / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
        if isinstance(overrides, list):
            found["command"] = " ".join(["nmt-train", *(str(o) for o in overrides if not str(o).startswith("hydra."))])
    except (OSError, yaml.YAMLError):
        pass
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
        found.update({k: summary[k] for k in ("train_seconds", "reason", "epochs", "steps") if k in summary})
    except (OSError, ValueError):
        pass
    try:
        log = (folder / "train.log").read_text(encoding="utf-8", errors="replace")
        devices = re.findall(r"parameters, \S+ cell, on (\S+)", log)
        found["device"] = devices[-1] if devices else None
    except OSError:
        pass
    return found


def model_card(checkpoint: Checkpoint, parameters: int, dtype: str, size_bytes: int, report: dict | None, folder: str) -> str:
    """The README.md of the release ``folder`` (as the export's output= named it; see the module's docstring)."""
    name = Path(folder).name
    model, data = checkpoint.model_config, checkpoint.data_config
    run = run_of(checkpoint.path) if checkpoint.path is not None else {}
    pair = f"{data.src_lang}→{data.tgt_lang}"
    sizes = f"embeddings {model.embed_size}, hidden {model.hidden_size}, maxout {model.maxout_size}"
    if model.arch == "rnnsearch":
        sizes += f", alignment model {model.attention_size or model.hidden_size}"
    trained = f"{checkpoint.step} steps" if checkpoint.step is not None else "unknown steps"
    if run.get("steps") is not None and checkpoint.step is not None and run["steps"] != checkpoint.step:
        trained = f"step {checkpoint.step} (its best validation) of a run of {run['steps']} steps"
    if run.get("epochs") is not None:
        trained += f", {run['epochs']} epochs"
    if run.get("train_seconds") is not None:
        trained += f", {run['train_seconds'] / 60:.0f} minutes"
    if run.get("device"):
        trained += f" on {run['device']}"
    tokenizer = data.tokenizer
    lines = [
        f"# {name}: {pair} translation with nmt",
        "",
        f"An {ARCHITECTURES.get(model.arch, model.arch).format(unit=model.rnn.upper())}, trained with nmt on {data.name}.",
        "",
        "| | |",
        "| --- | --- |",
        f"| languages | {data.src_lang} (source) → {data.tgt_lang} (target) |",
        f"| corpus | `{data.name}` ({data.source}); licence: {LICENCES.get(data.name, 'see the corpus its data.path names')} |",
        f"| architecture | `{model.arch}` (`model={model.name}`): {sizes}, "
        + (f"`{model.cell}` GRU cell |" if model.rnn == "gru" else "LSTM (`model.rnn=lstm`) |"),
        f"| size | {parameters / 1e6:.1f} M parameters, {dtype} weights: {size_bytes / 2**20:.1f} MiB |",
        f"| tokenizer | SentencePiece {tokenizer.model_type}, {checkpoint.tgt_vocab_size} "
        f"{'joint ' if tokenizer.joint else ''}subwords |",
        f"| trained | {trained} |",
        "",
        "## Quality",
        "",
    ]
    lines += _quality(report) if report else ["Not measured when this release was made (`nmt-export ... report=` adds it)."]
    lines += [
        "",
        "## Use",
        "",
        "```bash",
        f'echo "..." | nmt-translate ckpt={folder}',
        f"nmt-evaluate ckpt={folder}                # beam 5 on the {data.name} test split",
        "```",
        "",
        "Every command that takes `ckpt=` takes this folder (and `import nmt` code through "
        "`nmt.inference.load_translator`). Loading it unpickles nothing: the weights are a safetensors "
        "file, and config.json holds the SHA-256 of every file the model reads.",
        "",
        "## How it was made",
        "",
    ]
    if run.get("command"):
        lines += ["```bash", run["command"], f"nmt-export ckpt=RUN output={folder}", "```"]
    else:
        lines += ["The training command was not found beside the checkpoint."]
    lines += [
        "",
        "## Intended use and limits",
        "",
        f"A research and teaching model: it shows what this architecture learns from {data.name} and "
        "lets every command of nmt be tried at once. It translates text like its training corpus best; "
        "other domains, modern language, names and numbers it has not seen come out wrong, often fluently "
        "so. Do not use its output where a wrong translation can harm anyone.",
        "",
    ]
    return "\n".join(lines)


def _quality(report: dict) -> list[str]:
    decoding = report.get("decoding") if isinstance(report.get("decoding"), dict) else {}
    corpus = report.get("corpus") or {}
    signatures = report.get("signatures") if isinstance(report.get("signatures"), dict) else {}
    where = f"the {corpus.get('name', '?')} {corpus.get('split', '?')} split" if isinstance(corpus, dict) else str(corpus)
    beam = decoding.get("beam_size", "?")
    command = f"nmt-evaluate ckpt={report.get('checkpoint') or 'CHECKPOINT'}"
    if isinstance(corpus, dict) and corpus.get("split"):
        command += f" split={corpus['split']}"
    if beam != "?":
        command += f" decode.beam_size={beam}"
    if isinstance(corpus, dict) and isinstance(corpus.get("max_sentences"), int):
        command += f" max_sentences={corpus['max_sentences']}"
        where = f"the first {corpus['max_sentences']} sentences of {where}"
    return [
        f"On {where} ({report.get('n_sentences', '?')} sentences), beam {beam}:",
        "",
        "| metric | score |",
        "| --- | ---: |",
        f"| BLEU | {report['bleu']:.2f} |",
        f"| chrF | {report['chrf']:.2f} |",
        "",
        "```",
        *(f"{name}: {signature}" for name, signature in signatures.items()),
        "```",
        "",
        f"Measured with `{command}` on the checkpoint this release was exported from.",
    ]
