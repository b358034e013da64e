"""The shape of the code (issue: a library that imports no Hydra, commands on top, one
owner per format): layering, module sizes, a trainer without a corpus, and a second
architecture that joins through the registry alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from nmt.architectures import ARCHITECTURES, Seq2SeqModel, build_model, register_architecture
from nmt.batching import ParallelIds
from nmt.config import DecodeConfig, ModelConfig, OptimConfig
from nmt.errors import NmtError, SettingError
from nmt.inference import decode_ids
from nmt.search import beam_search, greedy_search
from nmt.tokens import PAD
from nmt.trainer import Trainer, TrainingData, ValidationSet

PACKAGE = Path(__file__).resolve().parent.parent / "nmt"
LIBRARY = sorted(p for p in PACKAGE.glob("*.py"))
COMMANDS = sorted((PACKAGE / "commands").glob("*.py"))
CPU = torch.device("cpu")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at any depth (module level or inside functions)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


# --------------------------------------------------------------------------- layering


@pytest.mark.parametrize("path", LIBRARY, ids=lambda p: p.name)
def test_the_library_imports_no_hydra_and_no_command(path):
    for name in imported_modules(path):
        top = name.split(".")[0]
        assert top not in ("hydra", "omegaconf"), f"{path.name} imports {name}: only nmt/commands/ may"
        assert not name.startswith("nmt.commands"), f"{path.name} imports the command module {name}"


def test_importing_every_library_module_loads_no_hydra_and_no_command_loads_datasets():
    """datasets (with pandas) takes a second to import: a command pays for it only when it reads a corpus."""
    modules = ", ".join(f"nmt.{p.stem}" for p in LIBRARY if p.stem != "__init__")
    commands = ", ".join(f"nmt.commands.{p.stem}" for p in COMMANDS if p.stem != "__init__")
    code = (
        f"import sys, {modules}\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf'))\n"
        "assert not loaded, loaded\n"
        f"import {commands}\n"
        "assert 'datasets' not in sys.modules and 'pandas' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


# What a command imports before it has a reason to: its --help and a refused setting need
# neither PyTorch nor the corpus and plotting libraries (issue 29: start-up).
HEAVY = ("torch", "datasets", "pandas", "matplotlib", "sklearn", "tensorboard", "fastapi", "uvicorn", "torchao")


@pytest.mark.parametrize("args", [["--help"], ["ckpt=x", "no_such_setting=1"]], ids=["help", "refused"])
def test_a_command_imports_no_heavy_module_for_its_help_or_a_refused_setting(args):
    commands = [p.stem for p in COMMANDS if p.stem not in ("__init__", "app", "files", "command_line")]
    assert len(commands) == 8
    code = (
        "import runpy, sys\n"
        f"for command in {commands!r}:\n"
        f"    sys.argv = ['nmt-' + command, *{args!r}]\n"
        "    try:\n"
        "        runpy.run_module('nmt.commands.' + command, run_name='__main__')\n"
        "    except SystemExit:\n"
        "        pass\n"
        f"    loaded = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "    assert not loaded, (command, loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_model_and_search_need_no_sentencepiece():
    code = (
        "import sys, nmt.model, nmt.search, nmt.batching, nmt.architectures\n"
        "assert 'sentencepiece' not in sys.modules and 'datasets' not in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", LIBRARY + COMMANDS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_450_lines(path):
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 450


def test_the_trainer_class_reads_in_one_sitting():
    tree = ast.parse((PACKAGE / "trainer.py").read_text(encoding="utf-8"))
    (trainer,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "Trainer"]
    assert trainer.end_lineno - trainer.lineno + 1 <= 250


def test_every_error_is_an_nmt_error():
    import nmt.errors as errors

    classes = [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, Exception)]
    assert len(classes) >= 6 and all(issubclass(c, NmtError) for c in classes)


# --------------------------------------------------------------------------- a trainer without a corpus


def random_ids(n: int, vocab: int, seed: int) -> ParallelIds:
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, vocab, rng.integers(1, 6)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, vocab, rng.integers(1, 6)).tolist() for _ in range(n)]
    return ParallelIds.from_lists(src, tgt)


def in_memory_data(vocab: int) -> TrainingData:
    """Ids only: no corpus, no tokenizer; 'detokenizing' writes the ids as words."""
    train, validation = random_ids(40, vocab, seed=1), random_ids(6, vocab, seed=2)
    val_src = [validation.src_values[a:b].tolist() for a, b in zip(validation.src_offsets, validation.src_offsets[1:])]
    refs = [" ".join(map(str, validation.tgt_values[a:b])) for a, b in zip(validation.tgt_offsets, validation.tgt_offsets[1:])]
    return TrainingData(train, ValidationSet(validation, val_src, refs, lambda ids: [" ".join(map(str, s)) for s in ids]))


def test_a_trainer_runs_from_a_tiny_model_and_an_in_memory_id_table():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_size=8, hidden_size=12, maxout_size=6, dropout=0.0), 20, 20)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = OptimConfig(max_steps=2, max_tokens=40, log_every=1, device="cpu")
    trainer = Trainer(model, in_memory_data(20), opt, CPU)
    assert trainer.fit() == "max_steps"
    assert trainer.progress.step == 2 and trainer.progress.train_tokens > 0
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items()), "the weights moved"
    metrics = trainer.validate()  # validation too, written nowhere
    assert metrics["step"] == 2 and metrics["val_loss"] > 0 and 0 <= metrics["val_bleu"] <= 100


# --------------------------------------------------------------------------- a second architecture


@dataclass
class BagState:
    """Not one tensor: search must reorder it through the model's hook."""

    hidden: torch.Tensor
    steps: torch.Tensor


