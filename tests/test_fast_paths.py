"""Every fast path computes what the plain path computes (CPU, no timing).

(a) ``model.loss`` (fused decoder, only real positions through the output layer)
    == full logits from ``decode_step`` unrolled + ``F.cross_entropy(ignore_index=PAD)``,
    in value and in the gradient of every parameter;
(b) token-budget batching: summed losses (and gradients) over bucketed batches ==
    over the same sentences batched any other way;
(c) batched greedy / beam search (``decode_ids``, ``nmt.search``) == the same search
    run one sentence at a time, by ``nmt.search`` and by the reference search of
    ``nmt.reference`` (what scripts/bench_decode.py times);
(a') the training step's sync-free pieces: the loss given a host-counted token count,
    the encoder's last states gathered instead of packed, fused Adam;
(d) the reference implementations of ``nmt.reference`` (what scripts/py
    times) compute the same loss, gradients and training step as nmt's model and
    ``Trainer.train_step``, given the same weights: the benchmarks compare like with like.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nmt.architectures import build_model
from nmt.batching import ParallelIds, token_batches
from nmt.config import DecodeConfig, ModelConfig, OptimConfig
from nmt.inference import decode_ids
from nmt.reference import (
    ReferenceRNNSearch,
    ReferenceSeq2Seq,
    reference_decode,
    reference_loss,
    reference_optimizer,
    reference_train_step,
    synthetic_corpus,
)
from nmt.search import beam_search, greedy_search
from nmt.tokens import PAD
from nmt.trainer import Trainer, TrainingData

SRC_VOCAB, TGT_VOCAB = 20, 17
CPU = torch.device("cpu")


def plain_trainer(model, data=None) -> Trainer:
    """A Trainer with the default settings and no run folder, as scripts/py builds it."""
    return Trainer(model, TrainingData(data if data is not None else random_pairs(4, 3, seed=0)), OptimConfig(), CPU)


def fit_step(trainer: Trainer, data: ParallelIds, rows):
    """The body of ``Trainer.fit``'s loop on a CPU: collate, then ``train_step``."""
    return trainer.train_step(data.collate(rows))


def tiny_model(cell="cudnn", output_rank=0, seed=0, dtype=torch.float32, arch="cho2014"):
    torch.manual_seed(seed)
    config = ModelConfig(
        arch=arch,
        embed_size=8,
        hidden_size=12,
        maxout_size=6,
        output_rank=output_rank,
        dropout=0.0,
        cell=cell,
        attention_size=10 if arch == "rnnsearch" else 0,
    )
    model = build_model(config, SRC_VOCAB, TGT_VOCAB).to(dtype)
    if arch == "rnnsearch":  # the paper's initialization gives flat attention (v_a = 0): make it peaked
        with torch.no_grad():
            model.energy.weight.normal_(0.0, 1.0)
    return model


REFERENCES = {"cho2014": ReferenceSeq2Seq, "rnnsearch": ReferenceRNNSearch}


def random_pairs(n: int, max_len: int, seed: int) -> ParallelIds:
    """n sentence pairs of 1..max_len random ids (EOS added by the batcher)."""
    rng = np.random.default_rng(seed)
    src = [rng.integers(4, SRC_VOCAB, rng.integers(1, max_len + 1)).tolist() for _ in range(n)]
    tgt = [rng.integers(4, TGT_VOCAB, rng.integers(1, max_len + 1)).tolist() for _ in range(n)]
    return ParallelIds.from_lists(src, tgt)


def gradients(model, loss) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> None:
    """max |actual - expected| <= rel * max |expected| (a zero tensor must stay zero)."""
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error <= rel * scale or error == 0.0, f"{what}: max error {error:.3g} vs scale {scale:.3g}"


def plain_loss(model, batch, label_smoothing=0.0):
    """Full (B, T, V) logits from the one-step decoder, padding included; summed CE over real targets."""
    encoder_out = model.encode(batch.src, batch.src_lengths)
    state = model.init_state(encoder_out)
    steps = []
    for t in range(batch.tgt_in.size(1)):
        logits, state = model.decode_step(batch.tgt_in[:, t], state, encoder_out)
        steps.append(logits)
    logits = torch.stack(steps, dim=1)
    return F.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        batch.tgt_out.reshape(-1),
        ignore_index=PAD,
        reduction="sum",
        label_smoothing=label_smoothing,
    )


