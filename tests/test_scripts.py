"""The scripts behind the README's results: scripts/compare_models.py (Cho against RNNsearch)."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from nmt.config import CONF_DIR
from tests.conftest import compose_config


@pytest.fixture(scope="module")
def compare_models():
    spec = importlib.util.spec_from_file_location("compare_models", CONF_DIR.parent / "scripts" / "compare_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_comparison_trains_named_experiments_of_each_architecture(compare_models):
    """Each --sizes names experiments that exist, each of the architecture it is reported as."""
    assert set(compare_models.RECIPES) == {"small", "paper"}
    for models in compare_models.RECIPES.values():
        for arch, experiment in models.items():
            assert compose_config("train", [f"+experiment={experiment}"]).model.arch == arch


def fake_run(folder, overrides, reason="max_minutes"):
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    if reason is not None:
        (folder / "summary.json").write_text(json.dumps({"reason": reason}))
    return folder


def test_a_finished_run_is_reused_only_with_the_same_settings(compare_models, tmp_path, capsys):
    settings = ["+experiment=bible_small_cpu", "train.max_minutes=15.0", "evaluate_test=false", "train.device=cpu"]
    assert not compare_models.finished_with(tmp_path / "none", settings)  # nothing there: train it
    same = fake_run(tmp_path / "same", settings)
    assert compare_models.finished_with(same, settings)
    assert "is finished with these settings; evaluating it again" in capsys.readouterr().err
    other = fake_run(tmp_path / "other", settings[:1] + ["train.max_minutes=0.3"] + settings[2:])
    with pytest.raises(SystemExit, match=r"holds a run of other settings \(.*train.max_minutes=0.3.*\); give another --work"):
        compare_models.finished_with(other, settings)
    for reason in (None, "signal"):  # killed, or stopped by SIGTERM / Ctrl-C: not the budget asked for
        cut_short = fake_run(tmp_path / f"cut-{reason}", settings, reason=reason)
        with pytest.raises(SystemExit, match="holds a run that did not finish; remove it"):
            compare_models.finished_with(cut_short, settings)
    assert compare_models.finished_with(same, settings + ["hydra.job.chdir=false"])  # Hydra keeps those apart
