"""``nmt-evaluate``: the BLEU report. Decodes a split, or scores given files.

    nmt-evaluate ckpt=outputs/RUN                       # beam 5 over the run's test split
    nmt-evaluate ckpt=outputs/RUN decode=greedy split=validation report_dir=report-val
    nmt-evaluate hyps=hyps.txt refs=refs.txt srcs=src.txt compare=baseline.txt

Writes report.md, report.json, hypotheses.txt and bleu_by_length.png into report_dir; with
``compare=`` / ``compare_ckpt=`` both systems' BLEU by length (bleu_by_length_compared.png),
and for an attention model heatmaps of a few examples' alignments (alignment-LINE.png).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nmt import metrics, plots, report
from nmt.commands.app import hydra_command, refuse
from nmt.commands.files import check_not_overwritten
from nmt.config import CONF_DIR, DataConfig, EvaluateConfig
from nmt.data import SPLITS, load_corpus
from nmt.errors import ReportError

if TYPE_CHECKING:  # torch: imported when a model is loaded
    from nmt.inference import Translator
from nmt.output_files import OutputFiles, not_regular

log = logging.getLogger(__name__)


def corpus_for(cfg: EvaluateConfig, trained: DataConfig) -> DataConfig:
    """``data=...`` if given, else ``trained``: the corpus the checkpoint was trained on."""
    if cfg.data is not None:
        if (cfg.data.src_lang, cfg.data.tgt_lang) != (trained.src_lang, trained.tgt_lang):
            log.warning(
                "the checkpoint translates %s -> %s, but data.src_lang=%s data.tgt_lang=%s: "
                "expect a meaningless score unless that is the point",
                trained.src_lang,
                trained.tgt_lang,
                cfg.data.src_lang,
                cfg.data.tgt_lang,
            )
        return cfg.data
    data = dataclasses.replace(trained)
    embedded_here = CONF_DIR.parent / "data" / Path(data.path).name
    if data.source == "embedded" and not Path(data.path).exists() and embedded_here.exists():
        data.path = str(embedded_here)  # trained on another machine: use this install's copy
    return data


@dataclass
class Decoded:
    """A checkpoint's translations of a split, and what the report says about them."""

    sources: list[str]
    refs: list[str]
    hyps: list[str]
    results: list  # per sentence, its n-best (text, Hypothesis) pairs
    speed: dict
    model: dict
    corpus: dict
    translator: Translator
    data: DataConfig


def decode_split(
    cfg: EvaluateConfig,
    translator: Translator,
    data: DataConfig | None = None,
    check_refs: Callable[[list[str]], None] | None = None,
) -> Decoded:
    """Translate ``cfg.split`` with ``translator``, of ``data`` (default: ``data=``, else the
    corpus the checkpoint was trained on); ``check_refs`` sees the references before decoding."""
    from nmt.inference import translate_lines

    data = data or corpus_for(cfg, translator.checkpoint.data_config)
    if cfg.split not in SPLITS:
        raise ReportError(f"split={cfg.split!r}: expected one of {sorted(SPLITS)}")
    # Only the split scored is read and cleaned (a Hub dataset is still prepared whole on first use).
    table = load_corpus(data, splits=(cfg.split,))[cfg.split]
    sources, refs = list(table["src"]), list(table["tgt"])
    if cfg.max_sentences:
        sources, refs = sources[: cfg.max_sentences], refs[: cfg.max_sentences]
    if check_refs is not None:
        check_refs(refs)
    start = time.perf_counter()
    results = translate_lines(translator, sources, cfg.decode, progress=True)
    seconds = time.perf_counter() - start
    tokens = sum(len(hyps[0][1].tokens) + 1 for hyps in results)  # generated subwords, EOS included
    speed = {
        "seconds": round(seconds, 3),
        "sentences_per_s": round(len(sources) / seconds, 2),
        "tgt_tokens_per_s": round(tokens / seconds, 1),
        "device": str(translator.device),
    }
    corpus = {"name": data.name, "split": cfg.split, "src_lang": data.src_lang, "tgt_lang": data.tgt_lang}
    if cfg.max_sentences:
        corpus["max_sentences"] = cfg.max_sentences  # the first N of the split
    return Decoded(
        sources, refs, [hyps[0][0] for hyps in results], results, speed, model_settings(translator), corpus, translator, data
    )


def model_settings(translator: Translator) -> dict:
    """The report's model section: the checkpoint's settings, or one line per ensemble member."""
    from nmt.ensemble import Ensemble

    checkpoint = translator.checkpoint
    vocab = {"src_vocab_size": checkpoint.src_vocab_size, "tgt_vocab_size": checkpoint.tgt_vocab_size}
    if not isinstance(translator.model, Ensemble):
        return {**asdict(checkpoint.model_config), "step": checkpoint.step, **vocab}
    settings = {"ensemble": f"{len(translator.members)} models, log of their mean probability"}
    for i, (path, member) in enumerate(zip(translator.members, translator.model.members), 1):
        c = member.config
        settings[f"member {i}"] = (
            f"{path}: {c.arch} ({c.name}), embedding {c.embed_size}, hidden {c.hidden_size}, maxout {c.maxout_size}, "
            f"output rank {c.output_rank}, attention {c.attention_size}, cell {'lstm' if c.rnn == 'lstm' else c.cell}"
        )
    return {**settings, **vocab}


