"""Every config composes into its typed schema; typos and wrong types fail with a clear message."""

import sys

import pytest
from hydra.errors import ConfigCompositionException

from nmt.config import (
    CONF_DIR,
    AverageConfig,
    DataConfig,
    EvaluateConfig,
    ModelConfig,
    OptimConfig,
    TrainRunConfig,
    TranslateConfig,
)
from tests.commands import run_command
from tests.conftest import compose_config


def options(group):
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


@pytest.mark.parametrize("data", options("data"))
@pytest.mark.parametrize("model", options("model"))
def test_every_train_config_composes(data, model):
    overrides = [f"data={data}", f"model={model}"]
    if data in ("files", "hub"):  # these need a path and languages from the user
        overrides += ["data.path=/x", "data.src_lang=de", "data.tgt_lang=en"]
    for train in options("train"):
        cfg = compose_config("train", overrides + [f"train={train}"])
        assert isinstance(cfg, TrainRunConfig)
        assert isinstance(cfg.data, DataConfig) and isinstance(cfg.model, ModelConfig)
        assert isinstance(cfg.train, OptimConfig) and cfg.train.name == train


@pytest.mark.parametrize("decode", options("decode"))
def test_every_decoding_config_composes(decode):
    assert compose_config("translate", ["ckpt=x", f"decode={decode}"]).decode.name == decode
    assert compose_config("evaluate", ["ckpt=x", f"decode={decode}"]).decode.name == decode
    assert compose_config("evaluate", ["ckpt=x", "data=toy"]).data.name == "toy"
    assert compose_config("score", ["ckpt=x"]).ckpt == "x"


def test_paper_recipe():
    cfg = compose_config("train", ["model=cho2014", "train=paper"])
    assert (cfg.model.hidden_size, cfg.model.maxout_size, cfg.model.embed_size, cfg.model.output_rank) == (1000, 500, 100, 100)
    assert cfg.model.paper_init and cfg.train.optimizer == "adadelta"
    assert (cfg.train.rho, cfg.train.eps) == (0.95, 1e-6)


def test_typo_and_wrong_type_are_errors():
    with pytest.raises(ConfigCompositionException, match="model.hiden_size"):
        compose_config("train", ["model.hiden_size=10"])
    with pytest.raises(ConfigCompositionException, match="train.lr=fast"):
        compose_config("train", ["train.lr=fast"])
    with pytest.raises(ConfigCompositionException):
        compose_config("train", ["model=huge"])


def test_cli_reports_typo_without_traceback(tmp_path):
    result = run_command("nmt.commands.train", "model.hiden_size=10", f"hydra.run.dir={tmp_path}", text=True)
    assert result.returncode != 0
    assert "hiden_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_added_keys_the_schema_lacks_are_errors():
    """``+key=value`` skips Hydra's own check; nothing may silently ignore a misspelled setting."""
    with pytest.raises(ValueError, match=r"train.max_stpes is not a setting .* did you mean train.max_steps\?"):
        compose_config("train", ["+train.max_stpes=5"])
    with pytest.raises(ValueError, match=r"data.tokenizer.vocab is .* did you mean data.tokenizer.vocab_size\?"):
        compose_config("train", ["+data.tokenizer.vocab=100"])
    with pytest.raises(ValueError, match=r"zzz is not a setting .* the settings there: data, model, train"):
        compose_config("train", ["+zzz=1"])
    with pytest.raises(ValueError, match=r"decode.beam is .* did you mean decode.beam_size\?"):
        compose_config("translate", ["ckpt=x", "+decode.beam=5"])


def test_a_failed_command_leaves_no_run_folder_but_never_removes_a_chosen_one(tmp_path):
    def failing_train(*args):  # fails inside the run, after Hydra has made the run folder
        return run_command("nmt.commands.train", "train.optimizer=sgd", *args, cwd=tmp_path, text=True)

    result = failing_train()
    assert result.returncode == 1
    assert result.stderr.strip() == "error: train.optimizer='sgd': expected one of adam, adadelta"
    assert list(tmp_path.iterdir()) == []  # outputs/bible_es_en/small/TIMESTAMP and its parents: gone
    chosen = tmp_path / "mine"
    chosen.mkdir()
    for run_dir in (chosen, "."):  # folders the user named may be theirs: the error stays in train.log
        assert failing_train(f"hydra.run.dir={run_dir}").returncode == 1
        assert "expected one of adam, adadelta" in (tmp_path / run_dir / "train.log").read_text()


