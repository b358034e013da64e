"""``nmt-translate``: one output line per input line, always, in order.

    nmt-translate ckpt=outputs/RUN < source.txt > hypotheses.txt
    nmt-translate ckpt=outputs/RUN/best.pt input=src.txt output=hyp.txt decode=beam nbest=5

An empty or whitespace-only line gives an empty line; a line longer than
``max_source_subwords`` is cut to that length (and counted in a warning);
invalid UTF-8 is an error naming the line unless ``replace_invalid_utf8=true``.
With ``nbest=K`` (or ``decode.nbest=K``) the output is TSV, K rows per input line:
``line<TAB>rank<TAB>normalized_score<TAB>log_prob<TAB>translation`` (line and rank from 0);
an empty line gets one row, with an empty translation.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import hydra
import torch
from tqdm.auto import tqdm

from nmt.batching import ParallelIds, token_batches
from nmt.checkpoint import load_checkpoint, resolve_checkpoint
from nmt.config import CONF_DIR, DecodeConfig, TranslateConfig
from nmt.data import normalize_text, read_lines, split_lines
from nmt.model import RNNEncoderDecoder, build_model
from nmt.search import Hypothesis, search
from nmt.tokenizer import Tokenizer

log = logging.getLogger(__name__)


def pick_device(name: str = "auto", setting: str = "device") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"{setting}={name}: CUDA is not available on this machine; use {setting}=cpu")
    return torch.device(name)


@dataclass
class Translator:
    model: RNNEncoderDecoder
    tokenizer: Tokenizer
    device: torch.device
    checkpoint: dict  # the plain-data part of the checkpoint (configs, step, metrics)


def load_translator(ckpt: str | Path, device: str | torch.device = "auto") -> Translator:
    """Rebuild model and tokenizer from a run folder or checkpoint file (on any device)."""
    path = resolve_checkpoint(ckpt)
    state = load_checkpoint(path)
    device = pick_device(device) if isinstance(device, str) else device
    tokenizer = Tokenizer(bytes(state["tokenizer"]["src"].numpy()), bytes(state["tokenizer"]["tgt"].numpy()))
    spec = state["model_config"]
    model = build_model(spec["config"], spec["src_vocab_size"], spec["tgt_vocab_size"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    info = {k: v for k, v in state.items() if k not in ("model", "tokenizer", "train_state")}
    info["path"] = str(path)
    return Translator(model, tokenizer, device, info)


def decode_ids(
    model, src_ids: list[list[int]], decode: DecodeConfig, device: torch.device, progress: bool = False
) -> list[list[Hypothesis]]:
    """Search for each source (ids without EOS); batched by tokens, sorted by length, order restored."""
    results: list[list[Hypothesis] | None] = [None] * len(src_ids)
    nonempty = [i for i, ids in enumerate(src_ids) if ids]
    for i in range(len(src_ids)):
        if not src_ids[i]:
            results[i] = [Hypothesis([], 0.0, 0.0)]  # the one hypothesis there is: K copies would be noise
    if not nonempty:
        return results
    data = ParallelIds.from_lists([src_ids[i] for i in nonempty])
    # The beam multiplies the rows the decoder carries. On a CPU the cost grows with them,
    # so keep the work per batch constant; on a GPU a step costs about the same for 30 or
    # 150 sentences, and bigger batches mean fewer steps.
    divisor = 1 if device.type == "cuda" else max(1, decode.beam_size)
    budget = max(int(data.src_lengths.max()), decode.batch_tokens // divisor)
    batches = token_batches(data.src_lengths, data.src_lengths, budget, shuffle=False)
    model.eval()
    with tqdm(total=len(nonempty), desc="translating", unit="sent", disable=not progress, leave=False) as bar:
        for rows in batches:
            batch = data.collate(rows).to(device)
            with _autocast(device):
                hyps = search(
                    model, batch.src, batch.src_lengths, decode.beam_size, decode.length_penalty,
                    decode.max_len_a, decode.max_len_b, decode.min_len, decode.nbest,
                )
            for row, sentence_hyps in zip(rows.tolist(), hyps):
                results[nonempty[row]] = sentence_hyps
            bar.update(len(rows))
    return results


def _autocast(device: torch.device):
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def clean_output(text: str) -> str:
    """A translation is one line: byte-fallback pieces could decode to "\\n" or U+2028."""
    return normalize_text(text)


def translate_lines(
    translator: Translator, lines: list[str], decode: DecodeConfig,
    max_source_subwords: int = 250, progress: bool = False,
) -> list[list[tuple[str, Hypothesis]]]:
    """Translate raw lines; returns, per line, its n-best (text, hypothesis) pairs."""
    texts = [normalize_text(line) for line in lines]
    src_ids = translator.tokenizer.encode_src(texts)
    too_long = sum(len(ids) > max_source_subwords for ids in src_ids)
    if too_long:
        log.warning("%d line(s) longer than %d subwords were cut to that length (max_source_subwords)",
                    too_long, max_source_subwords)
        src_ids = [ids[:max_source_subwords] for ids in src_ids]
    hyps = decode_ids(translator.model, src_ids, decode, translator.device, progress)
    out = []
    for sentence_hyps in hyps:
        decoded = translator.tokenizer.decode_tgt([h.tokens for h in sentence_hyps])
        out.append([(clean_output(text), h) for text, h in zip(decoded, sentence_hyps)])
    return out


def format_output(results: list[list[tuple[str, Hypothesis]]], nbest: int) -> list[str]:
    if nbest == 1:
        return [hyps[0][0] for hyps in results]
    rows = []
    for line, hyps in enumerate(results):
        for rank, (text, hyp) in enumerate(hyps):
            rows.append(f"{line}\t{rank}\t{hyp.normalized_score:.4f}\t{hyp.score:.4f}\t{text}")
    return rows


def check_input(path: str | None, expected: str = "a text file, one sentence per line") -> None:
    """Fail on a missing input= file before the checkpoint is loaded, naming the setting."""
    if path is not None and (Path(path).is_dir() or not Path(path).exists()):  # a pipe is fine
        where = "a folder" if Path(path).is_dir() else "no such file"
        raise ValueError(f"input={path}: {where}; give {expected} (or leave input= out and pipe it to stdin)")


def check_output(path: str | None, input_path: str | None = None) -> None:
    """Fail on an output= that cannot be written before any decoding, naming the setting."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"output={path}: a folder; give a file name")
    if not target.parent.is_dir():
        raise ValueError(f"output={path}: no folder {target.parent}; create it first")
    if input_path is not None and target.exists() and target.resolve() == Path(input_path).resolve():
        raise ValueError(f"output={path} is the input file, which writing would destroy; choose another output=")


