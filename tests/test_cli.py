"""nmt-translate, nmt-evaluate and nmt-score on a tiny trained run, in-process and as real commands."""

import json
import math
import os
import subprocess
import sys

import pytest

from nmt.commands.evaluate import run_evaluate
from nmt.commands.score import run_score
from nmt.commands.translate import run_translate
from nmt.config import DecodeConfig, EvaluateConfig, ScoreConfig, TranslateConfig
from nmt.errors import CheckpointError, CorpusError, ReportError
from nmt.inference import load_translator, translate_lines
from nmt.lines import read_lines
from tests.commands import run_command


def run_cli(module, *args, stdin=None):
    return run_command(module, *args, stdin=stdin)


def test_translate_stdin_to_stdout_keeps_every_line(any_run):
    lines = "uno dos\n\n   \nperro gato rojo\n"
    result = run_cli("nmt.commands.translate", f"ckpt={any_run}", stdin=lines.encode())
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode().split("\n")
    assert out[-1] == "" and len(out) - 1 == 4
    assert out[1] == "" and out[2] == ""
    assert out[0] and out[3]
    assert "translated 4 lines" in result.stderr.decode()


def test_output_to_dev_stdout_on_a_pipe(trained_run):
    """output=/dev/stdout where stdout is a pipe: /dev/stdout resolves to no path there
    (/proc/PID/fd/pipe:[N]), so it is written as it is, not through a temporary file beside it."""
    result = run_command(
        "nmt.commands.translate", f"ckpt={trained_run}", "output=/dev/stdout", stdin=b"uno dos\n", fresh_interpreter=True
    )
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"one two\n"


def test_output_to_dev_stdout_appended_to_a_log_file_keeps_the_log(tmp_path, trained_run):
    """nmt-translate output=/dev/stdout >> log 2>&1: written through stdout at its position, so
    neither what the log held nor the log lines written beside it are lost (a replaced or
    reopened file would lose them)."""
    log = tmp_path / "log.txt"
    log.write_bytes(b"before\n")
    with open(log, "ab") as out:
        command = [sys.executable, "-m", "nmt.commands.translate", f"ckpt={trained_run}", "output=/dev/stdout"]
        result = subprocess.run(command, input=b"uno dos\n", stdout=out, stderr=subprocess.STDOUT, timeout=120)
    assert result.returncode == 0, log.read_text()
    lines = log.read_text().splitlines()
    assert lines[0] == "before" and "one two" in lines and any("translated 1 lines" in line for line in lines)


def test_translate_files_beam_and_nbest_tsv(tmp_path, any_run, word_corpus):
    source = word_corpus / "test.es"
    output = tmp_path / "hyps.tsv"
    cfg = TranslateConfig(
        ckpt=str(any_run), input=str(source), output=str(output), decode=DecodeConfig(name="greedy"), nbest=3
    )  # nbest=3 widens the beam to 3
    assert run_translate(cfg) == 0
    rows = [row.split("\t") for row in read_lines(output)]
    n_inputs = len(read_lines(source))
    assert len(rows) == 3 * n_inputs
    for i in range(n_inputs):
        group = rows[3 * i : 3 * i + 3]
        assert [int(r[0]) for r in group] == [i] * 3 and [int(r[1]) for r in group] == [0, 1, 2]
        normalized = [float(r[2]) for r in group]
        assert normalized == sorted(normalized, reverse=True)
        assert all(float(r[3]) <= 0 for r in group)

    with_blank = tmp_path / "blank.es"
    with_blank.write_text("\n".join([read_lines(source)[0], "", "  ", read_lines(source)[1]]) + "\n")
    cfg.input, cfg.output = str(with_blank), str(tmp_path / "blank.tsv")
    assert run_translate(cfg) == 0
    rows = [row.split("\t") for row in read_lines(tmp_path / "blank.tsv")]
    assert [(int(r[0]), int(r[1])) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (2, 0), (3, 0), (3, 1), (3, 2)]
    assert [r[4] for r in rows if r[0] in "12"] == ["", ""]  # one empty row per blank line, not K copies