@pytest.mark.parametrize(
    "command, groups",
    [
        ("train", ["data", "model", "train", "experiment"]),
        ("translate", ["decode"]),
        ("evaluate", ["data", "decode"]),
        ("score", []),
        ("average", []),
        ("embed", []),
        ("export", []),
    ],
)
def test_help_names_the_command_its_own_groups_and_examples(command, groups):
    """Each command's --help lists the groups it takes, with every option in conf/ (no more)."""
    result = run_command(f"nmt.commands.{command}", "--help", text=True, fresh_interpreter=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"nmt-{command}: ") and f"  nmt-{command} " in result.stdout  # an example
    listed = {}
    section = result.stdout.split("== Config ")[0]
    for line in section.splitlines():
        group, _, rest = line.partition(": ")
        if rest and (CONF_DIR / group).is_dir():
            listed[group] = rest.split(", ")
    assert listed == {group: options(group) for group in groups}


def test_a_run_folder_is_never_trained_into_again_without_resume(tmp_path, trained_run):
    """hydra.run.dir=RUN (without resume=) would overwrite RUN's checkpoints and mix two runs' metrics."""
    before = sorted(p.name for p in trained_run.iterdir())
    result = run_command("nmt.commands.train", "train=debug", f"hydra.run.dir={trained_run}", text=True)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: hydra.run.dir={trained_run} already holds an nmt-train run: "
        f"continue it with resume={trained_run}, or choose another folder"
    )
    assert sorted(p.name for p in trained_run.iterdir()) == before
    elsewhere = run_command("nmt.commands.train", f"resume={trained_run}", f"hydra.run.dir={tmp_path}", text=True)
    assert elsewhere.returncode == 1
    assert "continues in its own folder: leave hydra.run.dir=" in elsewhere.stderr


@pytest.mark.parametrize(
    "command_line, problem",
    [
        ("train.max_stpes=5", "train.max_stpes is not a setting (OptimConfig in nmt/config.py); did you mean train.max_steps?"),
        ("modle=small", "modle is not a setting (TrainRunConfig in nmt/config.py); did you mean model?"),
        (
            "model=smal",
            "model=smal: no such option; choose from cho2014, rnnsearch, rnnsearch_small, small (did you mean model=small?)",
        ),
        (
            "data=/corpora/de-en",
            "data=/corpora/de-en: no such option; choose from "
            + ", ".join(options("data"))
            + " (a folder of text files: data=files data.path=/corpora/de-en)",
        ),
        ("train.max_steps=abc", "train.max_steps=abc: expected a whole number"),
        ("train.lr=fast", "train.lr=fast: expected a number"),
        ("train.amp=maybe", "train.amp=maybe: expected true or false"),
        ("train.lr.warm=1", "train.lr is one setting, not a group of settings: train.lr.warm=... cannot work"),
        (
            "data.tokenizer.vocab=8",
            "data.tokenizer.vocab is not a setting (TokenizerConfig in nmt/config.py); did you mean data.tokenizer.vocab_size?",
        ),
    ],
)
def test_command_line_mistakes_are_one_line_with_the_closest_setting(command_line, problem):
    from nmt.commands.app import command_line_overrides, setting_problem

    ((key, value),) = command_line_overrides([command_line]).items()
    assert setting_problem(key, value, TrainRunConfig) == problem


@pytest.mark.parametrize(
    "command_line",
    [
        "model=cho2014",
        "data=files",
        "train.lr=3e-4",
        "train.max_steps=100",
        "train.amp=false",
        "resume=/runs/a",
        "data.splits.validation=dev",
        "data.hub_name=fr-en",
        "train.betas=[0.9,0.99]",
        "hydra.run.dir=/x",
        "hydra/job_logging=stderr",
        "+train.max_steps=5",
    ],
)
def test_good_command_lines_pass_the_check(command_line):
    from nmt.commands.app import command_line_overrides, setting_problem

    for key, value in command_line_overrides([command_line]).items():
        assert setting_problem(key, value, TrainRunConfig) is None