def read_input(path: str | None, replace_invalid: bool) -> list[str]:
    if path is not None:
        return read_lines(Path(path), replace_invalid)
    return split_lines(sys.stdin.buffer.read(), "<stdin>", replace_invalid)


def interactive(translator: Translator, cfg: TranslateConfig) -> None:
    """A prompt on the terminal: one sentence per line, Ctrl-D to quit.

    The prompt goes to stderr, so stdout still holds only translations.
    """
    print(f"nmt-translate: {translator.checkpoint['path']}; type a sentence, Ctrl-D to quit", file=sys.stderr)
    while True:
        print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            print(file=sys.stderr)
            return
        results = translate_lines(translator, [line.rstrip("\n")], cfg.decode, cfg.max_source_subwords)
        for text in format_output(results, cfg.decode.nbest):
            print(text, flush=True)


def run_translate(cfg: TranslateConfig) -> int:
    if cfg.nbest is not None:  # nbest=K: K hypotheses need a beam of at least K
        cfg.decode.nbest = cfg.nbest
        cfg.decode.beam_size = max(cfg.decode.beam_size, cfg.nbest)
    check_input(cfg.input)
    check_output(cfg.output, cfg.input)
    translator = load_translator(cfg.ckpt, cfg.device)
    if cfg.input is None and sys.stdin.isatty():
        interactive(translator, cfg)
        return 0
    lines = read_input(cfg.input, cfg.replace_invalid_utf8)
    start = time.perf_counter()
    results = translate_lines(translator, lines, cfg.decode, cfg.max_source_subwords, progress=cfg.input is not None)
    rows = format_output(results, cfg.decode.nbest)
    text = "".join(row + "\n" for row in rows)
    if cfg.output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        Path(cfg.output).write_text(text, encoding="utf-8")
    seconds = time.perf_counter() - start
    log.info("translated %d lines in %.1f s (%.1f lines/s) with %s, beam %d", len(lines), seconds,
             len(lines) / max(seconds, 1e-9), Path(translator.checkpoint["path"]).name, cfg.decode.beam_size)
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="translate")
def _hydra_main(cfg) -> None:
    from nmt.cli import run_cli

    run_cli(run_translate, cfg)


def main() -> None:
    from nmt.cli import check_command_line

    check_command_line(TranslateConfig)
    _hydra_main()


if __name__ == "__main__":
    main()
