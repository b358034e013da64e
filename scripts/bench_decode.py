#!/usr/bin/env python3
"""Decoding throughput: the project's batched greedy / beam search against a per-sentence reference.

    python scripts/bench_decode.py --ckpt outputs/bible_es_en/small/RUN     # a trained model
    python scripts/bench_decode.py --model small                           # random weights
    python scripts/bench_decode.py --quick                                 # CPU-sized, under two minutes
    python scripts/bench_decode.py --precisions float32,bfloat16,int8 --ckpt data/models/bible-es-en   # precision=

Data: the test split of the embedded Bible corpus (``nmt.data.load_corpus`` with
``DataConfig()`` defaults, i.e. data/bible-es-en); if that corpus is not there,
synthetic sentences, and the JSON ``data`` field says so.

Model: ``--ckpt RUN_DIR`` (``nmt.inference.load_translator``: its weights and
tokenizer), or a randomly initialized model of ``--model`` size with a
SentencePiece tokenizer trained on the fly (``nmt.tokenizer.build_tokenizer`` on
the train split, cached). Random weights rarely pick EOS, so nearly every
output runs to its maximum length (1.5 x source + 10 subwords): the JSON lines
give the mean output length. Prefer a checkpoint.

nmt        ``nmt.inference.decode_ids``: sentences sorted by length, token-budget
           batches (``DecodeConfig.batch_tokens`` source tokens / beam size),
           ``nmt.search`` batched over sentences x beams, bf16 autocast on CUDA.
reference  one sentence at a time, in float32, with ``ReferenceSeq2Seq``
           (nmt/reference.py; ``ReferenceRNNSearch``, whose every step computes the
           whole alignment model, for the attention model) holding the same weights: greedy is one
           decoder call per token; beam search keeps its beams in a Python list
           of (score, tokens, state), runs the live beams of the sentence as one
           decoder call per step, takes each beam's top candidates with one
           ``topk`` and ranks them in Python. Same search rules as ``nmt.search``
           (2 x beam candidates, EOS finalized when ranked within the beam,
           stop at beam finished hypotheses -- and with length penalty 0 only
           when no live beam scores above the worst of them --, EOS forced at
           the maximum length), so both return the same hypotheses.

Throughput counts generated target tokens, EOS included; nmt's time is the median
of ``--repeats`` runs. The reference runs once, on a random subset
(``--ref-sentences``): its cost per sentence does not depend on the others.
One JSON line per measurement, then comparison lines with speedups and targets.
``same_output_fraction`` is the share of the reference's sentences for which both
give the same best output: 1.0 in float32 on a CPU; on CUDA nmt runs in bf16, and a
random model's nearly flat distributions make near-ties common.

On a GPU each search step costs about the same whatever the number of rows (it
is bound by kernel launches and host syncs), so throughput grows with the batch:
try ``--batch-tokens 30000``.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

from nmt.architectures import build_model  # noqa: E402
from nmt.config import DataConfig, DecodeConfig, TokenizerConfig  # noqa: E402
from nmt.data import load_corpus, normalize_text  # noqa: E402
from nmt.errors import CorpusError  # noqa: E402
from nmt.inference import decode_ids, load_translator  # noqa: E402
from nmt.reference import reference_decode, reference_for  # noqa: E402
from nmt.search import Hypothesis  # noqa: E402
from nmt.tokenizer import build_tokenizer  # noqa: E402

MAX_SOURCE_SUBWORDS = 250  # as nmt-translate cuts its inputs (TranslateConfig.max_source_subwords)


# --------------------------------------------------------------------------- data


def default_data_config() -> DataConfig:
    """The embedded corpus, as ``nmt-train`` reads it by default."""
    return DataConfig()


def synthetic_text(n: int, seed: int) -> list[str]:
    """Sentences of 5-45 pseudo-words drawn with a Zipf-like frequency, from 4000 words."""
    rng = random.Random(seed)
    syllables = [c + v for c in "bcdfglmnprstvz" for v in "aeiou"]
    words = sorted({"".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) for _ in range(6000)})[:4000]
    rng.shuffle(words)
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    return [" ".join(rng.choices(words, weights, k=rng.randint(5, 45))) for _ in range(n)]


def load_sentences(seed: int = 0) -> tuple[list[str], list[str], list[str], str]:
    """(train sources, train targets, test sources, description of the data)."""
    cfg = default_data_config()
    test_file = Path(cfg.path) / "test.jsonl.gz"
    if test_file.exists():
        try:
            corpus = load_corpus(cfg)
            return (
                list(corpus["train"]["src"]),
                list(corpus["train"]["tgt"]),
                list(corpus["test"]["src"]),
                f"{cfg.name} test split ({cfg.src_lang}->{cfg.tgt_lang}, {cfg.path})",
            )
        except CorpusError as err:
            reason = f"could not read it ({err})"
    else:
        reason = f"{test_file} does not exist"
    train = synthetic_text(6000, seed)
    return (
        train[:3000],
        train[3000:],
        synthetic_text(500, seed + 1),
        f"synthetic sentences (500 test, 5-45 pseudo-words): {reason}",
    )


# --------------------------------------------------------------------------- the reference search


# reference_decode and its helpers live in nmt.reference (the tests use them too).


# --------------------------------------------------------------------------- timing


def generated_tokens(hyps: list[list[Hypothesis]]) -> int:
    """Output tokens of the best hypotheses, EOS included."""
    return sum(len(h[0].tokens) + 1 for h in hyps)


def time_decoding(decode_fn, src_ids, device: torch.device, repeats: int = 1) -> tuple[list, float, list[float]]:
    """Decode ``repeats`` times; (hypotheses, median seconds, every run's seconds)."""
    times = []
    for _ in range(repeats):
        with bc.Timer(device) as timer:
            hyps = decode_fn(src_ids)
        times.append(timer.seconds)
    return hyps, sorted(times)[len(times) // 2], times


def prepare_model(args, device: torch.device, train_src, train_tgt, arch: str = "cho2014"):
    """(model, tokenizer, description) from --ckpt, or a random ``arch`` model and an on-the-fly tokenizer."""
    if args.ckpt:
        translator = load_translator(args.ckpt, device)
        spec = translator.model.model_config()
        cfg = spec["config"]
        sizes = {
            "model": f"checkpoint {translator.path}",
            "arch": cfg.get("arch", "cho2014"),
            "embed_size": cfg["embed_size"],
            "hidden_size": cfg["hidden_size"],
            "maxout_size": cfg["maxout_size"],
            "output_rank": cfg["output_rank"],
            "vocab": spec["tgt_vocab_size"],
            "cell": cfg["cell"],
        }
        return translator.model, translator.tokenizer, sizes
    model_cfg, vocab = bc.model_config(args.model, arch)
    n_train = args.tokenizer_sentences or len(train_src)
    cache = Path(args.cache_dir).expanduser() if args.cache_dir else Path(default_data_config().cache_dir).expanduser()
    tokenizer = build_tokenizer(train_src[:n_train], train_tgt[:n_train], TokenizerConfig(vocab_size=vocab), cache)
    vocab = max(vocab, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    torch.manual_seed(args.seed)
    model = build_model(model_cfg, vocab, vocab).to(device).eval()
    sizes = {
        **bc.size_record(args.model, arch),
        "vocab": vocab,
        "weights": "random init",
        "tokenizer_vocab": tokenizer.tgt_vocab_size,
        "tokenizer_sentences": n_train,
    }
    return model, tokenizer, sizes


def summary_terms_mode(model, device: torch.device) -> str:
    """When nmt's search computes c's terms (``model.for_decoding`` decides), for the JSON."""
    if not hasattr(model, "for_decoding"):
        return "no summary (attention: U_a h_j once per sentence)"
    with torch.inference_mode():
        probe = model.for_decoding(model.encode(torch.full((1, 1), 4, device=device), torch.ones(1, dtype=torch.long)))
    return "once per sentence" if probe.gate_terms is not None else "every step"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", default=None, help="a run folder or checkpoint file (default: a random model)")
    parser.add_argument(
        "--model",
        default="small",
        choices=sorted(bc.SIZES),
        help="size of the random model when no --ckpt is given (default: small)",
    )
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="CPU-sized: a subset of sentences for both implementations (under two minutes on 2 cores)",
    )
    parser.add_argument("--beam", type=int, default=5, help="beam size of the beam-search measurement (default 5)")
    parser.add_argument(
        "--sentences", type=int, default=0, help="decode a random subset of this many test sentences with nmt (default: all)"
    )
    parser.add_argument(
        "--ref-sentences", type=int, default=None, help="random subset decoded by the reference (default 200; --quick: 12)"
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs of nmt's decoding, the median reported (default: 3 on CUDA, 1 on CPU)",
    )
    parser.add_argument(
        "--batch-tokens",
        type=int,
        default=None,
        help=f"nmt's DecodeConfig.batch_tokens (default {DecodeConfig().batch_tokens})",
    )
    parser.add_argument(
        "--tokenizer-sentences",
        type=int,
        default=None,
        help="train the on-the-fly tokenizer on this many train pairs (default: all; --quick: 5000)",
    )
    parser.add_argument("--cache-dir", default=None, help="tokenizer cache (default: DataConfig().cache_dir)")
    parser.add_argument("--seed", type=int, default=0, help="random weights and sentence subsets")
    parser.add_argument(
        "--arch",
        default="cho2014",
        help="the random model's architecture: cho2014, rnnsearch, or cho2014,rnnsearch for both "
        "at the same sizes and their cost per token (default: cho2014)",
    )
    parser.add_argument(
        "--summary-terms",
        choices=["auto", "on", "off"],
        default="auto",
        help="nmt: compute c's terms once per sentence (on), at every step (off), or as "
        "nmt does by default: on a CPU only (auto)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads on CPU")
    parser.add_argument(
        "--precisions",
        default=None,
        help="CPU precisions against float32 instead (scripts/bench_precision.py), e.g. float32,bfloat16,int8: "
        "the whole test split with beam --beam, --ckpt a comma-separated list of checkpoints",
    )
    parser.add_argument("--thread-counts", default="1,2", help="with --precisions: the thread counts measured")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    if args.precisions:
        import bench_precision

        if not args.ckpt:
            parser.error("--precisions needs --ckpt: reduced precision is measured on trained models")
        return bench_precision.run(args)
    if args.quick:
        args.sentences = args.sentences or 48
        args.ref_sentences = args.ref_sentences or 12
        args.tokenizer_sentences = args.tokenizer_sentences or 5000
    if args.ref_sentences is None:
        args.ref_sentences = 200
    if args.threads:
        torch.set_num_threads(args.threads)
    device = bc.setup_device(args.device)
    args.repeats = args.repeats or (3 if device.type == "cuda" else 1)
    bc.set_matmul_tf32(device, tf32=False)  # decoding: bf16 autocast (nmt) or float32 (reference)
    out = bc.JsonLines(args.out)

    train_src, train_tgt, test_src, data_desc = load_sentences(args.seed)
    archs = [None] if args.ckpt else args.arch.split(",")
    beams = {}
    for arch in archs:
        model, tokenizer, sizes = prepare_model(args, device, train_src, train_tgt, arch or "cho2014")
        beams[arch] = measure_model(args, device, out, model, tokenizer, {"sizes": sizes, "data": data_desc}, test_src)
    if set(beams) == {"cho2014", "rnnsearch"}:  # the attention model's cost per generated token
        cho, attention = beams["cho2014"], beams["rnnsearch"]
        out.emit(
            {
                **bc.common_fields("decode", device),
                "impl": "nmt",
                "search": f"beam{args.beam}",
                "comparison": "cost_per_token_ratio = Cho tokens/s / RNNsearch tokens/s, same sizes and sentences",
                "sizes": attention["sizes"],
                "cho_tgt_tokens_per_s": cho["tgt_tokens_per_s"],
                "rnnsearch_tgt_tokens_per_s": attention["tgt_tokens_per_s"],
                "cost_per_token_ratio": bc.rounded(cho["tgt_tokens_per_s"] / attention["tgt_tokens_per_s"], 3),
            }
        )
    return 0


def measure_model(args, device: torch.device, out: bc.JsonLines, model, tokenizer, base: dict, test_src) -> dict:
    """Greedy and beam search of one model against its reference; returns nmt's beam record."""
    model.precompute_summary_terms = {"auto": None, "on": True, "off": False}[args.summary_terms]
    summary_terms = summary_terms_mode(model, device)
    texts = [normalize_text(line) for line in test_src]
    src_ids = [ids[:MAX_SOURCE_SUBWORDS] for ids in tokenizer.encode_src(texts)]
    rng = random.Random(args.seed)
    if args.sentences and args.sentences < len(src_ids):
        src_ids = [src_ids[i] for i in sorted(rng.sample(range(len(src_ids)), args.sentences))]
    ref_rows = sorted(rng.sample(range(len(src_ids)), min(args.ref_sentences, len(src_ids))))
    ref_ids = [src_ids[i] for i in ref_rows]
    reference = reference_for(model).float().eval()

    searches = {"greedy": DecodeConfig(), f"beam{args.beam}": DecodeConfig(name="beam", beam_size=args.beam)}
    if args.batch_tokens:
        for decode in searches.values():
            decode.batch_tokens = args.batch_tokens
    results = {}
    for search_name, decode in searches.items():
        # Warm-up: cuDNN / BLAS handles, autocast caches, the allocator.
        decode_ids(model, src_ids[:8], decode, device)
        reference_decode(reference, ref_ids[:1], decode, device)
        for impl in ("nmt", "reference"):
            if impl == "nmt":
                hyps, seconds, times = time_decoding(
                    lambda ids, decode=decode: decode_ids(model, ids, decode, device), src_ids, device, args.repeats
                )
                ids = src_ids
                extra = {
                    "precision": "bf16 autocast" if device.type == "cuda" else "float32",
                    "batch_tokens": decode.batch_tokens,
                    "batching": "decode_ids: length-sorted token batches",
                    "summary_terms": summary_terms,
                    "runs_seconds": [bc.rounded(t) for t in times],
                }
            else:
                hyps, seconds, _ = time_decoding(
                    lambda ids, decode=decode: reference_decode(reference, ids, decode, device), ref_ids, device
                )
                ids = ref_ids
                extra = {"precision": "float32", "batching": "one sentence at a time"}
            tokens = generated_tokens(hyps)
            record = {
                **bc.common_fields("decode", device),
                "impl": impl,
                "search": search_name,
                "beam_size": decode.beam_size,
                **base,
                "sentences": len(ids),
                "tgt_tokens": tokens,
                "mean_source_length": bc.rounded(sum(len(s) + 1 for s in ids) / len(ids)),
                "mean_output_length": bc.rounded(tokens / len(ids)),
                "seconds": bc.rounded(seconds),
                "tgt_tokens_per_s": bc.rounded(tokens / seconds),
                "sentences_per_s": bc.rounded(len(ids) / seconds),
                **extra,
            }
            out.emit(record)
            results[(impl, search_name)] = (record, hyps)

    # nmt's hypotheses for the reference's sentences: same outputs?
    for search_name, decode in searches.items():
        nmt_rec, nmt_hyps = results[("nmt", search_name)]
        ref_rec, ref_hyps = results[("reference", search_name)]
        same = sum(nmt_hyps[row][0].tokens == ref[0].tokens for row, ref in zip(ref_rows, ref_hyps)) / len(ref_rows)
        measured = {
            "speedup": bc.rounded(nmt_rec["tgt_tokens_per_s"] / ref_rec["tgt_tokens_per_s"], 3),
            "nmt_tgt_tokens_per_s": nmt_rec["tgt_tokens_per_s"],
            "reference_tgt_tokens_per_s": ref_rec["tgt_tokens_per_s"],
            "same_output_fraction": bc.rounded(same, 3),
        }
        if decode.beam_size == 1:
            target, hardware = {}, None
        elif device.type == "cuda":
            target, hardware = {"min_nmt_tgt_tokens_per_s": 20_000, "min_speedup": 10.0}, "H100"
        else:
            target, hardware = {"min_speedup": 3.0}, "2-core CPU"
        met, all_met = bc.check_targets(measured, target)
        out.emit(
            {
                **bc.common_fields("decode", device),
                "impl": "nmt/reference",
                "search": search_name,
                "comparison": "speedup = nmt / reference, generated target tokens per second",
                **base,
                **measured,
                "target": target,
                "target_hardware": hardware,
                "target_met": met,
                "met": all_met,
            }
        )

    greedy, beam = results[("nmt", "greedy")][0], results[("nmt", f"beam{args.beam}")][0]
    measured = {
        "time_ratio": bc.rounded(beam["seconds"] / greedy["seconds"], 3),
        "per_token_time_ratio": bc.rounded(greedy["tgt_tokens_per_s"] / beam["tgt_tokens_per_s"], 3),
    }
    target = {"max_time_ratio": 3.0} if device.type == "cuda" else {}
    met, all_met = bc.check_targets(measured, target)
    out.emit(
        {
            **bc.common_fields("decode", device),
            "impl": "nmt",
            "search": f"beam{args.beam}/greedy",
            "comparison": f"time_ratio = nmt beam-{args.beam} seconds / nmt greedy seconds, same sentences",
            **base,
            "sentences": greedy["sentences"],
            **measured,
            "target": target,
            "target_hardware": "H100" if target else None,
            "target_met": met,
            "met": all_met,
        }
    )
    return beam


if __name__ == "__main__":
    sys.exit(main())