# --------------------------------------------------------------------------- (a) model.loss


@pytest.mark.parametrize(
    "cell,output_rank,label_smoothing",
    [("cudnn", 0, 0.0), ("cudnn", 0, 0.1), ("cudnn", 5, 0.0), ("paper", 0, 0.0), ("paper", 5, 0.1)],
)
def test_fast_loss_equals_plain_loss_and_gradients(cell, output_rank, label_smoothing):
    model = tiny_model(cell, output_rank)
    data = random_pairs(9, 11, seed=1)
    batch = data.collate(np.arange(len(data)))
    assert (batch.tgt_out == PAD).any(), "the batch must hold padding"

    fast, n_tokens = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, label_smoothing)
    fast_grads = gradients(model, fast)
    plain = plain_loss(model, batch, label_smoothing)
    plain_grads = gradients(model, plain)

    assert int(n_tokens) == int((batch.tgt_out != PAD).sum())
    assert_relative_close(fast.detach(), plain.detach(), 1e-5, "loss")
    assert fast_grads.keys() == plain_grads.keys()
    for name in plain_grads:
        assert_relative_close(fast_grads[name], plain_grads[name], 1e-5, name)


@pytest.mark.parametrize("cell", ["cudnn", "paper"])
def test_loss_with_a_host_token_count_equals_boolean_indexing(cell):
    """``n_tokens`` (nonzero_static, no device sync) picks the same positions in the same order."""
    model = tiny_model(cell)
    data = random_pairs(9, 11, seed=11)
    batch = data.collate(np.arange(len(data)))
    counted, n = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, 0.1, batch.n_tgt_tokens)
    counted_grads = gradients(model, counted)
    indexed, _ = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, 0.1)
    indexed_grads = gradients(model, indexed)
    assert int(n) == batch.n_tgt_tokens
    assert torch.equal(counted.detach(), indexed.detach())
    for name in indexed_grads:
        assert torch.equal(counted_grads[name], indexed_grads[name]), name


def test_encoder_last_states_equal_a_packed_gru():
    """Gathering the state at each sentence's last real token == running a packed sequence."""
    from torch.nn.utils.rnn import pack_padded_sequence

    model = tiny_model("cudnn")
    data = random_pairs(9, 11, seed=12)
    batch = data.collate(np.arange(len(data)))
    assert len(set(batch.src_lengths.tolist())) > 2
    summary = model.encode(batch.src, batch.src_lengths).summary
    embedded = model.src_embed(batch.src)
    packed = pack_padded_sequence(embedded, batch.src_lengths, batch_first=True, enforce_sorted=False)
    _, last = model.encoder.rnn(packed, embedded.new_zeros(1, len(data), model.config.hidden_size))
    assert_relative_close(summary.detach(), torch.tanh(model.summary(last[0])).detach(), 1e-6, "summary")