def alignment_figures(
    decoded: Decoded, examples: list[dict], report_dir: Path, n: int, outputs: OutputFiles, earlier: set[str]
) -> list[dict]:
    """Heatmaps of the attention model's alignments for the first ``n`` examples (never over a
    file of that name that no earlier report in ``report_dir`` wrote: ``earlier``)."""
    from nmt.inference import alignment_records

    chosen = [example["line"] - 1 for example in examples[:n]]
    lines = [decoded.sources[i] for i in chosen]
    records = alignment_records(decoded.translator, lines, [decoded.results[i] for i in chosen])
    figures = []
    for line, record in zip(chosen, records):
        if record["source"]:
            name = f"alignment-{line + 1}.png"
            if (report_dir / name).exists() and name not in earlier:
                raise ReportError(
                    f"report_dir={report_dir}: {report_dir / name} is not a figure of an earlier report, and nmt-evaluate "
                    "replaces only its own: choose another report_dir="
                )
            with outputs.open(str(report_dir / name), binary=True, through=False) as out:
                plots.plot_alignment(record["source"], record["target"], record["weights"], out, f"line {line + 1}")
            figures.append({"title": f"Alignment of line {line + 1}", "file": name})
    return figures


def run_evaluate(cfg: EvaluateConfig) -> int:
    from nmt.inference import has_alignments, load_translator

    if Path(cfg.report_dir).exists() and not Path(cfg.report_dir).is_dir():  # before minutes of decoding
        raise ReportError(f"report_dir={cfg.report_dir}: a file, not a folder; choose another report_dir=")
    report_dir = Path(cfg.report_dir)
    earlier = report.earlier_report_files(report_dir)  # what an earlier report wrote: replaced or removed
    for name in sorted({*report.REPORT_FILES, *earlier}):
        problem = not_regular(report_dir / name)
        if problem:
            raise ReportError(
                f"report_dir={cfg.report_dir}: {report_dir / name} is {problem}, which the report would replace; "
                "choose another report_dir="
            )
    check_not_overwritten(  # every file it writes, and the figures of an old report it removes
        [report_dir / name for name in sorted({*report.REPORT_FILES, *earlier})],
        {"hyps": cfg.hyps, "refs": cfg.refs, "srcs": cfg.srcs, "compare": cfg.compare},
        "choose another report_dir=",
    )
    with_sources = cfg.hyps is None or cfg.srcs is not None  # a plot by source length
    compared = cfg.compare is not None or cfg.compare_ckpt is not None
    will_write = [name for name in report.REPORT_FILES if name != "bleu_by_length.png" or with_sources]
    for name in will_write + ["bleu_by_length_compared.png"] * (compared and with_sources):
        if (report_dir / name).exists() and name not in earlier:
            raise ReportError(
                f"report_dir={cfg.report_dir}: {report_dir / name} is not a file of an earlier report, and nmt-evaluate "
                "replaces only its own: choose another report_dir="
            )
    if cfg.compare_ckpt is not None and (cfg.ckpt is None or cfg.hyps is not None):
        raise ReportError("compare_ckpt= decodes the split as ckpt= does: give ckpt= (with hyps=, use compare=FILE)")
    if cfg.compare is not None and cfg.compare_ckpt is not None:
        raise ReportError("compare= and compare_ckpt= both name the other system: give one of them")
    if cfg.ckpt is not None and cfg.hyps is None and (cfg.refs is not None or cfg.srcs is not None):
        # ckpt= decodes a split and scores it against that split's references: refs= would be ignored.
        given = "refs=" if cfg.refs is not None else "srcs="
        raise ReportError(
            f"{given} goes with hyps= (a file of translations to score); ckpt= decodes the {cfg.split} split and "
            "scores it against its own references. For your own files: nmt-translate ckpt=... input=SRC output=HYPS, "
            "then nmt-evaluate hyps=HYPS refs=REFS srcs=SRC"
        )
    if (cfg.compare is not None or cfg.compare_ckpt is not None) and cfg.bootstrap_samples < 1:  # before decoding
        raise ReportError(
            f"bootstrap_samples={cfg.bootstrap_samples}: the paired bootstrap test of compare= / compare_ckpt= "
            "needs at least 1 sample (1000 is usual)"
        )
    decoded, other_translator = None, None
    other = report.read_lines(cfg.compare, "compare") if cfg.compare is not None else None  # before decoding
    refs_name = cfg.refs or f"the {cfg.split} split"
    if cfg.hyps is not None:
        if cfg.ckpt is not None:
            log.warning("hyps= given: scoring that file; ckpt=%s is not used", cfg.ckpt)
        if cfg.refs is None:
            raise ReportError("hyps= needs refs= (the reference translations, one per line)")
        hyps, refs = report.read_lines(cfg.hyps, "hyps"), report.read_lines(cfg.refs, "refs")
        metrics.check_parallel(hyps, refs, cfg.hyps, cfg.refs)
        sources = report.read_lines(cfg.srcs, "srcs") if cfg.srcs else None
        if sources is not None:
            metrics.check_parallel(sources, refs, cfg.srcs, cfg.refs)
        if other is not None:
            metrics.check_parallel(other, refs, cfg.compare, refs_name)
        speed = model = decoding = checkpoint = None
        corpus = {"hyps": cfg.hyps, "refs": cfg.refs}
    elif cfg.ckpt is not None:
        translator = load_translator(cfg.ckpt, cfg.device, precision=cfg.precision)
        if cfg.compare_ckpt is not None:  # a wrong path fails now, not after the first decoding
            other_translator = load_translator(cfg.compare_ckpt, cfg.device, "compare_ckpt", cfg.precision)

        def check_refs(refs: list[str]) -> None:  # compare='s length, before minutes of decoding
            metrics.check_parallel(other, refs, cfg.compare, refs_name)

        decoded = decode_split(cfg, translator, check_refs=check_refs if other is not None else None)
        sources, refs, hyps, speed, model = decoded.sources, decoded.refs, decoded.hyps, decoded.speed, decoded.model
        corpus, checkpoint, decoding = decoded.corpus, decoded.translator.name, asdict(cfg.decode)
    else:
        raise ReportError("give ckpt=RUN_DIR_OR_FILE (decode a split) or hyps=FILE refs=FILE")

    scores = metrics.corpus_scores(hyps, refs, cfg.bootstrap_samples)
    by_length = metrics.bleu_by_length([len(s.split()) for s in sources], hyps, refs) if sources else []
    compare, figures, made = None, [], not report_dir.exists()
    report_dir.mkdir(parents=True, exist_ok=True)
    try:
        with OutputFiles() as outputs:  # the report and its figures appear together, or none of them
            if other is not None:
                other_name = Path(cfg.compare).name
            elif other_translator is not None:
                other_decoded = decode_split(cfg, other_translator, decoded.data)  # the same sentences, whatever it trained on
                other, other_name = other_decoded.hyps, other_decoded.translator.name
            if other is not None:
                this_name = checkpoint or "this system"
                compare = metrics.paired_bootstrap(
                    hyps, other, refs, cfg.bootstrap_samples, system_name="this system", other_name=other_name
                )
                if sources:
                    other_by_length = metrics.bleu_by_length([len(s.split()) for s in sources], other, refs)
                    with outputs.open(str(report_dir / "bleu_by_length_compared.png"), binary=True, through=False) as out:
                        plots.plot_bleu_by_length_systems({this_name: by_length, other_name: other_by_length}, out)
                    figures.append(
                        {"title": "BLEU by source sentence length, both systems", "file": "bleu_by_length_compared.png"}
                    )
            examples = report.make_examples(sources, refs, hyps, cfg.n_examples)
            if decoded is not None and has_alignments(decoded.translator.model) and cfg.n_alignments:
                figures += alignment_figures(decoded, examples, report_dir, cfg.n_alignments, outputs, earlier)
            built = report.build_report(
                scores,
                by_length,
                speed=speed,
                model=model,
                decoding=decoding,
                compare=compare,
                examples=examples,
                corpus=corpus,
                checkpoint=checkpoint,
                figures=figures,
            )
            written = report.write_report(cfg.report_dir, built, hyps, examples, outputs)
    except BaseException:
        if made and not any(report_dir.iterdir()):
            report_dir.rmdir()
        raise
    remove_stale_figures(report_dir, earlier - {figure["file"] for figure in figures})
    ci = built["ci95"]["bleu"]
    ci_text = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    speed_text = f", {speed['sentences_per_s']:.1f} sent/s" if speed else ""
    print(
        f"nmt-evaluate: BLEU {built['bleu']:.2f}{ci_text}, chrF {built['chrf']:.2f}, TER {built['ter']:.2f} "
        f"on {built['n_sentences']} sentences{speed_text}; report in {written['markdown']}"
    )
    return 0


def remove_stale_figures(report_dir: Path, stale: set[str]) -> None:
    """Remove the figures an earlier report in ``report_dir`` wrote (as its report.json lists
    them) that this one did not draw: a replaced report is replaced whole, and nothing else
    in the folder is touched (a user's own alignment-9.png stays)."""
    for name in stale - set(report.REPORT_FILES):
        path = report_dir / name
        if path.is_file() and not path.is_symlink():
            path.unlink()


def check_corpus_settings(overrides: dict[str, str]) -> None:
    corpus_settings = [key for key in overrides if key.startswith("data.")]
    if corpus_settings and "data" not in overrides:
        # Without data=, the checkpoint's corpus is used and there is no group to set keys in.
        refuse(
            f"{corpus_settings[0]}=... needs a corpus group: add data=files (plain-text files in data.path), "
            "data=hub, or another conf/data name; leave data.* out to evaluate on the checkpoint's own corpus"
        )


main = hydra_command("evaluate", EvaluateConfig, run_evaluate, check=check_corpus_settings)

if __name__ == "__main__":
    main()
