"""``nmt-score``: log p(target | source) for each pair, as Cho et al. (2014) scored phrase pairs.

    nmt-score ckpt=outputs/RUN input=pairs.tsv > scores.tsv

Input: one ``source<TAB>target`` pair per line. Output, one line per input line:
``log_prob<TAB>log_prob_per_token<TAB>n_tokens`` (natural log; tokens are target
subwords plus EOS). An empty line, or a pair with an empty side, scores ``nan``.
"""

from __future__ import annotations

import logging

from nmt.commands.app import hydra_command
from nmt.commands.files import check_input, check_output, read_input, write_output
from nmt.config import ScoreConfig
from nmt.data import normalize_text
from nmt.errors import CorpusError

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


def run_score(cfg: ScoreConfig) -> int:
    from nmt.inference import load_translator, score_pairs

    check_input(cfg.input, "a file of source<TAB>target lines")
    check_output(cfg.output, cfg.input)
    translator = load_translator(cfg.ckpt, cfg.device, precision=cfg.precision)
    pairs = read_pairs(read_input(cfg.input, False), cfg.input or "<stdin>")
    scores = score_pairs(translator, pairs, cfg.batch_tokens, progress=cfg.input is not None)
    write_output(cfg.output, "".join(f"{total:.4f}\t{total / n if n else float('nan'):.4f}\t{n}\n" for total, n in scores))
    unscored = sum(1 for _, n in scores if n == 0)
    log.info("scored %d pairs%s", len(pairs) - unscored, f" ({unscored} with an empty side: nan)" if unscored else "")
    return 0


main = hydra_command("score", ScoreConfig, run_score)

if __name__ == "__main__":
    main()