def test_fused_adam_makes_the_same_update_as_plain_adam():
    """Trainer's optimizer (fused, which can skip a step on the device) == PyTorch's default Adam."""
    from nmt.config import OptimConfig
    from nmt.optim import build_optimizer, skips_on_device

    fused_model, plain_model = tiny_model(dtype=torch.float64), tiny_model(dtype=torch.float64)
    fused = build_optimizer(OptimConfig(), fused_model.parameters(), CPU)
    plain = build_optimizer(OptimConfig(), plain_model.parameters())
    assert skips_on_device(fused) and not skips_on_device(plain)
    data = random_pairs(20, 9, seed=13)
    for rows in token_batches(data.src_lengths, data.tgt_lengths, 40, shuffle=True, seed=2, epoch=0)[:4]:
        batch = data.collate(rows)
        for model, optimizer in ((fused_model, fused), (plain_model, plain)):
            optimizer.zero_grad()
            loss, n = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
            (loss / n).backward()
            optimizer.step()
    for (name, a), b in zip(fused_model.named_parameters(), plain_model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_compiled_loss_equals_eager_loss():
    """train.compile: torch.compile(model.loss) (graph breaks at the GRUs; the embedding, gather,
    deep output and cross-entropy are compiled), over batches of changing shape. ~30 s on a CPU."""
    torch._dynamo.reset()
    model = tiny_model()
    compiled = torch.compile(model.loss)
    data = random_pairs(30, 11, seed=14)
    for rows in (np.arange(0, 9), np.arange(9, 20)):  # the second shape: one recompile, then dynamic
        batch = data.collate(rows)
        args = (batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, 0.1, batch.n_tgt_tokens)
        fast, _ = compiled(*args)
        fast_grads = gradients(model, fast)
        eager, _ = model.loss(*args)
        eager_grads = gradients(model, eager)
        assert_relative_close(fast.detach(), eager.detach(), 1e-5, "loss")
        for name in eager_grads:
            assert_relative_close(fast_grads[name], eager_grads[name], 1e-5, name)


# --------------------------------------------------------------------------- (b) batching


def summed_loss(model, data: ParallelIds, batches) -> tuple[torch.Tensor, int]:
    total, tokens = 0.0, 0
    for rows in batches:
        batch = data.collate(rows)
        loss, n = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
        total, tokens = total + loss, tokens + int(n)
    return total, tokens


def test_token_budget_batches_give_the_same_loss_as_any_batching():
    model = tiny_model()
    data = random_pairs(30, 14, seed=2)
    budget = 48
    bucketed = token_batches(data.src_lengths, data.tgt_lengths, budget, shuffle=True, seed=3, epoch=1)

    rows = np.concatenate(bucketed)
    assert sorted(rows.tolist()) == list(range(len(data))), "each sentence exactly once"
    longest = np.maximum(data.src_lengths, data.tgt_lengths)
    assert all(len(b) * longest[b].max() <= budget for b in bucketed)
    assert len(bucketed) > 3

    order = np.random.default_rng(4).permutation(len(data))
    others = {
        "one batch": [np.arange(len(data))],
        "random order, 7 per batch": [order[i : i + 7] for i in range(0, len(data), 7)],
        "one sentence per batch": [np.array([i]) for i in range(len(data))],
    }
    loss, tokens = summed_loss(model, data, bucketed)
    grads = gradients(model, loss)
    for name, batches in others.items():
        other_loss, other_tokens = summed_loss(model, data, batches)
        assert other_tokens == tokens == int(data.tgt_lengths.sum()), name
        assert_relative_close(loss.detach(), other_loss.detach(), 1e-5, name)
        other_grads = gradients(model, other_loss)
        for param in grads:
            assert_relative_close(grads[param], other_grads[param], 1e-5, f"{name}: {param}")


# --------------------------------------------------------------------------- (c) search


def search_model():
    """A tiny random model; with 17 target words it ends its outputs at various lengths."""
    return tiny_model(seed=5).eval()


def sources(n=14, seed=6) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(4, SRC_VOCAB, rng.integers(1, 10)).tolist() for _ in range(n)]


def one_at_a_time(model, src_ids, decode: DecodeConfig):
    """nmt.search on batches of a single sentence."""
    results = []
    for ids in src_ids:
        batch = ParallelIds.from_lists([ids]).collate([0])
        if decode.beam_size == 1:
            results.append(
                [greedy_search(model, batch.src, batch.src_lengths, decode.max_len_a, decode.max_len_b, decode.min_len)[0]]
            )
        else:
            results.append(
                beam_search(
                    model,
                    batch.src,
                    batch.src_lengths,
                    decode.beam_size,
                    decode.length_penalty,
                    decode.max_len_a,
                    decode.max_len_b,
                    decode.min_len,
                    decode.nbest,
                )[0]
            )
    return results


def assert_same_hypotheses(batched, single, what):
    assert len(batched) == len(single)
    for i, (a, b) in enumerate(zip(batched, single)):
        assert [h.tokens for h in a] == [h.tokens for h in b], f"{what}: sentence {i}"
        for x, y in zip(a, b):
            assert x.score == pytest.approx(y.score, rel=1e-5, abs=1e-5), f"{what}: sentence {i}"
            assert x.normalized_score == pytest.approx(y.normalized_score, rel=1e-5, abs=1e-5)


SEARCHES = {
    "greedy": DecodeConfig(batch_tokens=20),
    "greedy min_len": DecodeConfig(batch_tokens=20, min_len=3),
    "beam 3": DecodeConfig(beam_size=3, batch_tokens=40),
    "beam 5, nbest 5": DecodeConfig(beam_size=5, nbest=5, batch_tokens=60),
    "beam 5, alpha 0, min_len 2": DecodeConfig(beam_size=5, length_penalty=0.0, min_len=2, batch_tokens=60),
    "beam 4, short limit": DecodeConfig(beam_size=4, max_len_a=0.5, max_len_b=2, batch_tokens=40, nbest=2),
}


