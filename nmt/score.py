"""``nmt-score``: log p(target | source) for each pair, as Cho et al. (2014) scored phrase pairs.

    nmt-score ckpt=outputs/RUN input=pairs.tsv > scores.tsv

Input: one ``source<TAB>target`` pair per line. Output, one line per input line:
``log_prob<TAB>log_prob_per_token<TAB>n_tokens`` (natural log; tokens are target
subwords plus EOS). An empty line, or a pair with an empty side, scores ``nan``.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import torch
from tqdm.auto import tqdm

from nmt.batching import ParallelIds, token_batches
from nmt.config import CONF_DIR, ScoreConfig
from nmt.data import CorpusError, normalize_text
from nmt.tokenizer import PAD
from nmt.translate import Translator, _autocast, check_input, check_output, load_translator, read_input

log = logging.getLogger(__name__)


def read_pairs(lines: list[str], name: str) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(lines, start=1):
        fields = line.split("\t")
        if not line.strip():  # an empty line is an empty pair: it scores nan, keeping lines aligned
            fields = ["", ""]
        if len(fields) != 2:
            raise CorpusError(f"{name}:{number}: expected source<TAB>target, found {len(fields)} field(s)")
        pairs.append((normalize_text(fields[0]), normalize_text(fields[1])))
    return pairs


@torch.inference_mode()
def score_pairs(translator: Translator, pairs: list[tuple[str, str]], batch_tokens: int = 8000,
                progress: bool = False) -> list[tuple[float, int]]:
    """(log p(target | source), number of target tokens incl. EOS) per pair, batched by tokens."""
    model, device = translator.model.eval(), translator.device
    results: list[tuple[float, int]] = [(float("nan"), 0)] * len(pairs)
    rows = [i for i, (src, tgt) in enumerate(pairs) if src and tgt]
    if len(rows) < len(pairs):
        log.warning("%d pair(s) with an empty side: scored nan (their lines stay in place)", len(pairs) - len(rows))
    if not rows:
        return results
    data = ParallelIds.from_lists(translator.tokenizer.encode_src([pairs[i][0] for i in rows]),
                                  translator.tokenizer.encode_tgt([pairs[i][1] for i in rows]))
    budget = max(batch_tokens, int(max(data.src_lengths.max(), data.tgt_lengths.max())))
    batches = token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=False)
    for batch_rows in tqdm(batches, desc="scoring", disable=not progress, leave=False):
        batch = data.collate(batch_rows).to(device)
        with _autocast(device):
            logits = model(batch.src, batch.src_lengths, batch.tgt_in)
        log_probs = torch.log_softmax(logits.float(), dim=-1)
        token_scores = log_probs.gather(-1, batch.tgt_out.unsqueeze(-1)).squeeze(-1)
        real = batch.tgt_out != PAD
        totals = token_scores.masked_fill(~real, 0.0).sum(1).tolist()
        for row, total, n in zip(batch_rows.tolist(), totals, real.sum(1).tolist()):
            results[rows[row]] = (total, n)
    return results


def run_score(cfg: ScoreConfig) -> int:
    check_input(cfg.input, "a file of source<TAB>target lines")
    check_output(cfg.output, cfg.input)
    translator = load_translator(cfg.ckpt, cfg.device)
    pairs = read_pairs(read_input(cfg.input, False), cfg.input or "<stdin>")
    scores = score_pairs(translator, pairs, cfg.batch_tokens, progress=cfg.input is not None)
    text = "".join(f"{total:.4f}\t{total / n if n else float('nan'):.4f}\t{n}\n" for total, n in scores)
    if cfg.output is None:
        sys.stdout.write(text)
    else:
        Path(cfg.output).write_text(text, encoding="utf-8")
    log.info("scored %d pairs", len(pairs))
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="score")
def _hydra_main(cfg) -> None:
    from nmt.cli import run_cli

    run_cli(run_score, cfg)


def main() -> None:
    from nmt.cli import check_command_line

    check_command_line(ScoreConfig)
    _hydra_main()


if __name__ == "__main__":
    main()