class BagOfWords(nn.Module):
    """A deliberately different model: the source is a bag of embeddings; the decoder a
    one-layer recurrence on [e(y); bag]. Its encoder output is a dict, its state a dataclass."""

    def __init__(self, config: ModelConfig, src_vocab_size: int, tgt_vocab_size: int):
        super().__init__()
        self.config, self.src_vocab_size, self.tgt_vocab_size = config, src_vocab_size, tgt_vocab_size
        self.src_embed = nn.Embedding(src_vocab_size, config.hidden_size, padding_idx=PAD)
        self.tgt_embed = nn.Embedding(tgt_vocab_size, config.hidden_size, padding_idx=PAD)
        self.step = nn.Linear(3 * config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, tgt_vocab_size)

    def encode(self, src, src_lengths):
        mask = (src != PAD).unsqueeze(-1).float()
        return {"bag": (self.src_embed(src) * mask).sum(1) / mask.sum(1)}

    def init_state(self, encoder_out):
        bag = encoder_out["bag"]
        return BagState(torch.zeros_like(bag), torch.zeros(bag.size(0), dtype=torch.long, device=bag.device))

    def decode_step(self, prev_tokens, state, encoder_out):
        hidden = torch.tanh(self.step(torch.cat([self.tgt_embed(prev_tokens), encoder_out["bag"], state.hidden], -1)))
        return self.out(hidden), BagState(hidden, state.steps + 1)

    def reorder_encoder_out(self, encoder_out, index):
        return {key: value.index_select(0, index) for key, value in encoder_out.items()}

    def reorder_state(self, state, index):
        return BagState(state.hidden.index_select(0, index), state.steps.index_select(0, index))

    def forward(self, src, src_lengths, tgt_in):
        encoder_out = self.encode(src, src_lengths)
        state, logits = self.init_state(encoder_out), []
        for t in range(tgt_in.size(1)):
            step_logits, state = self.decode_step(tgt_in[:, t], state, encoder_out)
            logits.append(step_logits)
        return torch.stack(logits, 1)

    def loss(self, src, src_lengths, tgt_in, tgt_out, label_smoothing=0.0, n_tokens=None):
        logits = self(src, src_lengths, tgt_in)
        loss = F.cross_entropy(
            logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD, reduction="sum", label_smoothing=label_smoothing
        )
        return loss, (tgt_out != PAD).sum()

    def model_config(self):
        from dataclasses import asdict

        return {"config": asdict(self.config), "src_vocab_size": self.src_vocab_size, "tgt_vocab_size": self.tgt_vocab_size}


@pytest.fixture
def bag_of_words():
    register_architecture("bag_of_words_test")(BagOfWords)
    yield ModelConfig(name="bag", arch="bag_of_words_test", hidden_size=10, dropout=0.0)
    del ARCHITECTURES["bag_of_words_test"]


def test_a_second_architecture_searches_and_trains_through_the_registry(bag_of_words):
    torch.manual_seed(0)
    model = build_model(bag_of_words, 20, 20)
    assert isinstance(model, BagOfWords) and isinstance(model, Seq2SeqModel)
    data = random_ids(7, 20, seed=3)
    batch = data.collate(np.arange(len(data)))
    greedy = greedy_search(model, batch.src, batch.src_lengths, max_len_a=1.0, max_len_b=3)
    beams = beam_search(model, batch.src, batch.src_lengths, beam_size=3, nbest=2, max_len_a=1.0, max_len_b=3)
    assert len(greedy) == len(beams) == 7 and all(len(h) == 2 for h in beams)
    assert all(h[0].normalized_score >= h[1].normalized_score for h in beams)
    src_ids = [data.src_values[a:b].tolist() for a, b in zip(data.src_offsets, data.src_offsets[1:])]
    one_by_one = [decode_ids(model, [ids], DecodeConfig(beam_size=3), CPU)[0][0].tokens for ids in src_ids]
    assert [h[0].tokens for h in decode_ids(model, src_ids, DecodeConfig(beam_size=3), CPU)] == one_by_one

    trainer = Trainer(model, in_memory_data(20), OptimConfig(max_steps=1, max_tokens=40, device="cpu"), CPU)
    assert trainer.fit() == "max_steps" and trainer.progress.step == 1


def test_an_unknown_architecture_is_named_with_the_choices():
    with pytest.raises(SettingError, match=r"model.arch='rnn': expected one of cho2014"):
        build_model(ModelConfig(arch="rnn"), 10, 10)


def test_a_trainer_without_validation_data_trains_whole_epochs():
    torch.manual_seed(0)
    model = build_model(ModelConfig(embed_size=8, hidden_size=12, maxout_size=6, dropout=0.0), 20, 20)
    trainer = Trainer(model, TrainingData(random_ids(40, 20, seed=4)), OptimConfig(max_epochs=2, max_tokens=40), CPU)
    assert trainer.fit() == "max_epochs" and trainer.progress.epoch == 2


def test_a_class_without_the_contract_is_refused_at_registration():
    class Incomplete(nn.Module):
        def encode(self, src, src_lengths):
            return src

    with pytest.raises(TypeError, match="Incomplete cannot be model.arch=broken: it lacks init_state, decode_step"):
        register_architecture("broken")(Incomplete)
    assert "broken" not in ARCHITECTURES
