"""Releases (nmt-export, nmt.release): the same translations as the checkpoint, half-precision
weights within a stated tolerance, every command takes one, nothing unpickled, bad files named."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from nmt.config import DecodeConfig
from nmt.errors import CheckpointError, SettingError
from nmt.inference import load_translator, score_pairs, translate_lines
from nmt.release import read_release
from tests.commands import run_command

# Half-precision weights (float32 compute on a CPU): the largest change of a pair's mean
# log-probability per target token that a release may show against its checkpoint, and the
# share of test sentences whose greedy translation must stay the same.
TOLERANCE = {"float16": 0.01, "bfloat16": 0.05}
SAME_GREEDY = 0.95


def export(ckpt, output: Path, *args: str) -> subprocess.CompletedProcess:
    return run_command("nmt.commands.export", f"ckpt={ckpt}", f"output={output}", *args, text=True)


def source_lines(corpus: Path) -> list[str]:
    return (corpus / "test.es").read_text(encoding="utf-8").splitlines()


def source_pairs(corpus: Path) -> list[tuple[str, str]]:
    sources, targets = source_lines(corpus), (corpus / "test.en").read_text(encoding="utf-8").splitlines()
    return list(zip(sources, targets))


@pytest.fixture(scope="module")
def releases(tmp_path_factory, trained_run, trained_rnnsearch_run) -> dict:
    """Both tiny models exported in each dtype: {(arch, dtype): folder}."""
    made = {}
    for arch, run in (("cho2014", trained_run), ("rnnsearch", trained_rnnsearch_run)):
        for dtype in ("float32", "float16", "bfloat16"):
            folder = tmp_path_factory.mktemp("releases") / f"{arch}-{dtype}"
            result = export(run, folder, f"dtype={dtype}")
            assert result.returncode == 0, result.stderr
            made[arch, dtype] = folder
    return made


def run_of(arch: str, trained_run: Path, trained_rnnsearch_run: Path) -> Path:
    return trained_run if arch == "cho2014" else trained_rnnsearch_run


@pytest.mark.parametrize("arch", ["cho2014", "rnnsearch"])
def test_a_float32_release_translates_exactly_as_its_checkpoint(
    arch, releases, trained_run, trained_rnnsearch_run, word_corpus
):
    ours = load_translator(releases[arch, "float32"], "cpu")
    theirs = load_translator(run_of(arch, trained_run, trained_rnnsearch_run), "cpu")
    lines = source_lines(word_corpus)
    for decode in (DecodeConfig(beam_size=1), DecodeConfig(beam_size=5, nbest=2)):
        a, b = translate_lines(ours, lines, decode), translate_lines(theirs, lines, decode)
        assert [[(text, h.score) for text, h in row] for row in a] == [[(text, h.score) for text, h in row] for row in b]


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("arch", ["cho2014", "rnnsearch"])
def test_a_half_precision_release_stays_close(arch, dtype, releases, trained_run, trained_rnnsearch_run, word_corpus):
    ours = load_translator(releases[arch, dtype], "cpu")
    theirs = load_translator(run_of(arch, trained_run, trained_rnnsearch_run), "cpu")
    assert all(p.dtype == torch.float32 for p in ours.model.parameters())  # cast to the device's working type on load
    pairs = source_pairs(word_corpus)
    for (a, n), (b, m) in zip(score_pairs(ours, pairs), score_pairs(theirs, pairs)):
        assert n == m and abs(a - b) / n <= TOLERANCE[dtype]
    lines = source_lines(word_corpus)
    greedy = DecodeConfig(beam_size=1)
    same = [x[0][0] == y[0][0] for x, y in zip(translate_lines(ours, lines, greedy), translate_lines(theirs, lines, greedy))]
    assert sum(same) >= SAME_GREEDY * len(same)


def test_a_release_holds_weights_only_and_loads_without_unpickling(releases, trained_run, monkeypatch):
    folder = releases["cho2014", "float16"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors", "spm.model"]
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "nmt-release-1" and config["dtype"] == "float16"
    assert config["model"]["arch"] == "cho2014" and "cache_dir" not in config["data"]
    assert set(config["sha256"]) == {"model.safetensors", "spm.model"}  # the card may be edited
    size = (folder / "model.safetensors").stat().st_size
    assert size < (trained_run / "best.pt").stat().st_size / 1.9  # half the bytes of float32, no optimizer state

    def no_unpickling(*args, **kwargs):
        raise AssertionError("torch.load called for a release")

    monkeypatch.setattr(torch, "load", no_unpickling)
    assert read_release(folder).step is not None
    assert load_translator(folder, "cpu").tokenizer.tgt_vocab_size > 0
    card = (folder / "README.md").read_text()
    assert "cho2014" in card and "## Intended use and limits" in card and "nmt-translate ckpt=" in card


def test_every_command_takes_a_release(releases, trained_run, word_corpus, tmp_path):
    folder = releases["rnnsearch", "float16"]
    line = source_lines(word_corpus)[0]
    translated = run_command("nmt.commands.translate", f"ckpt={folder}", stdin=line + "\n", text=True)
    assert translated.returncode == 0 and len(translated.stdout.splitlines()) == 1, translated.stderr
    scored = run_command("nmt.commands.score", f"ckpt={folder}", stdin=f"{line}\t{translated.stdout}", text=True)
    assert scored.returncode == 0 and len(scored.stdout.splitlines()) == 1, scored.stderr
    embedded = run_command("nmt.commands.embed", f"ckpt={folder}", f"output={tmp_path / 'v.tsv'}", stdin=line + "\n", text=True)
    assert embedded.returncode == 0 and (tmp_path / "v.tsv").is_file(), embedded.stderr
    args = [f"ckpt={folder}", "decode=greedy", f"report_dir={tmp_path / 'report'}", "max_sentences=5", "bootstrap_samples=10"]
    evaluated = run_command("nmt.commands.evaluate", *args, text=True)
    assert evaluated.returncode == 0, evaluated.stderr
    ensemble = run_command("nmt.commands.translate", f"ckpt=[{folder},{releases['cho2014', 'float32']}]", stdin=line + "\n")
    assert ensemble.returncode == 0, ensemble.stderr


def test_averages_and_best_pt_export_and_a_folder_is_replaced_only_when_asked(trained_run, tmp_path):
    averaged = tmp_path / "averaged.pt"
    assert (
        run_command(
            "nmt.commands.average", f"ckpts=[{trained_run / 'best.pt'},{trained_run / 'last.pt'}]", f"output={averaged}"
        ).returncode
        == 0
    )
    assert export(averaged, tmp_path / "from-average").returncode == 0
    assert export(trained_run / "best.pt", tmp_path / "from-best").returncode == 0
    (tmp_path / "empty").mkdir()
    assert export(trained_run, tmp_path / "empty").returncode == 0  # an empty folder is taken
    before = (tmp_path / "from-best" / "config.json").read_text()
    refused = export(averaged, tmp_path / "from-best")
    assert refused.returncode == 1 and refused.stderr.strip() == (
        f"error: output={tmp_path / 'from-best'}: not empty; give a new folder, or overwrite=true to replace it"
    )
    assert (tmp_path / "from-best" / "config.json").read_text() == before
    assert export(averaged, tmp_path / "from-best", "overwrite=true").returncode == 0
    assert (tmp_path / "from-best" / "config.json").read_text() != before
    into_run = export(trained_run, trained_run, "overwrite=true")
    assert into_run.returncode == 1 and "holds the checkpoint to export" in into_run.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def _damaged(release: Path, tmp_path: Path, name: str, how) -> Path:
    copy = tmp_path / name
    shutil.copytree(release, copy)
    how(copy)
    return copy


def test_a_damaged_release_is_one_line_naming_the_file(releases, tmp_path):
    release = releases["cho2014", "float16"]

    def flip(path: Path) -> None:
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))

    def newer_format(folder: Path) -> None:
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "format": "nmt-release-9"}))

    cases = {
        "truncated": (
            lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:1000]),
            "model.safetensors: damaged or truncated",
        ),
        "flipped": (lambda f: flip(f / "model.safetensors"), "model.safetensors: damaged or truncated"),
        "no-tokenizer": (lambda f: (f / "spm.model").unlink(), "spm.model: missing from the release"),
        "newer": (newer_format, "config.json: a release of format 'nmt-release-9', which this version of nmt does not read"),
        "garbage": (lambda f: (f / "config.json").write_text("{"), "config.json: not a release's config.json"),
    }
    for name, (how, expected) in cases.items():
        folder = _damaged(release, tmp_path, name, how)
        result = run_command("nmt.commands.translate", f"ckpt={folder}", stdin="uno\n", text=True)
        assert result.returncode == 1 and len(result.stderr.splitlines()) == 1, (name, result.stderr)
        assert result.stderr.startswith(f"error: {folder}/{expected}"), (name, result.stderr)


def test_overwrite_replaces_a_release_and_nothing_else(trained_run, tmp_path):
    runs = tmp_path / "outputs"
    shutil.copytree(trained_run, runs / "run-a")
    (runs / "notes.txt").write_text("mine")
    refused = export(runs / "run-a", runs, "overwrite=true")  # the folder holding the run itself
    assert refused.returncode == 1 and "holds the checkpoint to export" in refused.stderr
    refused = export(trained_run, runs, "overwrite=true")
    assert refused.returncode == 1 and "a folder of other files than a release" in refused.stderr
    assert (runs / "notes.txt").read_text() == "mine" and (runs / "run-a" / "best.pt").is_file()


def test_a_release_config_cannot_name_files_outside_its_folder(releases, tmp_path):
    folder = _damaged(releases["cho2014", "float16"], tmp_path, "outside", lambda f: None)
    config = json.loads((folder / "config.json").read_text())
    config["tokenizer"] = ["../spm.model"]
    config["sha256"]["../spm.model"] = config["sha256"]["spm.model"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="outside its folder"):
        read_release(folder)


def test_weights_beyond_float16_are_refused_naming_the_tensor(trained_run, tmp_path):
    from nmt.checkpoint import read_checkpoint
    from nmt.release import export_release

    checkpoint = read_checkpoint(trained_run / "best.pt")
    name = sorted(checkpoint.model_state)[0]
    checkpoint.model_state[name] = checkpoint.model_state[name] * 0 + 1e6
    with pytest.raises(SettingError, match=rf"dtype=float16: {name} does not fit it"):
        export_release(checkpoint, tmp_path / "out", "float16")
    assert export_release(checkpoint, tmp_path / "out", "bfloat16").is_dir()
