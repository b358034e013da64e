"""Hostile input, round 2 (issue 32): tokenizer identity, output paths that are not ours to
replace, damaged checkpoints that cost memory or tracebacks. Each test failed on the main of
2026-12-07; docs/reliability.md lists the promises they keep."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import sentencepiece as spm
import torch

from nmt.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from nmt.config import TokenizerConfig
from nmt.ensemble import average_checkpoints
from nmt.inference import load_translator
from nmt.tokenizer import build_tokenizer
from nmt.tokens import BOS, EOS, PAD, UNK
from nmt.training import train
from tests.conftest import ENGLISH, SPANISH
from tests.test_reliability import run_config

# --------------------------------------------------------------------------- tokenizer identity


def _sentences(n: int = 600) -> tuple[list[str], list[str]]:
    src = [" ".join(SPANISH[(i * 7 + j) % len(SPANISH)] for j in range(1 + i % 5)) for i in range(n)]
    tgt = [" ".join(ENGLISH[(i * 7 + j) % len(ENGLISH)] for j in range(1 + i % 5)) for i in range(n)]
    return src, tgt


def _train_from_file(folder: Path, lines: list[str]) -> bytes:
    """A SentencePiece model trained the way SentencePiece is usually driven (from a file under
    ``folder``): the model records that file's path, so two folders give two byte strings."""
    folder.mkdir(parents=True)
    (folder / "train.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(folder / "train.txt"),
        model_prefix=str(folder / "spm"),
        vocab_size=60,
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return (folder / "spm.model").read_bytes()


def test_a_tokenizer_is_identified_by_what_it_does_not_by_its_bytes(tmp_path):
    from nmt.tokenizer import model_identity

    lines = _sentences()[0]
    a, b = _train_from_file(tmp_path / "a", lines), _train_from_file(tmp_path / "b", lines)
    assert a != b  # the paths SentencePiece wrote into them
    assert model_identity(a) == model_identity(b)
    other = _train_from_file(tmp_path / "c", lines[:300])
    assert spm.SentencePieceProcessor(model_proto=other).get_piece_size() > 0
    assert model_identity(other) != model_identity(a)  # other pieces or scores
    assert model_identity(b"not a model") != model_identity(a)


def test_tokenizer_builds_are_reproducible_byte_for_byte(tmp_path):
    src, tgt = _sentences()
    cfg = TokenizerConfig(vocab_size=300)
    first = build_tokenizer(src, tgt, cfg, tmp_path / "one")
    again = build_tokenizer(src, tgt, cfg, tmp_path / "two")
    assert first.src_proto == again.src_proto
    assert not list((tmp_path / "one" / "spm").glob("*partial*"))


def test_a_tokenizer_build_writes_a_temporary_file_of_its_own(tmp_path):
    """Concurrent builds of one tokenizer each write aside under a name of their own: another
    writer's leftover at the old shared name (KEY.partial) is none of this build's business."""
    src, tgt = _sentences()
    cfg = TokenizerConfig(vocab_size=300)
    build_tokenizer(src, tgt, cfg, tmp_path)
    (model,) = (tmp_path / "spm").glob("joint-*.model")
    model.unlink()
    model.with_suffix(".partial").mkdir()  # another writer's, in the way of a shared name
    build_tokenizer(src, tgt, cfg, tmp_path)
    assert model.is_file() and model.with_suffix(".partial").is_dir()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, word_corpus) -> tuple[Path, Path]:
    """A 6-step run with a tokenizer cache of its own (the tests damage it)."""
    cache = tmp_path_factory.mktemp("own-cache")
    run_dir = tmp_path_factory.mktemp("small-run")
    train(run_config(word_corpus, cache, "train.max_steps=6"), run_dir)
    return run_dir, cache


@pytest.mark.parametrize("damage", ["truncated", "deleted", "another machine's"])
def test_a_run_resumes_after_its_tokenizer_cache_is_rebuilt(small_run, tmp_path, word_corpus, damage):
    run_dir, cache = small_run
    copy, own_cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(run_dir, copy)
    shutil.copytree(cache, own_cache)
    (cached,) = (own_cache / "spm").glob("joint-*.model")
    if damage == "truncated":
        os.truncate(cached, 1000)
    elif damage == "deleted":
        cached.unlink()
    else:  # the same tokenizer, but other bytes (trained from a file of another path)
        cached.write_bytes(_with_another_training_path(cached.read_bytes()))
    before = (copy / "spm.model").read_bytes()
    summary = train(run_config(word_corpus, own_cache, "train.max_steps=9"), copy, resume=True)
    assert summary["steps"] == 9
    assert (copy / "spm.model").read_bytes() == before  # the run's own tokenizer, never overwritten


def test_a_resume_without_its_own_tokenizer_takes_the_cache_s_same_one(small_run, tmp_path, word_corpus):
    run_dir, cache = small_run
    copy, own_cache = tmp_path / "run", tmp_path / "cache"
    shutil.copytree(run_dir, copy)
    shutil.copytree(cache, own_cache)
    (cached,) = (own_cache / "spm").glob("joint-*.model")
    cached.write_bytes(_with_another_training_path(cached.read_bytes()))
    (copy / "spm.model").write_bytes(b"damaged")
    assert train(run_config(word_corpus, own_cache, "train.max_steps=9"), copy, resume=True)["steps"] == 9
    assert (copy / "spm.model").read_bytes() == cached.read_bytes()  # restored from the cache's build


def _with_another_training_path(proto: bytes) -> bytes:
    """The same SentencePiece model, as another machine's build writes it: another input path."""
    model_pb2 = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    model = model_pb2.ModelProto()
    model.ParseFromString(proto)
    model.trainer_spec.input[:] = ["/tmp/elsewhere/tmpk3x9/train.txt"]
    model.trainer_spec.model_prefix = "/tmp/elsewhere/tmpk3x9/spm"
    changed = model.SerializeToString()
    assert changed != proto
    return changed


def _rebuilt_elsewhere(checkpoint: Path, out: Path) -> Path:
    state = load_checkpoint(checkpoint)
    for side in ("src", "tgt"):
        proto = _with_another_training_path(bytes(state["tokenizer"][side].numpy()))
        state["tokenizer"][side] = torch.frombuffer(bytearray(proto), dtype=torch.uint8)
    state.pop("format")
    save_checkpoint(state, out)
    return out


def test_ensembles_and_averages_take_one_tokenizer_built_by_two_caches(trained_run, tmp_path):
    """Seeds trained on different machines: identical tokenizers in other bytes."""
    elsewhere = _rebuilt_elsewhere(trained_run / "best.pt", tmp_path / "elsewhere.pt")
    assert read_checkpoint(elsewhere).src_proto != read_checkpoint(trained_run / "best.pt").src_proto
    translator = load_translator([trained_run / "best.pt", elsewhere])
    assert len(translator.members) == 2
    averaged = average_checkpoints([trained_run / "best.pt", elsewhere])
    assert averaged.tgt_vocab_size == read_checkpoint(elsewhere).tgt_vocab_size