def test_nbest_widens_a_narrower_beam_and_says_so(tmp_path, any_run, word_corpus, caplog):
    def translate(decode: DecodeConfig) -> TranslateConfig:
        cfg = TranslateConfig(
            ckpt=str(any_run), input=str(word_corpus / "test.es"), output=str(tmp_path / "n.tsv"), decode=decode, nbest=3
        )
        assert run_translate(cfg) == 0
        return cfg

    assert translate(DecodeConfig(name="greedy")).decode.beam_size == 3 and "widens" not in caplog.text  # the shorthand
    assert translate(DecodeConfig(name="beam", beam_size=2)).decode.beam_size == 3
    assert "nbest=3 widens decode.beam_size=2 to 3" in caplog.text


def test_translate_cuts_overlong_lines_with_a_warning(any_run, caplog):
    translator = load_translator(any_run, "cpu")
    long_line = " ".join(["uno dos tres"] * 200)
    results = translate_lines(translator, ["uno", long_line], DecodeConfig(), max_source_subwords=10)
    assert len(results) == 2 and all(len(r) == 1 for r in results)
    assert "1 line(s) longer than 10 subwords were cut" in caplog.text


def test_translate_invalid_utf8_is_an_error_naming_the_line(any_run):
    result = run_cli("nmt.commands.translate", f"ckpt={any_run}", stdin=b"uno\ndos\n\xff\xfe\n")
    assert result.returncode == 1
    assert "<stdin>:3: invalid UTF-8" in result.stderr.decode()
    assert b"Traceback" not in result.stderr
    replaced = run_cli("nmt.commands.translate", f"ckpt={any_run}", "replace_invalid_utf8=true", stdin=b"uno\ndos\n\xff\xfe\n")
    assert replaced.returncode == 0 and replaced.stdout.count(b"\n") == 3


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    result = run_cli("nmt.commands.translate", f"ckpt={tmp_path / 'nothing'}", stdin=b"uno\n")
    assert result.returncode == 1
    assert "no such run folder or checkpoint file" in result.stderr.decode()
    no_ckpt = run_cli("nmt.commands.score", stdin=b"uno\tone\n")
    assert no_ckpt.returncode == 1 and b"Traceback" not in no_ckpt.stderr
    assert "ckpt" in no_ckpt.stderr.decode()


@pytest.mark.parametrize("command", [run_translate, run_score])
def test_a_missing_input_file_names_the_setting_before_loading_anything(tmp_path, command):
    config = TranslateConfig if command is run_translate else ScoreConfig
    cfg = config(ckpt=str(tmp_path / "not-loaded"), input=str(tmp_path / "nope.txt"))
    expected = "a text file, one sentence per line" if command is run_translate else "a file of source<TAB>target"
    with pytest.raises(ValueError, match=rf"input=.*nope\.txt: no such file; give {expected}"):
        command(cfg)
    cfg.input = str(tmp_path)
    with pytest.raises(ValueError, match=r"input=.*: a folder"):
        command(cfg)


@pytest.mark.parametrize("command", [run_translate, run_score])
def test_an_output_that_cannot_be_written_is_refused_before_decoding(tmp_path, command):
    config = TranslateConfig if command is run_translate else ScoreConfig
    source = tmp_path / "source.txt"
    source.write_text("uno\tone\n")
    for output, problem in (
        (source, "is the input file, which writing would destroy"),
        (tmp_path / "no" / "out.txt", "no folder"),
        (tmp_path, "a folder; give a file name"),
    ):
        cfg = config(ckpt=str(tmp_path / "not-loaded"), input=str(source), output=str(output))
        with pytest.raises(ValueError, match=rf"output=.*{problem}"):
            command(cfg)
    assert source.read_text() == "uno\tone\n"
    os.link(source, tmp_path / "linked.txt")  # the same file under another name
    cfg = config(ckpt=str(tmp_path / "not-loaded"), input=str(source), output=str(tmp_path / "linked.txt"))
    with pytest.raises(ValueError, match="is the input file, which writing would destroy"):
        command(cfg)
    assert source.read_text() == "uno\tone\n"