@pytest.mark.parametrize("name", list(SEARCHES))
def test_batched_search_equals_per_sentence_search(name):
    decode = SEARCHES[name]
    model = search_model()
    src_ids = sources()
    batched = decode_ids(model, src_ids, decode, CPU)
    lengths = [len(h[0].tokens) for h in batched]
    assert len(set(lengths)) > 2, f"outputs should end at various lengths, got {lengths}"

    assert_same_hypotheses(batched, one_at_a_time(model, src_ids, decode), f"{name}: nmt per sentence")
    reference = ReferenceSeq2Seq.from_nmt(model).eval()
    assert_same_hypotheses(batched, reference_decode(reference, src_ids, decode, CPU), f"{name}: the reference")


@pytest.mark.parametrize("name", ["greedy", "beam 5, nbest 5"])
def test_attention_model_search_equals_its_tutorial_reference(name):
    """What scripts/bench_decode.py times for model=rnnsearch: the same hypotheses both ways."""
    decode = SEARCHES[name]
    model = tiny_model(seed=5, arch="rnnsearch").eval()
    src_ids = sources()
    batched = decode_ids(model, src_ids, decode, CPU)
    assert len({len(h[0].tokens) for h in batched}) > 2
    reference = ReferenceRNNSearch.from_nmt(model).eval()
    assert_same_hypotheses(batched, reference_decode(reference, src_ids, decode, CPU), f"{name}: the reference")


# --------------------------------------------------------------------------- (d) the benchmarks' references


@pytest.mark.parametrize("arch, reverse_source", [("cho2014", False), ("cho2014", True), ("rnnsearch", False)])
def test_reference_model_computes_the_same_loss_and_gradients(arch, reverse_source):
    model = tiny_model(arch=arch)
    if reverse_source:
        model.config.reverse_source = True
    reference = REFERENCES[arch].from_nmt(model)
    data = random_pairs(9, 11, seed=7)
    batch = data.collate(np.arange(len(data)))

    loss_sum, n_tokens = model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out)
    nmt_grads = gradients(model, loss_sum / n_tokens)
    ref_loss = reference_loss(reference, batch)
    ref_grads = gradients(reference, ref_loss)

    assert_relative_close(ref_loss.detach(), (loss_sum / n_tokens).detach(), 1e-5, "loss")
    for ref_name, nmt_name in reference.nmt_names().items():
        assert_relative_close(ref_grads[ref_name], nmt_grads[nmt_name], 1e-5, ref_name)
    assert set(reference.nmt_names().values()) == set(nmt_grads), "every parameter mapped"


@pytest.mark.parametrize("arch", ["cho2014", "rnnsearch"])
def test_benchmarked_training_steps_are_the_same_update(arch):
    """Trainer.train_step (as bench_train calls it) and the reference step: the same new weights."""
    model = tiny_model(dtype=torch.float64, arch=arch)
    reference = REFERENCES[arch].from_nmt(model)
    data = random_pairs(30, 12, seed=8)
    trainer = plain_trainer(model, data)
    optimizer = reference_optimizer(reference)
    for rows in token_batches(data.src_lengths, data.tgt_lengths, 60, shuffle=True, seed=1, epoch=0)[:3]:
        result = fit_step(trainer, data, rows)
        ref_mean = reference_train_step(reference, optimizer, data.collate(rows), CPU)
        assert bool(result.finite) and result.n_tokens == data.collate(rows).n_tgt_tokens
        # model.loss takes the cross-entropy in float32 (logits.float()): float32 agreement.
        assert ref_mean == pytest.approx(float(result.loss_sum) / result.n_tokens, rel=1e-6)
    params = dict(model.named_parameters())
    for ref_name, param in reference.named_parameters():
        nmt_name = REFERENCES[arch].nmt_names()[ref_name]
        # Three Adam steps of lr 1e-3: the weights agree to 1e-4 of one step (to 1e-3 for the
        # attention model, whose softmax over the source runs in float32 even in a float64 model).
        atol = 1e-6 if arch == "rnnsearch" else 1e-7
        torch.testing.assert_close(param, params[nmt_name], rtol=0, atol=atol, msg=ref_name)