@pytest.mark.parametrize("experiment", options("experiment"))
def test_every_experiment_composes_and_passes_the_checks(experiment):
    from omegaconf import OmegaConf

    from nmt.config import check_ranges
    from nmt.training import check_settings

    cfg = compose_config("train", [f"+experiment={experiment}"])
    check_ranges(cfg)
    check_settings(cfg)
    # The groups it overrides are the ones it names, and its own settings win over theirs.
    spec = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml")
    overridden = {key.split("/")[-1]: option for entry in spec.defaults for key, option in entry.items()}
    assert overridden and all(getattr(cfg, group).name == option for group, option in overridden.items())
    for group in ("model", "train", "data"):
        for key, value in spec.get(group, {}).items():
            assert getattr(getattr(cfg, group), key) == value, f"{group}.{key}"


def test_the_tuned_experiment_is_the_readme_s_six_overrides():
    """+experiment=bible_cho_tuned reproduces the README's results row with one short command."""
    tuned = compose_config("train", ["+experiment=bible_cho_tuned"])
    spelled_out = compose_config(
        "train",
        [
            "model=cho2014",
            "model.embed_size=512",
            "model.output_rank=0",
            "model.paper_init=false",
            "model.dropout=0.3",
            "model.reverse_source=true",
            "train.label_smoothing=0.1",
            "train.max_tokens=8192",
        ],
    )
    assert tuned == spelled_out
    assert compose_config("train", ["+experiment=bible_cho_paper"]) == compose_config("train", ["model=cho2014", "train=paper"])


def test_the_attention_model_configs_have_the_paper_s_sizes():
    """conf/model/rnnsearch.yaml: Bahdanau et al. (2015), Appendix A. rnnsearch_small: sized
    like model=small, its annotations [->h; <-h] as wide as model=small's summary c."""
    paper = compose_config("train", ["model=rnnsearch"]).model
    sizes = (paper.arch, paper.embed_size, paper.hidden_size, paper.attention_size, paper.maxout_size)
    assert sizes == ("rnnsearch", 620, 1000, 1000, 500)
    small, cho_small = (compose_config("train", [f"model={name}"]).model for name in ("rnnsearch_small", "small"))
    assert small.arch == "rnnsearch" and cho_small.arch == "cho2014"
    assert (small.embed_size, 2 * small.hidden_size, small.maxout_size) == (
        cho_small.embed_size,
        cho_small.hidden_size,
        cho_small.maxout_size,
    )