def test_evaluate_report_dir_that_is_a_file_is_refused_before_decoding(tmp_path):
    (tmp_path / "README.md").write_text("mine\n")
    cfg = EvaluateConfig(ckpt=str(tmp_path / "not-loaded"), report_dir=str(tmp_path / "README.md"))
    with pytest.raises(ReportError, match="report_dir=.*README.md: a file, not a folder"):
        run_evaluate(cfg)


def test_input_may_be_a_pipe(any_run, tmp_path):
    """input=<(...) or /dev/stdin: not a regular file, still something to read."""
    result = subprocess.run(
        ["bash", "-c", f"{sys.executable} -m nmt.commands.score ckpt={any_run} input=<(printf 'uno dos\\tone two\\n')"],
        capture_output=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr.decode()
    assert len(result.stdout.decode().splitlines()) == 1


def test_evaluate_unknown_split_is_a_clear_error(tmp_path, any_run):
    with pytest.raises(ReportError, match="split='dev': expected one of"):
        run_evaluate(EvaluateConfig(ckpt=str(any_run), split="dev", report_dir=str(tmp_path)))


def test_evaluate_decodes_the_test_split_and_writes_the_report(tmp_path, any_run):
    report_dir = tmp_path / "report"
    cfg = EvaluateConfig(
        ckpt=str(any_run), report_dir=str(report_dir), decode=DecodeConfig(name="beam", beam_size=3), bootstrap_samples=100
    )
    assert run_evaluate(cfg) == 0
    report = json.loads((report_dir / "report.json").read_text())
    for key in ("bleu", "chrf", "ter", "signatures", "n_sentences", "bleu_by_length", "speed", "examples"):
        assert key in report
    assert report["n_sentences"] == 20
    assert report["speed"]["sentences_per_s"] > 0
    assert report["ci95"]["bleu"][0] <= report["bleu"] <= report["ci95"]["bleu"][1]
    assert "nrefs:1" in report["signatures"]["bleu"] and "nrefs:1" in report["signatures"]["chrf"]
    assert len(read_lines(report_dir / "hypotheses.txt")) == 20
    assert (report_dir / "bleu_by_length.png").stat().st_size > 0
    assert report["signatures"]["bleu"] in (report_dir / "report.md").read_text()  # the sacreBLEU signature is shown


def test_evaluate_files_compare_and_length_mismatch(tmp_path, word_corpus):
    refs = word_corpus / "test.en"
    good = tmp_path / "good.txt"
    good.write_text((word_corpus / "test.en").read_text())
    bad = tmp_path / "bad.txt"
    bad.write_text("".join("one two\n" for _ in read_lines(refs)))
    cfg = EvaluateConfig(
        hyps=str(good),
        refs=str(refs),
        srcs=str(word_corpus / "test.es"),
        compare=str(bad),
        report_dir=str(tmp_path / "r"),
        bootstrap_samples=200,
    )
    assert run_evaluate(cfg) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["bleu"] == pytest.approx(100.0)
    assert report["compare"]["bleu"]["significant"]
    # Both systems' BLEU by source length in one figure (the paper's Fig. 2), linked from the report.
    assert [figure["file"] for figure in report["figures"]][:1] == ["bleu_by_length_compared.png"]
    assert (tmp_path / "r" / "bleu_by_length_compared.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](bleu_by_length_compared.png)" in (tmp_path / "r" / "report.md").read_text()
    with pytest.raises(ReportError, match=r"cannot read compare=.*missing\.txt: No such file"):
        run_evaluate(
            EvaluateConfig(
                hyps=str(good), refs=str(refs), compare=str(tmp_path / "missing.txt"), report_dir=str(tmp_path / "x")
            )
        )
    for other in ({"compare": str(bad)}, {"compare_ckpt": str(tmp_path / "run-b")}):  # refused before decoding
        with pytest.raises(ReportError, match=r"^bootstrap_samples=0: the paired bootstrap test .* at least 1 sample"):
            run_evaluate(
                EvaluateConfig(ckpt=str(tmp_path / "run-a"), **other, bootstrap_samples=0, report_dir=str(tmp_path / "y"))
            )
    assert not (tmp_path / "y").exists()
    short = tmp_path / "short.txt"
    short.write_text("one\n")
    with pytest.raises(ReportError, match=r"short\.txt has 1 lines? but .*test\.en has 20"):
        run_evaluate(EvaluateConfig(hyps=str(short), refs=str(refs), report_dir=str(tmp_path / "x")))


def test_score_pairs(tmp_path, any_run, word_corpus, caplog):
    pairs = tmp_path / "pairs.tsv"
    src, tgt = read_lines(word_corpus / "train.es")[:5], read_lines(word_corpus / "train.en")[:5]
    wrong = tgt[1:] + tgt[:1]
    rows = [f"{s}\t{t}" for s, t in zip(src, tgt)] + [f"{s}\t{w}" for s, w in zip(src, wrong)] + ["\tempty source", ""]
    pairs.write_text("\n".join(rows) + "\n")
    output = tmp_path / "scores.tsv"
    with caplog.at_level("INFO"):
        assert run_score(ScoreConfig(ckpt=str(any_run), input=str(pairs), output=str(output))) == 0
    assert "2 pair(s) with an empty side: scored nan" in caplog.text
    assert "scored 10 pairs (2 with an empty side: nan)" in caplog.text
    scores = [line.split("\t") for line in read_lines(output)]
    assert len(scores) == 12
    right_scores = [float(s[0]) for s in scores[:5]]
    wrong_scores = [float(s[0]) for s in scores[5:10]]
    assert all(r > w for r, w in zip(right_scores, wrong_scores))  # the true translation is more probable
    assert all(float(s[1]) == pytest.approx(float(s[0]) / int(s[2]), abs=1e-3) for s in scores[:10])
    assert math.isnan(float(scores[10][0])) and math.isnan(float(scores[11][0]))  # empty side, empty line
    bad = tmp_path / "bad.tsv"
    bad.write_text("no tab\n")
    with pytest.raises(CorpusError, match=r"bad\.tsv:1: expected source<TAB>target"):
        run_score(ScoreConfig(ckpt=str(any_run), input=str(bad)))


def translate_on_a_terminal(run) -> tuple[subprocess.Popen, int]:
    """nmt-translate reading a pseudo-terminal (its prompt), with "uno dos" typed; returns
    the process and the terminal's controlling end, to type more and close."""
    import pty
    import signal

    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "nmt.commands.translate", f"ckpt={run}"],
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As on a terminal: a suite started as a background job (`cmd &` without job control)
        # inherits SIGINT ignored, and Python then never turns Ctrl-C into KeyboardInterrupt.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    os.close(terminal)
    os.write(controller, b"uno dos\n")
    return process, controller


def test_interactive_prompt_on_a_terminal(any_run):
    process, controller = translate_on_a_terminal(any_run)
    os.write(controller, b"\x04")  # Ctrl-D: end of input on a terminal
    stdout, stderr = process.communicate(timeout=180)
    os.close(controller)
    assert process.returncode == 0, stderr.decode()
    assert b"type a sentence" in stderr and b"> " in stderr
    assert len(stdout.decode().splitlines()) == 1 and stdout.strip()


def test_evaluate_corpus_settings_without_a_corpus_group_are_one_clear_line(any_run):
    result = run_cli("nmt.commands.evaluate", f"ckpt={any_run}", "data.path=/somewhere")
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert err.startswith("error: data.path=... needs a corpus group: add data=files") and "\n" not in err


@pytest.mark.parametrize("what", ["missing", "file", "not a run"])
def test_resume_of_something_that_is_not_a_run_folder_is_refused_before_any_folder_is_made(tmp_path, any_run, what):
    target = {"missing": tmp_path / "no" / "such", "file": any_run / "best.pt", "not a run": tmp_path}[what]
    result = run_cli("nmt.commands.train", f"resume={target}")
    assert result.returncode == 1
    err = result.stderr.decode().strip()
    assert "\n" not in err and err.startswith(f"error: resume={target}")
    expected = {
        "missing": "no such folder",
        "file": f"is a file: resume takes an nmt-train run folder and "
        f"continues from its newest intact checkpoint; to continue that run: resume={any_run}",
        "not a run": "no config.yaml there",
    }[what]
    assert expected in err
    assert not (tmp_path / "no").exists() and not (tmp_path / ".hydra").exists()


def test_command_line_overrides_are_read_as_hydra_reads_them():
    from nmt.commands.app import command_line_overrides

    got = command_line_overrides(
        [
            'resume="/runs/a b"',
            "data=files",
            "data.path='/x y'",
            "decode.beam_size=5",
            "--multirun",
            "resume2=NULL",
            "~gone=/x",
            "sweep=a,b",
            "++forced=/f",
            "env=${oc.env:HOME}",
            "esc=/a\\,b",
            "bad=[",
        ]
    )
    assert got == {
        "resume": "/runs/a b",
        "data": "files",
        "data.path": "/x y",
        "decode.beam_size": "5",
        "forced": "/f",
        "esc": "/a,b",
    }


def test_resume_of_a_quoted_run_folder_passes_the_check(any_run, tmp_path):
    """A quoted path (Hydra needs quotes around some characters) is the folder, not an error."""
    from nmt.commands.app import command_line_overrides
    from nmt.run_folder import resume_folder_problem

    assert resume_folder_problem(command_line_overrides([f'resume="{any_run}"'])["resume"]) is None


def test_evaluating_on_other_languages_than_the_checkpoint_warns(caplog):
    from nmt.commands.evaluate import corpus_for
    from nmt.config import DataConfig

    checkpoint = DataConfig(src_lang="es", tgt_lang="en")  # what the checkpoint was trained on
    reversed_pair = EvaluateConfig(ckpt="x", data=DataConfig(src_lang="en", tgt_lang="es"))
    with caplog.at_level("WARNING", logger="nmt.commands.evaluate"):
        assert corpus_for(reversed_pair, checkpoint).src_lang == "en"
    assert "the checkpoint translates es -> en, but data.src_lang=en data.tgt_lang=es" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nmt.commands.evaluate"):
        corpus_for(EvaluateConfig(ckpt="x", data=DataConfig()), checkpoint)
    assert not caplog.text


def test_ctrl_c_at_the_prompt_is_one_line_and_exit_130(any_run):
    import signal

    process, controller = translate_on_a_terminal(any_run)
    first = process.stdout.readline()  # the first sentence is translated: the prompt waits for the next
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=180)
    os.close(controller)
    assert first.strip() and not stdout.strip()
    assert process.returncode == 130, stderr.decode()
    assert b"Traceback" not in stderr
    assert stderr.decode().splitlines()[-1].endswith("nmt-translate: interrupted (Ctrl-C)")  # after the prompt's "> "