def test_synthetic_training_corpus_has_the_requested_lengths():
    fixed = synthetic_corpus(64, (30, 30), vocab=100)
    assert (fixed.tgt_lengths == 30).all() and (fixed.src_lengths == 30).all()
    batches = token_batches(fixed.src_lengths, fixed.tgt_lengths, 32 * 30, shuffle=True, seed=1, epoch=0)
    assert [len(b) for b in batches] == [32, 32]
    varied = synthetic_corpus(500, (10, 50), vocab=100)
    assert varied.tgt_lengths.min() >= 10 and varied.tgt_lengths.max() <= 50
    assert varied.src_lengths.min() >= 10 and varied.src_lengths.max() <= 50
    assert varied.src_values.min() >= 4 and varied.tgt_values.max() < 100


# --------------------------------------------------------------------------- no host reads in a step


class HostReads:
    """Records the aten operators of a training step that read a tensor's value on the host
    (``.item()``, ``int()``, ``bool()`` and ``.tolist()`` go through ``_local_scalar_dense``; boolean
    indexing is ``index`` with a bool mask, a ``nonzero`` inside): each is a host-device
    synchronization on a GPU."""

    READS = ("_local_scalar_dense", "nonzero.", "masked_select", "equal.")

    def __init__(self):
        from torch.utils._python_dispatch import TorchDispatchMode

        reads = self.reads = []

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = str(func)
                if any(name.startswith(f"aten.{r}") for r in HostReads.READS):
                    reads.append(name)
                elif name.startswith(("aten.index.", "aten.index_put")) and any(  # x[mask]: nonzero inside
                    isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in args[1] if i is not None
                ):
                    reads.append(f"{name} with a boolean mask")
                return func(*args, **(kwargs or {}))

        self.mode = Mode()


@pytest.mark.parametrize(
    "optimizer,expected,arch,cell",
    [
        ("adam", [], "cho2014", "cudnn"),
        ("adadelta", ["aten._local_scalar_dense.default"], "cho2014", "cudnn"),
        ("adam", [], "rnnsearch", "cudnn"),
        ("adam", [], "rnnsearch", "paper"),
    ],
)
def test_a_training_step_reads_nothing_back_from_the_device(monkeypatch, optimizer, expected, arch, cell):
    """Trainer.train_step (fused Adam) calls no operator that reads a value on the host, so on a
    GPU it never waits -- for the attention model's step-by-step decoder loop too; Adadelta,
    which cannot skip a step by itself, reads one flag."""
    from nmt.batching import Batch
    from nmt.config import OptimConfig
    from nmt.optim import build_optimizer

    model = tiny_model(cell=cell, arch=arch)
    trainer = plain_trainer(model)
    trainer.optimizer = build_optimizer(
        OptimConfig(optimizer=optimizer, lr=1.0 if optimizer == "adadelta" else 1e-3), model.parameters(), CPU
    )
    data = random_pairs(20, 9, seed=15)
    batch = data.collate(np.arange(12))
    n_tokens = batch.n_tgt_tokens  # counted on the host, before the batch goes to the device
    monkeypatch.setattr(Batch, "n_tgt_tokens", property(lambda self: n_tokens))
    trainer.train_step(batch)  # the first step creates the optimizer state
    recorder = HostReads()
    with recorder.mode:
        result = trainer.train_step(batch)
    assert recorder.reads == expected
    assert bool(result.finite) and result.n_tokens == n_tokens


def test_the_host_read_detector_sees_boolean_indexing_and_item():
    recorder = HostReads()
    x = torch.arange(6.0)
    with recorder.mode:
        x[x > 2].sum().item()
    assert any("boolean mask" in r or r.startswith("aten.nonzero") for r in recorder.reads)
    assert "aten._local_scalar_dense.default" in recorder.reads


def test_the_loss_reads_nothing_on_the_host_only_when_given_the_token_count():
    model = tiny_model()
    batch = random_pairs(9, 11, seed=16).collate(np.arange(9))
    n_tokens = batch.n_tgt_tokens
    for given, expect_reads in ((None, True), (n_tokens, False)):
        recorder = HostReads()
        with recorder.mode:
            model.loss(batch.src, batch.src_lengths, batch.tgt_in, batch.tgt_out, n_tokens=given)
        assert bool(recorder.reads) == expect_reads, (given, recorder.reads)
