"""Tests for nmt.report: line reading, sacreBLEU scores with bootstrap CIs,
the paired bootstrap test, BLEU by length and the written report files."""

from __future__ import annotations

import json
import random

import pytest
import sacrebleu

from nmt.errors import ReportError
from nmt.metrics import bleu_by_length, check_parallel, corpus_scores, paired_bootstrap
from nmt.report import REQUIRED_REPORT_KEYS, build_report, make_examples, plot_bleu_by_length, read_lines, write_report

# Small sample counts keep the suite fast; the statistics are still clear-cut.
SAMPLES = 200


def _corpus(n: int = 150, seed: int = 0) -> tuple[list[str], list[str]]:
    """Synthetic sources and references with lengths spread over 1..65 words."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)]
    srcs, refs = [], []
    for _ in range(n):
        length = rng.randint(1, 65)
        srcs.append(" ".join(rng.choice(vocab) for _ in range(length)))
        refs.append(" ".join(rng.choice(vocab) for _ in range(max(1, length + rng.randint(-3, 3)))))
    return srcs, refs


def _corrupt(refs: list[str], rate: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(w if rng.random() > rate else "xx" for w in r.split()) for r in refs]


@pytest.fixture(scope="module")
def corpus():
    srcs, refs = _corpus()
    return {
        "srcs": srcs,
        "refs": refs,
        "good": _corrupt(refs, 0.15, seed=1),
        "bad": _corrupt(refs, 0.5, seed=2),
    }


@pytest.fixture(scope="module")
def good_scores(corpus):
    return corpus_scores(corpus["good"], corpus["refs"], bootstrap_samples=SAMPLES, seed=7)


# ----------------------------------------------------------------- input ---


def test_read_lines_splits_only_on_newline(tmp_path):
    path = tmp_path / "hyps.txt"
    path.write_bytes("a\u2028b\r\nc\x85d\re\n\nf\x0cg\n".encode("utf-8"))
    assert read_lines(path) == ["a\u2028b", "c\x85d\re", "", "f\x0cg"]


def test_read_lines_without_final_newline_and_bom(tmp_path):
    path = tmp_path / "hyps.txt"
    path.write_bytes(b"\xef\xbb\xbfone\ntwo")
    assert read_lines(path) == ["one", "two"]
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    assert read_lines(empty) == []


def test_read_lines_invalid_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"ok\nfine\nbro\xffken\n")
    with pytest.raises(ReportError, match=r"bad\.txt:3: invalid UTF-8"):
        read_lines(path)


def test_read_lines_missing_file(tmp_path):
    with pytest.raises(ReportError, match="nope.txt"):
        read_lines(tmp_path / "nope.txt")


def test_check_parallel_message_names_files_and_counts():
    with pytest.raises(ReportError) as err:
        check_parallel(["a", "b"], ["a", "b", "c"], "hyps.txt", "newstest2014.fr")
    msg = str(err.value)
    assert "hyps.txt" in msg and "newstest2014.fr" in msg
    assert "2" in msg and "3" in msg
    check_parallel(["a"], ["b"], "h", "r")  # equal lengths pass


def test_corpus_scores_rejects_mismatch_and_empty():
    with pytest.raises(ReportError, match="1 lines.*2 lines"):
        corpus_scores(["a"], ["a", "b"], bootstrap_samples=0)
    with pytest.raises(ReportError, match="empty"):
        corpus_scores([], [], bootstrap_samples=0)


# ---------------------------------------------------------------- scores ---


def test_identical_hyps_give_bleu_100_with_ci(corpus):
    scores = corpus_scores(corpus["refs"], corpus["refs"], bootstrap_samples=50)
    assert scores["bleu"]["score"] == pytest.approx(100.0)
    assert scores["bleu"]["ci95"] == pytest.approx([100.0, 100.0])
    assert scores["chrf"]["score"] == pytest.approx(100.0)
    assert scores["ter"]["score"] == pytest.approx(0.0)
    assert scores["n_sentences"] == len(corpus["refs"])


def test_scores_agree_with_sacrebleu(corpus, good_scores):
    hyps, refs = corpus["good"], corpus["refs"]
    bleu = sacrebleu.corpus_bleu(hyps, [refs])
    assert good_scores["bleu"]["score"] == pytest.approx(bleu.score, abs=1e-9)
    assert good_scores["chrf"]["score"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
    assert good_scores["ter"]["score"] == pytest.approx(sacrebleu.corpus_ter(hyps, [refs]).score, abs=1e-9)
    details = good_scores["bleu_details"]
    assert details["precisions"] == pytest.approx(bleu.precisions)
    assert details["bp"] == pytest.approx(bleu.bp)
    assert (details["sys_len"], details["ref_len"]) == (bleu.sys_len, bleu.ref_len)
    # Signatures are sacreBLEU's own, plus the bootstrap settings.
    sig = good_scores["bleu"]["signature"]
    assert sig.startswith("nrefs:1|bs:200|seed:7|")
    assert "tok:13a" in sig and f"version:{sacrebleu.__version__}" in sig
    assert good_scores["chrf"]["signature"].startswith("nrefs:1|bs:200|seed:7|")


def test_ci_contains_score_and_is_deterministic(corpus, good_scores):
    for name in ("bleu", "chrf", "ter"):
        low, high = good_scores[name]["ci95"]
        assert low < good_scores[name]["score"] < high
    again = corpus_scores(corpus["good"], corpus["refs"], bootstrap_samples=SAMPLES, seed=7)
    assert again == good_scores
    other = corpus_scores(corpus["good"], corpus["refs"], bootstrap_samples=SAMPLES, seed=8)
    assert other["bleu"]["ci95"] != good_scores["bleu"]["ci95"]
    assert other["bleu"]["score"] == good_scores["bleu"]["score"]


def test_ci_matches_sacrebleu_bootstrap(corpus, monkeypatch):
    # Same seed -> same resamples as sacreBLEU's own n_bootstrap, whose
    # "± ci" is half the width of our interval.
    monkeypatch.delenv("SACREBLEU_SEED", raising=False)  # sacreBLEU's default seed is 12345
    ours = corpus_scores(corpus["good"], corpus["refs"], bootstrap_samples=100, seed=12345)
    theirs = sacrebleu.BLEU().corpus_score(corpus["good"], [corpus["refs"]], n_bootstrap=100)
    low, high = ours["bleu"]["ci95"]
    assert (high - low) / 2 == pytest.approx(theirs._ci, abs=1e-3)


def test_bootstrap_disabled_gives_no_ci(corpus):
    scores = corpus_scores(corpus["good"][:10], corpus["refs"][:10], bootstrap_samples=0)
    assert scores["bleu"]["ci95"] is None
    assert "bs:" not in scores["bleu"]["signature"]


# ---------------------------------------------------------- paired test ---


def test_paired_bootstrap_finds_better_system(corpus):
    res = paired_bootstrap(
        corpus["good"], corpus["bad"], corpus["refs"], samples=SAMPLES, seed=3, system_name="new", other_name="baseline"
    )
    for name in ("bleu", "chrf"):
        r = res[name]
        assert r["difference"] == pytest.approx(r["system"] - r["other"])
        assert r["difference"] > 0
        assert r["significant"] and r["p_value"] < 0.05
        assert r["better"] == "new"
    assert res["bleu"]["system"] == pytest.approx(sacrebleu.corpus_bleu(corpus["good"], [corpus["refs"]]).score)
    # Swapping the systems flips the sign but not the verdict.
    swapped = paired_bootstrap(corpus["bad"], corpus["good"], corpus["refs"], samples=SAMPLES, seed=3)
    assert swapped["bleu"]["difference"] == pytest.approx(-res["bleu"]["difference"])
    assert swapped["bleu"]["significant"] and swapped["bleu"]["better"] == "other"


def test_paired_bootstrap_identical_systems_not_significant(corpus):
    res = paired_bootstrap(corpus["good"], list(corpus["good"]), corpus["refs"], samples=SAMPLES)
    for name in ("bleu", "chrf"):
        assert res[name]["difference"] == 0.0
        assert res[name]["p_value"] == 1.0
        assert not res[name]["significant"]
        assert res[name]["better"] == "tie"


def test_paired_bootstrap_checks_lengths(corpus):
    with pytest.raises(ReportError, match="other hypotheses"):
        paired_bootstrap(corpus["good"], corpus["bad"][:-1], corpus["refs"], samples=10)


# ------------------------------------------------------------ by length ---


def test_bleu_by_length_buckets(corpus):
    lengths = [len(s.split()) for s in corpus["srcs"]]
    rows = bleu_by_length(lengths, corpus["good"], corpus["refs"])
    assert sum(r["n_sentences"] for r in rows) == len(lengths)
    assert [r["bucket"] for r in rows] == ["0-9", "10-19", "20-29", "30-39", "40-49", "50+"]
    expected_0_9 = sum(1 for n in lengths if n < 10)
    assert rows[0]["n_sentences"] == expected_0_9
    idx = [i for i, n in enumerate(lengths) if n >= 50]
    bleu_50 = sacrebleu.corpus_bleu([corpus["good"][i] for i in idx], [[corpus["refs"][i] for i in idx]])
    assert rows[-1]["bleu"] == pytest.approx(bleu_50.score)
    assert all(0.0 <= r["chrf"] <= 100.0 for r in rows)


def test_bleu_by_length_omits_empty_buckets():
    rows = bleu_by_length([3, 5, 25, 10], ["a b", "c", "d e f", "g"], ["a b", "c", "d e f", "h"])
    assert [(r["bucket"], r["n_sentences"]) for r in rows] == [("0-9", 2), ("10-19", 1), ("20-29", 1)]
    with pytest.raises(ReportError):
        bleu_by_length([1, 2], ["a"], ["a"])
    with pytest.raises(ReportError):
        bleu_by_length([1], ["a"], ["a"], bucket_edges=(20, 10))


def test_plot_bleu_by_length_writes_png(tmp_path):
    rows = [
        {"bucket": "0-9", "n_sentences": 3, "bleu": 30.0, "chrf": 50.0},
        {"bucket": "10-19", "n_sentences": 1, "bleu": 20.0, "chrf": 45.0},
    ]
    path = plot_bleu_by_length(rows, tmp_path / "sub" / "plot.png", "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------- report ---


def test_write_report_files(tmp_path, corpus, good_scores):
    srcs, refs, hyps = corpus["srcs"], corpus["refs"], corpus["good"]
    rows = bleu_by_length([len(s.split()) for s in srcs], hyps, refs)
    compare = paired_bootstrap(hyps, corpus["bad"], refs, samples=50, system_name="rnnenc", other_name="base|line")
    examples = make_examples(srcs, refs, hyps, n=3)
    examples[0]["hypothesis"] = "a | b <unk> c"
    report = build_report(
        good_scores,
        rows,
        speed={"sentences_per_s": 12.5, "tgt_tokens_per_s": 300.0, "seconds": 12.0},
        model={"hidden_size": 1000, "encoder": {"layers": 1}},
        decoding={"beam_size": 10, "length_penalty": 0.0},
        compare=compare,
        corpus={"name": "wmt14", "split": "test", "src_lang": "en", "tgt_lang": "fr"},  # as nmt-evaluate gives it
        checkpoint="outputs/run/best.pt",
    )
    paths = write_report(tmp_path / "rep", report, hyps, examples)
    assert set(paths) == {"json", "markdown", "hypotheses", "plot"}
    assert all(p.exists() for p in paths.values())

    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    for key in REQUIRED_REPORT_KEYS + ("ci95", "speed", "model", "decoding", "compare", "examples"):
        assert key in data
    assert data["bleu"] == pytest.approx(good_scores["bleu"]["score"])
    assert data["ci95"]["bleu"] == good_scores["bleu"]["ci95"]
    assert data["signatures"]["ter"] == good_scores["ter"]["signature"]
    assert len(data["examples"]) == 3

    assert paths["hypotheses"].read_text(encoding="utf-8") == "\n".join(hyps) + "\n"
    assert read_lines(paths["hypotheses"]) == hyps
    assert paths["plot"].read_bytes()[:4] == b"\x89PNG"

    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# Evaluation report: wmt14 (test), en-fr\n")
    assert good_scores["bleu"]["signature"] in md
    assert "| Metric | Score | 95% CI |" in md
    assert f"| BLEU | {good_scores['bleu']['score']:.2f} |" in md
    assert "![BLEU by source sentence length](bleu_by_length.png)" in md
    assert "| 50+ |" in md
    assert "base\\|line" in md  # escaped in the comparison table header
    assert "a \\| b &lt;unk&gt; c" in md
    assert "beam\\_size" in md and "encoder.layers" in md
    assert "Paired significance test" in md


def test_write_report_without_lengths_or_extras(tmp_path):
    scores = corpus_scores(["a b c", "d e"], ["a b c", "d f"], bootstrap_samples=0)
    report = build_report(scores)
    paths = write_report(tmp_path, report, ["a b c", "d e"], None)
    assert "plot" not in paths
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "Not available" in md and "| BLEU |" in md
    with pytest.raises(ReportError, match="bleu_by_length"):
        write_report(tmp_path, {k: v for k, v in report.items() if k != "bleu_by_length"}, [], None)


def test_a_second_report_replaces_the_first_with_a_warning_and_no_stale_plot(tmp_path, caplog):
    hyps, refs = ["a b c", "d e"], ["a b c", "d f"]
    with_lengths = build_report(corpus_scores(hyps, refs, bootstrap_samples=0), bleu_by_length([3, 2], hyps, refs))
    with caplog.at_level("WARNING", logger="nmt.report"):
        assert "plot" in write_report(tmp_path, with_lengths, hyps, None)
    assert "replacing" not in caplog.text
    with caplog.at_level("WARNING", logger="nmt.report"):
        write_report(tmp_path, build_report(corpus_scores(hyps, refs, bootstrap_samples=0)), hyps, None)
    assert f"{tmp_path}: replacing the report there" in caplog.text
    assert not (tmp_path / "bleu_by_length.png").exists()


def test_the_private_sacrebleu_hooks_nmt_metrics_relies_on():
    """nmt.metrics resamples sacreBLEU's per-sentence statistics through two private methods
    (pyproject.toml bounds sacreBLEU's version for them): per-sentence rows whose column sums
    give exactly the public corpus score, for every metric of a report."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    rng = random.Random(3)
    words = "the a cat dog sat on mat house red blue".split()
    refs = [" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(40)]
    hyps = [" ".join(rng.choices(words, k=rng.randint(2, 9))) for _ in range(40)]
    for metric in (BLEU(), CHRF(), TER()):
        stats = metric._extract_corpus_statistics(hyps, [refs])
        assert len(stats) == len(hyps)
        summed = [sum(column) for column in zip(*stats)]
        public = type(metric)().corpus_score(hyps, [refs]).score
        assert metric._compute_score_from_stats(summed).score == pytest.approx(public, abs=1e-9), type(metric).__name__


def test_a_replaced_report_keeps_no_figure_of_the_old_one(tmp_path):
    """Only the figures the earlier report.json lists go; a user's own files of the same pattern stay."""
    from nmt.commands.evaluate import remove_stale_figures
    from nmt.report import earlier_report_files

    for name in ("bleu_by_length_compared.png", "alignment-3.png", "alignment-12.png", "alignment-x.png", "notes.png"):
        (tmp_path / name).write_bytes(b"png")
    figures = [{"title": "t", "file": name} for name in ("bleu_by_length_compared.png", "alignment-3.png", "../x.png")]
    (tmp_path / "report.json").write_text(json.dumps({"figures": figures}), encoding="utf-8")
    earlier = earlier_report_files(tmp_path)
    assert earlier == {"bleu_by_length_compared.png", "alignment-3.png", "report.json", "report.md", "hypotheses.txt"}
    remove_stale_figures(tmp_path, earlier - {"alignment-3.png"})
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alignment-12.png",
        "alignment-3.png",
        "alignment-x.png",
        "notes.png",
        "report.json",
    ]