def test_evaluate_refuses_a_bad_other_system_before_decoding(tmp_path, any_run, monkeypatch):
    import nmt.inference

    monkeypatch.setattr(nmt.inference, "translate_lines", lambda *a, **k: pytest.fail("decoded"))
    base = tmp_path / "base.txt"
    base.write_text("one\n" * 7)
    report_dir = str(tmp_path / "r")
    with pytest.raises(ReportError, match="^compare= and compare_ckpt= both name the other system: give one of them"):
        run_evaluate(EvaluateConfig(ckpt=str(any_run), compare=str(base), compare_ckpt=str(any_run), report_dir=report_dir))
    with pytest.raises(CheckpointError, match=f"^compare_ckpt={tmp_path / 'nope'}: no such run folder or checkpoint file"):
        run_evaluate(EvaluateConfig(ckpt=str(any_run), compare_ckpt=str(tmp_path / "nope"), report_dir=report_dir))
    with pytest.raises(ReportError, match=r"base\.txt has 7 lines but the test split has 20 lines"):
        run_evaluate(EvaluateConfig(ckpt=str(any_run), compare=str(base), report_dir=report_dir))
    with pytest.raises(CheckpointError, match="^ckpt= is empty: give a run folder or a checkpoint file"):
        run_evaluate(EvaluateConfig(ckpt="", report_dir=report_dir))
    for ignored in ("refs", "srcs"):  # ckpt= scores the split against its own references: refuse, never ignore
        with pytest.raises(ReportError, match=f"^{ignored}= goes with hyps= .* then nmt-evaluate hyps=HYPS refs=REFS"):
            run_evaluate(EvaluateConfig(ckpt=str(any_run), report_dir=report_dir, **{ignored: str(base)}))
    assert not (tmp_path / "r").exists()


