"""The model: shapes, fused forward == unrolled step, the paper's GRU equations, init."""

import torch

from nmt.architectures import build_model
from nmt.config import ModelConfig
from nmt.model import PaperGRU
from nmt.tokens import BOS, PAD


def tiny_model(cell="cudnn", output_rank=0, paper_init=False, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        embed_size=8, hidden_size=12, maxout_size=6, output_rank=output_rank, dropout=0.0, cell=cell, paper_init=paper_init
    )
    return build_model(config, src_vocab_size=20, tgt_vocab_size=17).eval()


def random_batch(batch=3, src_len=7, tgt_len=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(4, 20, (batch, src_len), generator=g)
    src_lengths = torch.tensor([src_len, src_len - 2, 3][:batch])
    for i, n in enumerate(src_lengths):
        src[i, n:] = PAD
    tgt_in = torch.randint(4, 17, (batch, tgt_len), generator=g)
    tgt_in[:, 0] = BOS
    return src, src_lengths, tgt_in


def test_shapes_and_loss():
    model = tiny_model()
    src, src_lengths, tgt_in = random_batch()
    encoder_out = model.encode(src, src_lengths)
    assert encoder_out.summary.shape == (3, 12)
    assert encoder_out.states.shape == (3, 7, 12)
    assert encoder_out.mask.sum(1).tolist() == src_lengths.tolist()
    assert model(src, src_lengths, tgt_in).shape == (3, 5, 17)
    tgt_out = tgt_in.roll(-1, 1)
    tgt_out[1, 3:] = PAD
    loss, n = model.loss(src, src_lengths, tgt_in, tgt_out)
    assert n == 15 - 2 and loss.ndim == 0 and loss > 0


def test_low_rank_output_has_rank_factorization():
    model = tiny_model(output_rank=4)
    assert [layer.weight.shape for layer in model.output] == [(4, 6), (17, 4)]


def unrolled_logits(model, src, src_lengths, tgt_in, precomputed=False):
    encoder_out = model.encode(src, src_lengths)
    if precomputed:  # the terms in c computed once (what search does on a CPU)
        encoder_out = model.for_decoding(encoder_out)
        assert encoder_out.gate_terms is not None and encoder_out.output_terms is not None
    state = model.init_state(encoder_out)
    steps = []
    for t in range(tgt_in.size(1)):
        logits, state = model.decode_step(tgt_in[:, t], state, encoder_out)
        steps.append(logits)
    return torch.stack(steps, 1)


def test_fused_forward_equals_unrolled_steps():
    for cell in ("cudnn", "paper"):
        for output_rank in (0, 3):
            model = tiny_model(cell=cell, output_rank=output_rank)
            src, src_lengths, tgt_in = random_batch()
            fused = model(src, src_lengths, tgt_in)
            for precomputed in (False, True):
                unrolled = unrolled_logits(model, src, src_lengths, tgt_in, precomputed)
                torch.testing.assert_close(fused, unrolled, atol=1e-5, rtol=0)


def test_precomputing_the_summary_terms_can_be_switched():
    """Default: on a CPU (this test's device) only; bench_decode.py --summary-terms sets it either way."""
    model = tiny_model()
    src, src_lengths, _ = random_batch()
    encoder_out = model.encode(src, src_lengths)
    assert model.for_decoding(encoder_out).gate_terms is not None
    model.precompute_summary_terms = False
    assert model.for_decoding(encoder_out) is encoder_out
    model.precompute_summary_terms = True
    assert model.for_decoding(encoder_out).output_terms is not None


def test_precomputed_decoding_terms_follow_selected_rows():
    """Beam expansion and dropping finished sentences select rows of every field."""
    model = tiny_model()
    src, src_lengths, tgt_in = random_batch()
    encoder_out = model.for_decoding(model.encode(src, src_lengths))
    index = torch.tensor([2, 2, 0])
    picked = encoder_out.select(index)
    again = model.for_decoding(model.encode(src[index], src_lengths[index]))
    for field in ("summary", "gate_terms", "output_terms"):
        torch.testing.assert_close(getattr(picked, field), getattr(again, field))
    state = model.init_state(picked)
    torch.testing.assert_close(
        model.decode_step(tgt_in[index, 0], state, picked)[0],
        model.decode_step(tgt_in[index, 0], state, picked._replace(gate_terms=None))[0],
    )


def test_encoder_summary_ignores_padding():
    """The summary of a sentence is the same alone or padded in a batch."""
    for cell in ("cudnn", "paper"):
        model = tiny_model(cell=cell)
        src, src_lengths, _ = random_batch()
        batched = model.encode(src, src_lengths).summary
        alone = model.encode(src[2:, :3], src_lengths[2:]).summary
        torch.testing.assert_close(batched[2:], alone, atol=1e-6, rtol=0)


def test_paper_cell_matches_equations_by_hand():
    torch.manual_seed(3)
    cell = PaperGRU(input_size=2, hidden_size=3)
    x, h = torch.randn(1, 2), torch.randn(1, 3)
    W = cell.input_proj.weight.detach()
    b = cell.input_proj.bias.detach()
    W_r, W_z, W_h = W[0:3], W[3:6], W[6:9]
    b_r, b_z, b_h = b[0:3], b[3:6], b[6:9]
    U_r, U_z = cell.gate_proj.weight.detach()[0:3], cell.gate_proj.weight.detach()[3:6]
    U = cell.candidate_proj.weight.detach()
    # Cho et al. 2014, eqs. (5)-(8): the reset gate multiplies h *before* U.
    r = torch.sigmoid(x @ W_r.T + b_r + h @ U_r.T)
    z = torch.sigmoid(x @ W_z.T + b_z + h @ U_z.T)
    h_tilde = torch.tanh(x @ W_h.T + b_h + (r * h) @ U.T)
    expected = z * h + (1 - z) * h_tilde
    torch.testing.assert_close(cell.step(x, h), expected)
    # ... which differs from PyTorch's placement r * (U h): the two cells are not the same model.
    pytorch_style = z * h + (1 - z) * torch.tanh(x @ W_h.T + b_h + r * (h @ U.T))
    assert not torch.allclose(expected, pytorch_style)


def test_paper_init():
    model = tiny_model(paper_init=True, output_rank=3)
    for rnn in (model.encoder, model.decoder):
        for matrix in rnn.recurrent_matrices():
            torch.testing.assert_close(matrix @ matrix.T, torch.eye(12), atol=1e-5, rtol=0)
    assert abs(model.deep_output.weight.std().item() - 0.01) < 0.003
    assert model.deep_output.bias.abs().max() == 0
    assert model.src_embed.weight[PAD].abs().max() == 0


def test_reverse_source_reads_each_sentence_backwards():
    from nmt.model import reverse_padded

    tokens = torch.tensor([[5, 6, 7, 3], [8, 3, PAD, PAD]])
    assert reverse_padded(tokens, torch.tensor([4, 2])).tolist() == [[3, 7, 6, 5], [3, 8, PAD, PAD]]
    torch.manual_seed(0)
    config = ModelConfig(embed_size=8, hidden_size=12, maxout_size=6, dropout=0.0, reverse_source=True)
    model = build_model(config, 20, 17).eval()
    src, src_lengths, tgt_in = random_batch()
    forward_summary = model.encode(src, src_lengths).summary
    model.config.reverse_source = False
    assert torch.allclose(forward_summary, model.encode(reverse_padded(src, src_lengths), src_lengths).summary)
    torch.testing.assert_close(model(src, src_lengths, tgt_in), unrolled_logits(model, src, src_lengths, tgt_in))
