"""Progress a log file can show (issue 31): nmt-train's periodic line without a terminal, no
carriage-return bars in a file."""

from __future__ import annotations

import logging

import nmt.trainer
from nmt.progress import ProgressLog
from nmt.trainer import Progress
from nmt.training import train
from tests.commands import run_command
from tests.conftest import word_corpus_overrides
from tests.test_reliability import run_config


def test_the_progress_line_says_where_training_is_and_what_is_left(caplog):
    lines = ProgressLog(every=0.0, max_minutes=15, enabled=True)
    with caplog.at_level(logging.INFO, logger="nmt.trainer"):
        lines.maybe(Progress(step=40, epoch=1, train_loss_sum=300.0, train_tokens=100), 0.001, 0.5)
    (record,) = caplog.records
    assert record.getMessage().startswith("step 40, epoch 1.50: train loss 3.000, ")
    assert "target tokens/s, lr 0.001, " in record.getMessage() and "of train.max_minutes=15 left" in record.getMessage()
    caplog.clear()
    ProgressLog(every=0.0, enabled=False).maybe(Progress(step=1), 0.1, 0.0)  # a terminal shows the bar instead
    assert not caplog.records


def test_training_without_a_terminal_logs_progress_lines(tmp_path, word_corpus, cache_dir, monkeypatch, caplog):
    monkeypatch.setattr(nmt.trainer, "PROGRESS_LOG_SECONDS", 0.0)  # every step, here
    with caplog.at_level(logging.INFO, logger="nmt.trainer"):
        train(run_config(word_corpus, cache_dir, "train.max_steps=4"), tmp_path)
    steps = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ") and "tokens/s" in r.getMessage()]
    assert len(steps) >= 3  # pytest's stderr is no terminal


def test_an_evaluation_into_a_file_writes_no_carriage_returns(trained_run, word_corpus, tmp_path):
    corpus = word_corpus_overrides(word_corpus, tmp_path / "cold-cache")  # cleaned now: datasets would draw its bars
    result = run_command("nmt.commands.evaluate", f"ckpt={trained_run}", f"report_dir={tmp_path / 'r'}", *corpus)
    assert result.returncode == 0, result.stderr
    assert b"\r" not in result.stderr and b"cleaning" not in result.stderr


def test_decoding_and_scoring_without_a_terminal_log_progress_lines(trained_run, monkeypatch, caplog):
    import nmt.progress
    from nmt.config import DecodeConfig
    from nmt.inference import load_translator, score_pairs, translate_lines

    monkeypatch.setattr(nmt.progress, "LOG_EVERY_SECONDS", 0.0)
    translator = load_translator(trained_run, "cpu")
    with caplog.at_level(logging.INFO, logger="nmt.progress"):
        translate_lines(translator, ["uno dos", "tres"] * 50, DecodeConfig(batch_tokens=20), progress=True)
        score_pairs(translator, [("uno", "one")] * 50, batch_tokens=20, progress=True)
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("translating: ") and " of 100 sent (" in m for m in messages), messages
    assert any(m.startswith("scoring: ") and " of 50 pairs (" in m for m in messages), messages
