"""The trainer end to end: train=debug in seconds, the run folder, metrics, early stopping, schedules."""

import json

import pytest
import torch

from nmt.checkpoint import load_checkpoint
from nmt.config import OptimConfig
from nmt.optim import LearningRateSchedule
from nmt.run_folder import read_metrics
from nmt.training import train
from tests.conftest import TINY_MODEL, compose_config, word_corpus_overrides

REQUIRED_METRICS = {"step", "epoch", "train_loss", "val_loss", "val_bleu", "val_chrf", "tokens_per_s"}


@pytest.mark.parametrize("model", ["small", "rnnsearch_small"])
def test_debug_run_end_to_end(tmp_path, word_corpus, cache_dir, model):
    cfg = compose_config("train", word_corpus_overrides(word_corpus, cache_dir) + ["train=debug", f"model={model}"])
    summary = train(cfg, tmp_path)
    assert summary["steps"] == 20 and summary["reason"] == "max_steps"
    for name in ("config.yaml", "spm.model", "best.pt", "last.pt", "metrics.jsonl", "curves.png", "summary.json"):
        assert (tmp_path / name).exists(), name
    assert list((tmp_path / "tensorboard").iterdir())
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [10, 20]
    for m in metrics:
        assert REQUIRED_METRICS <= set(m)
        assert m["tokens_per_s"] > 0 and m["val_loss"] > 0
    best = load_checkpoint(tmp_path / "best.pt")
    assert "train_state" not in best  # best.pt is for translation: weights, configs, tokenizer
    assert best["model_config"]["config"]["name"] == model
    assert best["tokenizer"]["src"].dtype == torch.uint8
    last = load_checkpoint(tmp_path / "last.pt")
    assert last["train_state"]["progress"]["step"] == 20
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 20


def test_training_learns_and_early_stopping_stops(tmp_path, word_corpus, cache_dir):
    cfg = compose_config(
        "train",
        word_corpus_overrides(word_corpus, cache_dir)
        + TINY_MODEL
        + [
            "train=debug",
            "train.max_steps=0",
            "train.max_epochs=200",
            "train.val_every=40",
            "train.lr=0.01",
            "train.max_tokens=512",
            "train.patience=2",
            "train.early_stopping_metric=val_loss",
        ],
    )
    summary = train(cfg, tmp_path)
    metrics = read_metrics(tmp_path)
    assert summary["reason"] == "early_stopping"
    assert metrics[0]["val_loss"] > min(m["val_loss"] for m in metrics)
    # stopped after `patience` validations without a new best
    assert all(not m["best"] for m in metrics[-2:]) and summary["best_step"] == metrics[-3]["step"]


def test_plateau_and_warmup_schedules():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=1.0)
    schedule = LearningRateSchedule(OptimConfig(lr=1.0, lr_schedule="plateau", lr_patience=1, lr_decay=0.5), optimizer)
    for improved in (True, False, False):
        schedule.validated(improved)
    assert schedule.step(10) == 0.5
    warm = LearningRateSchedule(OptimConfig(lr=1.0, lr_schedule="inverse_sqrt", warmup_steps=100), optimizer)
    assert warm.step(50) == pytest.approx(0.5) and warm.step(400) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="needs train.warmup_steps"):
        LearningRateSchedule(OptimConfig(lr_schedule="inverse_sqrt", warmup_steps=0), optimizer)
    with pytest.raises(ValueError, match="train.lr_schedule='cosine'"):
        LearningRateSchedule(OptimConfig(lr_schedule="cosine"), optimizer)


def test_paper_recipe_trains_a_few_steps(tmp_path, word_corpus, cache_dir):
    """model=cho2014 (paper init, rank-100 output) with Adadelta and the paper's GRU cell runs."""
    cfg = compose_config(
        "train",
        word_corpus_overrides(word_corpus, cache_dir)
        + [
            "model=cho2014",
            "model.hidden_size=32",
            "model.maxout_size=16",
            "model.embed_size=16",
            "model.output_rank=8",
            "model.cell=paper",
            "train=paper",
            "train.max_steps=6",
            "train.val_every=3",
            "train.val_max_sentences=4",
            "train.max_tokens=512",
        ],
    )
    summary = train(cfg, tmp_path)
    assert summary["steps"] == 6
    assert load_checkpoint(tmp_path / "last.pt")["model_config"]["config"]["cell"] == "paper"


def test_long_training_pairs_are_skipped(tmp_path, word_corpus, cache_dir, caplog):
    from nmt.training import prepare_data

    cfg = compose_config(
        "train", word_corpus_overrides(word_corpus, cache_dir) + TINY_MODEL + ["train=debug", "train.max_subwords=5"]
    )
    with caplog.at_level("INFO", logger="nmt.training"):
        prepared = prepare_data(cfg.data, cfg.train.max_subwords)
    kept = prepared.data.train
    assert 0 < len(kept) < 400 and "training pairs longer than 5 subwords" in caplog.text
    assert max(kept.src_lengths.max(), kept.tgt_lengths.max()) <= 5


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.optimizer=sgd", "train.optimizer='sgd': expected one of adam, adadelta"),
        ("train.lr=-1", "train.lr=-1.0: must be greater than 0"),
        ("train.lr_schedule=cosine", "train.lr_schedule='cosine': expected one of constant, inverse_sqrt, plateau"),
        ("model.cell=lstm", "model.cell='lstm': expected one of cudnn, paper"),
        ("model.hidden_size=0", "model.hidden_size=0: must be greater than 0"),
        ("model.dropout=2", "model.dropout=2.0: must be at least 0 and below 1"),
        ("train.max_epochs=0", "train.max_epochs=0: must be greater than 0"),
    ],
)
def test_impossible_settings_fail_before_the_corpus_is_read(tmp_path, override, message, monkeypatch):
    import nmt.training

    monkeypatch.setattr(nmt.training, "load_corpus", lambda *a, **k: pytest.fail("the corpus was read"))
    cfg = compose_config("train", ["train=debug", override])
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_relative_corpus_path_is_saved_absolute(tmp_path, word_corpus, cache_dir, monkeypatch):
    """The run's config.yaml must work from any folder (resume, nmt-evaluate)."""
    monkeypatch.chdir(word_corpus.parent)
    overrides = word_corpus_overrides(word_corpus, cache_dir)
    overrides[1] = f"data.path={word_corpus.name}"
    train(compose_config("train", overrides + ["train=debug", "train.max_steps=2", "evaluate_test=false"]), tmp_path)
    assert f"path: {word_corpus}\n" in (tmp_path / "config.yaml").read_text()
