"""Shared fixtures: a synthetic word-for-word corpus and a tiny model trained on it in seconds."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from nmt.commands.app import to_object
from nmt.config import CONF_DIR

# The models in tests are tiny: one thread runs them many times faster than two
# threads contending for a small matrix product (and CI has two cores).
torch.set_num_threads(1)

SPANISH = "uno dos tres cuatro cinco seis siete ocho nueve diez casa perro gato rojo azul".split()
ENGLISH = "one two three four five six seven eight nine ten house dog cat red blue".split()
LEXICON = dict(zip(SPANISH, ENGLISH))

TINY_MODEL = ["model.embed_size=32", "model.hidden_size=64", "model.maxout_size=32", "model.dropout=0.0"]


def write_word_corpus(folder: Path, sizes=(("train", 400), ("validation", 20), ("test", 20)), seed=0) -> Path:
    """Random sequences of Spanish number/animal words and their word-by-word English."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in sizes:
        src, tgt = [], []
        for _ in range(n):
            words = rng.sample(SPANISH, rng.randint(2, 5))
            src.append(" ".join(words))
            tgt.append(" ".join(LEXICON[w] for w in words))
        (folder / f"{split}.es").write_text("\n".join(src) + "\n", encoding="utf-8")
        (folder / f"{split}.en").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return folder


def compose_config(name: str, overrides: list[str]):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return to_object(compose(name, overrides=overrides))


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("nmt-cache")


@pytest.fixture(scope="session")
def word_corpus(tmp_path_factory) -> Path:
    return write_word_corpus(tmp_path_factory.mktemp("word-corpus"))


def word_corpus_overrides(corpus: Path, cache: Path) -> list[str]:
    return [
        "data=files",
        f"data.path={corpus}",
        "data.src_lang=es",
        "data.tgt_lang=en",
        "data.tokenizer.vocab_size=300",
        f"data.cache_dir={cache}",
    ]


def train_tiny(folder: Path, corpus: Path, cache: Path, model: list[str], steps: int) -> Path:
    """A tiny model trained on the word corpus (validating 3 times, all sentences)."""
    from nmt.training import train

    cfg = compose_config(
        "train",
        word_corpus_overrides(corpus, cache)
        + model
        + [
            "train=debug",
            f"train.max_steps={steps}",
            "train.max_epochs=1000",
            f"train.val_every={steps // 3}",
            "train.val_max_sentences=0",
            "train.max_tokens=512",
            "train.lr=0.01",
            "train.log_every=50",
        ],
    )
    train(cfg, folder)
    return folder


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, word_corpus, cache_dir) -> Path:
    """A tiny model that has learned the word corpus (training loss near zero: it reproduces its training targets)."""
    return train_tiny(tmp_path_factory.mktemp("trained-run"), word_corpus, cache_dir, TINY_MODEL, 1500)


TINY_RNNSEARCH = [
    "model=rnnsearch_small",
    "model.embed_size=16",
    "model.hidden_size=24",
    "model.attention_size=20",
    "model.maxout_size=12",
    "model.dropout=0.0",
]


@pytest.fixture(scope="session")
def trained_rnnsearch_run(tmp_path_factory, word_corpus, cache_dir) -> Path:
    """A tiny attention model (model.arch=rnnsearch) trained on the word corpus, for the CLI tests."""
    return train_tiny(tmp_path_factory.mktemp("trained-rnnsearch-run"), word_corpus, cache_dir, TINY_RNNSEARCH, 600)


@pytest.fixture(params=["cho2014", "rnnsearch"])
def any_run(request) -> Path:
    """Every command-line test runs with a Cho model and with an attention model (issue 13)."""
    return request.getfixturevalue("trained_run" if request.param == "cho2014" else "trained_rnnsearch_run")
