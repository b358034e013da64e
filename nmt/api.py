"""nmt from Python: load a model, then translate, score and embed with plain arguments.

    import nmt

    model = nmt.load("data/models/bible-es-en")   # a release, a run folder, a checkpoint, or a list of them
    model.translate(["Hola.", "", "¿Dónde está?"])  # one string per line: ["Hello.", "", "Where is it?"]
    model.translate("Hola.")                        # one line in, one string out
    model.translate(["Hola."], nbest=3)             # per line, 3 Translation(text, score, normalized_score)
    model.score([("Hola.", "Hello.")])              # log p(target | source) per pair
    model.embed(["Hola."])                          # (N, D) float32 phrase vectors

The same contract as the commands: N lines in, N results out, in order; an empty line gives an
empty translation (a score of nan, a row of nan). A list of paths is an ensemble (translate
and score only). Errors are the library's (``nmt.errors``), each naming the file or setting.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nmt.config import DecodeConfig, check_ranges
from nmt.data import normalize_text
from nmt.errors import SettingError
from nmt.inference import Translator, embed_ids, load_translator, score_pairs, source_ids, translate_lines


@dataclass(frozen=True)
class Translation:
    """One hypothesis of an n-best list."""

    text: str
    score: float  # log p(translation | source), the end of sentence included
    normalized_score: float  # score / length ** length_penalty: what the beam search ranks by


class Model:
    """A loaded model (or ensemble) and its tokenizer; see the module's docstring."""

    def __init__(self, translator: Translator):
        self.translator = translator

    def __repr__(self) -> str:
        return f"nmt.Model({self.translator.name!r}, device={str(self.translator.device)!r})"

    @property
    def device(self) -> str:
        return str(self.translator.device)

    def translate(
        self,
        lines: str | Iterable[str],
        beam_size: int = 5,
        nbest: int | None = None,
        length_penalty: float = 1.0,
        max_len_a: float = 1.5,
        max_len_b: int = 10,
        min_len: int = 0,
        batch_tokens: int = 6000,
        max_source_subwords: int = 250,
    ) -> str | list[str] | list[Translation] | list[list[Translation]]:
        """The best translation of each line (``beam_size=1``: greedy); with ``nbest=K``, the K
        best of each as ``Translation``s (the beam widened to K if narrower). A string in gives
        a string (or one n-best list) out."""
        single = isinstance(lines, str)
        texts = _texts(lines)
        for name, value in (("beam_size", beam_size), ("nbest", nbest), ("batch_tokens", batch_tokens)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise SettingError(f"{name}={value!r}: expected a whole number")
        if nbest is not None and nbest < 1:
            raise SettingError(f"nbest={nbest}: must be at least 1 (or None for one string per line)")
        _check_subwords(max_source_subwords)
        decode = DecodeConfig(
            name="beam" if beam_size > 1 else "greedy",
            beam_size=beam_size,
            length_penalty=length_penalty,
            max_len_a=max_len_a,
            max_len_b=max_len_b,
            min_len=min_len,
            nbest=nbest or 1,
            batch_tokens=batch_tokens,
        )
        check_ranges(decode)
        decode.beam_size = max(beam_size, decode.nbest)
        results = translate_lines(self.translator, texts, decode, max_source_subwords)
        if nbest is None:
            out = [row[0][0] for row in results]
        else:
            out = [[Translation(text, h.score, h.normalized_score) for text, h in row] for row in results]
        return out[0] if single else out

    def score(self, pairs: Iterable[tuple[str, str]], batch_tokens: int = 8000) -> list[float]:
        """log p(target | source) of each (source, target) pair, end of sentence included;
        nan for a pair with an empty side."""
        pairs = [(normalize_text(source), normalize_text(target)) for source, target in _pairs(pairs)]
        return [total if n else float("nan") for total, n in score_pairs(self.translator, pairs, batch_tokens)]

    def embed(self, lines: str | Iterable[str], batch_tokens: int = 8000, max_source_subwords: int = 250) -> np.ndarray:
        """The phrase vector of each line, (N, D) float32: the Cho et al. model's summary c, an
        attention model's mean annotation; a row of nan for an empty line."""
        texts = _texts(lines)
        _check_subwords(max_source_subwords)
        return embed_ids(self.translator, source_ids(self.translator, texts, max_source_subwords), batch_tokens)


def _texts(lines: str | Iterable[str]) -> list[str]:
    texts = [lines] if isinstance(lines, str) else list(lines)
    wrong = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong is not None:
        raise SettingError(f"lines[{wrong}] is a {type(texts[wrong]).__name__}, not a string: give one string per line")
    return texts


def _pairs(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    given = list(pairs)
    for i, pair in enumerate(given):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(side, str) for side in pair)):
            raise SettingError(f"pairs[{i}] = {pair!r}: give (source, target) pairs of strings")
    return given


def _check_subwords(max_source_subwords: int) -> None:
    if not isinstance(max_source_subwords, int) or isinstance(max_source_subwords, bool) or max_source_subwords < 1:
        raise SettingError(f"max_source_subwords={max_source_subwords!r}: must be a whole number of at least 1")


def load(path: str | Path | Sequence[str | Path], device: str = "auto", precision: str = "auto") -> Model:
    """A model from a release folder, a run folder (its best.pt), a checkpoint file, or a list of
    them (an ensemble); ``device``: "auto" (a GPU if there is one), "cpu", "cuda", "cuda:1";
    ``precision``: "auto" (bfloat16 autocast on a GPU, float32 on a CPU), "float32", "bfloat16"
    or "int8" (a CPU's; docs/translating.md says which to use where)."""
    paths = [str(p) for p in path] if isinstance(path, (list, tuple)) else str(path)
    return Model(load_translator(paths, device, precision=precision))
