"""The shipped model (data/models/bible-es-en): a real model guards what tiny random ones
cannot: a broken search, tokenizer or loader shows in its BLEU and its translations."""

from __future__ import annotations

import re

import pytest

import nmt
from nmt.config import DataConfig, TokenizerConfig
from nmt.data import load_corpus
from nmt.metrics import bleu_and_chrf
from tests.test_docs import ROOT

RELEASE = ROOT / "data" / "models" / "bible-es-en"

# Greedy translations (float32 compute) of the release as exported; scripts/release_model.sh
# makes a new release, and these are then written again from it.
PINNED = {
    "En el principio crió Dios los cielos y la tierra.": "In God, the heavens, the earth and the earth.",
    "Y dijo Dios: Sea la luz: y fué la luz.": "God said, “Let the light shines. It is light.",
    "Bienaventurados los pacíficos: porque ellos serán llamados hijos de Dios.": (
        "Blessed are the peace offerings, for they are called by God’s sons."
    ),
    "El amor es sufrido, es benigno.": "love love is perfect, I is gentle.",
    "Jehová es mi pastor; nada me faltará.": "Yahweh is my shepherd. I have nothing nothing.",
}


@pytest.fixture(scope="module")
def model():
    return nmt.load(RELEASE, device="cpu")


def card_floor() -> tuple[int, float]:
    """The model card's BLEU on the first N test sentences (beam 5): the regression floor."""
    card = (RELEASE / "README.md").read_text(encoding="utf-8")
    match = re.search(r"\| first (\d+) test sentences, beam 5 \| BLEU ([0-9.]+) \|", card)
    assert match, "the model card has no regression floor (scripts/release_model.sh writes it)"
    return int(match[1]), float(match[2])


def test_the_release_is_within_the_repository_s_budget():
    assert sum(path.stat().st_size for path in RELEASE.iterdir()) <= 32 * 2**20


def test_beam_5_bleu_on_the_first_test_sentences_holds_the_model_card_s_figure(model, cache_dir):
    n, floor = card_floor()
    data = DataConfig(tokenizer=TokenizerConfig(), cache_dir=str(cache_dir))
    test = load_corpus(data, splits=("test",))["test"].select(range(n))
    hyps = model.translate(list(test["src"]), beam_size=5)
    bleu, _ = bleu_and_chrf(hyps, list(test["tgt"]))
    assert bleu >= floor - 0.5, f"BLEU {bleu:.2f} on the first {n} test sentences, the card says {floor:.2f}"


def test_greedy_translations_of_fixed_sentences_are_pinned(model):
    assert PINNED, "pin the release's translations"
    assert model.translate(list(PINNED), beam_size=1) == list(PINNED.values())
