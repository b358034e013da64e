"""``nmt-translate``: one output line per input line, always, in order.

    nmt-translate ckpt=outputs/RUN < source.txt > hypotheses.txt
    nmt-translate ckpt=outputs/RUN/best.pt input=src.txt output=hyp.txt decode=beam nbest=5

An empty or whitespace-only line gives an empty line; a line longer than
``max_source_subwords`` is cut to that length (and counted in a warning);
invalid UTF-8 is an error naming the line unless ``replace_invalid_utf8=true``.
With ``nbest=K`` (or ``decode.nbest=K``) the output is TSV, K rows per input line:
``line<TAB>rank<TAB>normalized_score<TAB>log_prob<TAB>translation`` (line and rank from 0);
an empty line gets one row, with an empty translation. With ``alignments=FILE`` (an
attention model), FILE gets one JSON line per input line: the best translation's
``{"source": pieces, "target": pieces, "weights": rows}`` (pieces end in ``</s>``; one
row of source weights per target piece); an empty line gives empty lists.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nmt.commands.app import hydra_command
from nmt.commands.files import (
    OutputFiles,
    check_input,
    check_output,
    count_lines,
    input_chunks,
    output_stream,
    same_file,
)
from nmt.config import TranslateConfig
from nmt.errors import SettingError
from nmt.progress import ProgressBar

if TYPE_CHECKING:  # torch: imported when a model is loaded, not for --help or a refused setting
    from nmt.inference import Translator
    from nmt.search import Hypothesis

log = logging.getLogger(__name__)


def format_output(results: list[list[tuple[str, Hypothesis]]], nbest: int, first_line: int = 0) -> list[str]:
    """Output rows of translated lines; n-best rows number lines from ``first_line``."""
    if nbest == 1:
        return [hyps[0][0] for hyps in results]
    rows = []
    for line, hyps in enumerate(results, first_line):
        for rank, (text, hyp) in enumerate(hyps):
            rows.append(f"{line}\t{rank}\t{hyp.normalized_score:.4f}\t{hyp.score:.4f}\t{text}")
    return rows


def interactive(translator: Translator, cfg: TranslateConfig) -> None:
    """A prompt on the terminal: one sentence per line, Ctrl-D to quit.

    The prompt goes to stderr, so stdout still holds only translations.
    """
    from nmt.inference import translate_lines

    print(f"nmt-translate: {translator.name}; type a sentence, Ctrl-D to quit", file=sys.stderr)
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
    from nmt.inference import alignment_records, has_alignments, load_translator, translate_lines

    if cfg.nbest is not None:  # nbest=K: K hypotheses need a beam of at least K
        if 1 < cfg.decode.beam_size < cfg.nbest:  # a beam search asked for: say that it widens
            log.warning("nbest=%d widens decode.beam_size=%d to %d", cfg.nbest, cfg.decode.beam_size, cfg.nbest)
        cfg.decode.nbest = cfg.nbest
        cfg.decode.beam_size = max(cfg.decode.beam_size, cfg.nbest)
    check_input(cfg.input)
    check_output(cfg.output, cfg.input)
    if cfg.alignments is not None:
        check_output(cfg.alignments, cfg.input, "alignments")
        if cfg.output is not None and same_file(cfg.alignments, cfg.output):
            raise SettingError(f"alignments={cfg.alignments} is also output=: give the alignments a file of their own")
    translator = load_translator(cfg.ckpt, cfg.device, precision=cfg.precision)
    if cfg.alignments is not None and not has_alignments(translator.model):
        raise SettingError(
            f"alignments={cfg.alignments}: "
            + (
                f"no member of the ensemble {translator.name} has"
                if len(translator.members) > 1
                else f"{translator.name} has no"
            )
            + " attention, so no alignments (the Cho et al. model reads one summary vector); use an attention "
            "model (model=rnnsearch)"
        )
    if cfg.input is None and sys.stdin.isatty():
        if cfg.alignments is not None:
            raise SettingError(f"alignments={cfg.alignments} needs input=FILE or a piped stdin, not the prompt")
        interactive(translator, cfg)
        return 0
    # Chunk by chunk: memory stays flat for any input, and each chunk's translations are
    # written (in order) as soon as they are done.
    start, n_lines = time.perf_counter(), 0
    # A regular file is counted for the progress bar; a pipe (input=<(zcat ...)) can be read once only.
    total = count_lines(cfg.input) if cfg.input is not None and Path(cfg.input).is_file() else None
    outputs = OutputFiles()  # output= and alignments= appear together, whole, or not at all
    aligned = outputs.open(cfg.alignments) if cfg.alignments is not None else contextlib.nullcontext()
    with (
        outputs,
        outputs.open(cfg.output) if cfg.output is not None else output_stream(None) as out,
        aligned as alignments,
        ProgressBar(total, "translating", "lines", enabled=cfg.input is not None or not sys.stdin.isatty()) as bar,
    ):
        for lines in input_chunks(cfg.input, cfg.replace_invalid_utf8):
            before = bar.count
            results = translate_lines(translator, lines, cfg.decode, cfg.max_source_subwords, progress=bar)
            out.write("".join(row + "\n" for row in format_output(results, cfg.decode.nbest, n_lines)))
            if alignments is not None:
                records = alignment_records(translator, lines, results, cfg.max_source_subwords)
                alignments.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
            n_lines += len(lines)
            bar.update(len(lines) - (bar.count - before))  # the empty lines, which skip the model
    seconds = time.perf_counter() - start
    log.info(
        "translated %d lines in %.1f s (%.1f lines/s) with %s, beam %d",
        n_lines,
        seconds,
        n_lines / max(seconds, 1e-9),
        translator.name,
        cfg.decode.beam_size,
    )
    return 0


main = hydra_command("translate", TranslateConfig, run_translate)

if __name__ == "__main__":
    main()