def test_no_progress_bar_in_a_log_file(tmp_path, any_run, word_corpus):
    """tqdm's bar is for a terminal: stderr sent to a file gets the summary lines only."""
    out = tmp_path / "hyps.txt"
    result = run_cli("nmt.commands.translate", f"ckpt={any_run}", f"input={word_corpus / 'test.es'}", f"output={out}")
    assert result.returncode == 0, result.stderr.decode()
    assert len(read_lines(out)) == 20
    assert b"translating" not in result.stderr and b"it/s" not in result.stderr


@pytest.mark.parametrize(
    "module, args, expected",
    [
        ("translate", ["--ckpt", "runs/x", "--beam_size", "5"], "nmt-translate ckpt=runs/x decode.beam_size=5"),
        ("translate", ["ckpt", "runs/x"], "nmt-translate ckpt=runs/x"),
        (
            "translate",
            ["--ckpt=runs/x", "--beam-size=5", "decode=beam"],
            "nmt-translate ckpt=runs/x decode.beam_size=5 decode=beam",
        ),
        (
            "train",
            ["--max_steps", "10", "+experiment=bible_small_cpu"],
            "nmt-train train.max_steps=10 +experiment=bible_small_cpu",
        ),
        ("evaluate", ["ckpt=a", "split", "validation"], "nmt-evaluate ckpt=a split=validation"),
    ],
)
def test_settings_spelled_as_options_get_the_command_line_as_it_must_be_written(module, args, expected):
    result = run_command(f"nmt.commands.{module}", *args, text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: settings are written key=value: try {expected}"


def test_a_top_level_key_of_a_group_names_the_group_s_key_and_hydra_s_options_keep_working():
    result = run_command("nmt.commands.translate", "ckpt=x", "beam_size=5", text=True)
    assert result.returncode == 1
    assert "beam_size is not a setting" in result.stderr and "did you mean decode.beam_size?" in result.stderr
    from nmt.commands.command_line import spelling_problem
    from nmt.config import TrainRunConfig, TranslateConfig

    for valid in (["--", "ckpt=x"], ["--multi", "model=a,b"], ["--info", "config"], ["-cn", "x"], ["train.lr=-0.5"]):
        assert spelling_problem(valid, TrainRunConfig, "nmt-train") is None, valid
    assert spelling_problem(["ckpt=x", "--nbest"], TranslateConfig, "nmt-translate").endswith("ckpt=x nbest=...")
    job = run_command("nmt.commands.translate", "ckpt=x", "--cfg", "job", "--package", "decode", text=True)
    assert job.returncode == 0 and "beam_size:" in job.stdout, job.stderr
    assert run_command("nmt.commands.translate", "-h", text=True).stdout.startswith("nmt-translate: ")