@pytest.mark.parametrize(
    "command, command_line, problem",
    [
        (
            "train",
            "+experiment=bible_cho_tuend",
            "+experiment=bible_cho_tuend: no such option; choose from "
            + ", ".join(options("experiment"))
            + " (did you mean +experiment=bible_cho_tuned?)",
        ),
        (
            "train",
            "experiment=bible_cho_tuned",
            "experiment=bible_cho_tuned: experiment is added to the defaults, not chosen in them: "
            "write +experiment=bible_cho_tuned",
        ),
        (
            "translate",
            "+experiment=bible_cho_tuned",
            "+experiment=bible_cho_tuned: conf/experiment extends TrainRunConfig, not TranslateConfig",
        ),
        (
            "translate",
            "model=small",
            "model is not a setting (TranslateConfig in nmt/config.py); the model comes from the checkpoint (ckpt=); "
            "the settings there: ckpt,",
        ),
    ],
)
def test_a_group_is_named_as_it_must_be_written(command, command_line, problem, tmp_path, monkeypatch, capsys):
    from nmt.commands.app import check_command_line

    schemas = {"train": TrainRunConfig, "translate": TranslateConfig}
    monkeypatch.setattr(sys, "argv", [f"nmt-{command}", command_line])
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        check_command_line(schemas[command])  # what main() runs before Hydra
    stderr = capsys.readouterr().err.strip()
    assert exit_.value.code == 1
    assert stderr.startswith(f"error: {problem}") and len(stderr.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # before Hydra made a folder


@pytest.mark.parametrize(
    "schema, arg, problem",
    [
        (TrainRunConfig, "+model=small", "+model=small: model is there already; '+' only adds a new key: write model=small"),
        (
            TrainRunConfig,
            "+train.lr=0.1",
            "+train.lr=0.1: train.lr is there already; '+' only adds a new key: write train.lr=0.1",
        ),
        (TrainRunConfig, "decode.beam_size=[1", "decode.beam_size=[1: Hydra cannot read this override (no viable alternative"),
        (
            TranslateConfig,
            "ckpt=a,b",
            "ckpt=a,b: a comma makes a sweep of several runs; a list is written 'ckpt=[a,b]'",
        ),
        (TranslateConfig, "+decode=beam", "+decode=beam: decode is there already; '+' only adds a new key: write decode=beam"),
        (TrainRunConfig, "++train.lr=0.1", None),
        (TrainRunConfig, "+experiment=bible_cho_tuned", None),
        (TrainRunConfig, "+train.max_stpes=5", "train.max_stpes is not a setting (OptimConfig in nmt/config.py); did you mean"),
        (TranslateConfig, "ckpt=[a,b]", None),
        (
            TranslateConfig,
            "decode.beam_size=2,3",
            "decode.beam_size=2,3: a comma makes a sweep of several runs; add --multirun",
        ),
        (TrainRunConfig, "trian.lr=0.1,0.2", "trian is not a setting (TrainRunConfig in nmt/config.py); did you mean train?"),
        (TrainRunConfig, "train.betas=[0.9,${train.lr}]", None),  # Hydra resolves it
        (TrainRunConfig, "data.splits=${oc.env:SPLITS}", None),
        (TrainRunConfig, "model={hidden_size:64}", None),
        (TrainRunConfig, "~experiment", None),
        (EvaluateConfig, "data=null", "data=null: leave data= out for its default, or choose one of its options in conf/data"),
        (TrainRunConfig, "train.betas=0.9", "train.betas=0.9: train.betas is a list: write 'train.betas=[0.9]'"),
        (TrainRunConfig, "train.betas=[0.9,abc]", "train.betas=[0.9,abc]: expected a list of numbers"),
        (TrainRunConfig, "train.betas=[0.9,0.99]", None),
        (AverageConfig, "ckpts=a.pt", "ckpts=a.pt: ckpts is a list: write 'ckpts=[a.pt]'"),
        (
            TrainRunConfig,
            "data.splits=abc",
            "data.splits=abc: data.splits is a group of settings (SplitNames in nmt/config.py), not one value: "
            "set them one by one, e.g. data.splits.train=...",
        ),
        (TrainRunConfig, "data.splits={train:a}", None),
        (TrainRunConfig, "model=null", "model=null: choose one of its options in conf/model: cho2014, rnnsearch,"),
        (TranslateConfig, "decode=null", "decode=null: choose one of its options in conf/decode: beam, greedy"),
        (TrainRunConfig, "~train.lr", "~train.lr: a setting cannot be removed, only set: train.lr=..."),
        (TrainRunConfig, "train.lr=null", "train.lr=null: train.lr cannot be null; give it a value"),
        (TrainRunConfig, "resume=null", None),
        (TranslateConfig, "output=null", None),
        (TranslateConfig, "ckpt='a,b'", None),
    ],
)
def test_overrides_hydra_would_refuse_are_one_line(schema, arg, problem):
    from nmt.commands.app import override_problem

    found = override_problem(arg, schema)
    assert found == problem if problem is None else found.startswith(problem)


def test_a_sweep_with_multirun_passes_the_check():
    from nmt.commands.app import command_line_overrides, override_problem

    assert override_problem("train.lr=0.1,0.2", TrainRunConfig, multirun=True) is None
    assert "model" not in command_line_overrides(["model={hidden_size:64}"])  # a dict for a group: Hydra's
