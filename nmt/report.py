"""Evaluation reports (the layer under ``nmt-evaluate``): ``report.json``, ``report.md``,
``hypotheses.txt`` and ``bleu_by_length.png`` from the numbers of ``nmt.metrics``.

Input files are read strictly (one segment per ``\\n``, never ``str.splitlines``, which
would shift hypotheses against references); the markdown escapes MT output so that
it renders as text; the plot needs no display.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import sacrebleu

from nmt.errors import CorpusError, ReportError
from nmt.lines import read_lines as read_text_lines
from nmt.metrics import METRIC_LABELS as _METRIC_LABELS
from nmt.metrics import check_parallel
from nmt.output_files import OutputFiles
from nmt.plots import plot_bleu_by_length

log = logging.getLogger(__name__)

# Keys ``write_report`` insists on: the markdown report cannot be rendered
# without them, and downstream tooling reads them from report.json.
REQUIRED_REPORT_KEYS = ("bleu", "chrf", "ter", "signatures", "n_sentences", "bleu_by_length")


# --------------------------------------------------------------------------- #
# Input                                                                        #
# --------------------------------------------------------------------------- #


def read_lines(path: str | Path, setting: str | None = None) -> list[str]:
    """One segment per ``\\n``-terminated line (``nmt.lines.read_lines``: never
    ``str.splitlines``, which would shift hypotheses against references).
    ``setting`` (e.g. ``"refs"``) names the command-line setting in errors.

    Raises:
        ReportError: the file cannot be read, or is not valid UTF-8 (the
            message names the file and the 1-based line number).
    """
    try:
        return read_text_lines(Path(path))
    except OSError as exc:
        where = f"{setting}={path}" if setting else str(path)
        raise ReportError(f"cannot read {where}: {exc.strerror or exc}") from exc
    except CorpusError as exc:
        raise ReportError(str(exc)) from None


# --------------------------------------------------------------------------- #
# Report assembly                                                              #
# --------------------------------------------------------------------------- #


def _jsonable(value: Any) -> Any:
    # Settings arrive as dataclasses, Paths, numpy scalars, tuples...; make
    # them plain JSON so report.json never fails at the very end of a run.
    if is_dataclass(value) and not isinstance(value, type):
        return _jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return [_jsonable(v) for v in items]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def make_examples(
    sources: Sequence[str] | None,
    refs: Sequence[str],
    hyps: Sequence[str],
    n: int = 5,
    seed: int = 12345,
) -> list[dict[str, Any]]:
    """Pick ``n`` example sentences (seeded, in corpus order) for the report.

    Returns:
        ``[{"line": 1-based line number, "source": str | None,
        "reference": str, "hypothesis": str}, ...]``.
    """
    check_parallel(hyps, refs, "hypotheses", "references")
    if sources is not None:
        check_parallel(sources, refs, "sources", "references")
    # A random sample rather than the first n lines: test sets are often
    # ordered by document, and the first lines are headlines.
    chosen = sorted(random.Random(seed).sample(range(len(hyps)), min(n, len(hyps))))
    return [
        {
            "line": i + 1,
            "source": sources[i] if sources is not None else None,
            "reference": refs[i],
            "hypothesis": hyps[i],
        }
        for i in chosen
    ]


def build_report(
    scores: Mapping[str, Any],
    by_length: Sequence[Mapping[str, Any]] | None = None,
    *,
    speed: Mapping[str, Any] | None = None,
    model: Mapping[str, Any] | None = None,
    decoding: Mapping[str, Any] | None = None,
    compare: Mapping[str, Any] | None = None,
    examples: Sequence[Mapping[str, Any]] | None = None,
    corpus: Mapping[str, Any] | str | None = None,
    checkpoint: str | Path | None = None,
    figures: Sequence[Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Assemble the ``report.json`` dict from the pieces of an evaluation.

    Args:
        scores: the output of :func:`corpus_scores`.
        by_length: rows from :func:`bleu_by_length` (``None``/empty when no
            sources were available).
        speed: ``{"sentences_per_s", "tgt_tokens_per_s", "seconds"}``.
        model: model settings (dict or dataclass).
        decoding: decoding settings (beam size, length penalty, ...).
        compare: the output of :func:`paired_bootstrap`, or ``None``.
        examples: e.g. from :func:`make_examples`.
        corpus: a name/split dict or file names.
        checkpoint: the evaluated checkpoint, if any.
        figures: more figures in the report folder, ``[{"title", "file"}]`` (``nmt.plots``).
    """
    return _jsonable(
        {
            "bleu": scores["bleu"]["score"],
            "chrf": scores["chrf"]["score"],
            "ter": scores["ter"]["score"],
            "ci95": {name: scores[name]["ci95"] for name in _METRIC_LABELS},
            "signatures": {name: scores[name]["signature"] for name in _METRIC_LABELS},
            "bleu_details": scores.get("bleu_details"),
            "bootstrap": scores.get("bootstrap"),
            "n_sentences": scores["n_sentences"],
            "bleu_by_length": list(by_length or []),
            "speed": speed,
            "model": model,
            "decoding": decoding,
            "compare": compare,
            "examples": list(examples or []),
            "corpus": corpus,
            "checkpoint": checkpoint,
            "figures": list(figures or []),
            "sacrebleu_version": sacrebleu.__version__,
        }
    )


# --------------------------------------------------------------------------- #
# Markdown                                                                     #
# --------------------------------------------------------------------------- #


def _md(text: Any) -> str:
    """Escape text for a markdown table cell or list item.

    ``|`` would end a table cell; ``<unk>``-style tokens would be swallowed as
    HTML tags; ``*``, ``_``, backticks and brackets would turn MT output into
    emphasis, code or links.
    """
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = s.replace("\\", "\\\\")
    for ch in "|*_`[]#":
        s = s.replace(ch, "\\" + ch)
    # One segment never spans lines in a table or list item.
    return s.replace("\r", " ").replace("\n", " ")


def _num(value: Any, digits: int = 2) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{float(value):.{digits}f}"


def _ci_text(ci: Sequence[float] | None) -> str:
    return f"[{_num(ci[0])}, {_num(ci[1])}]" if ci else "–"


def _flatten(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    # Nested settings (e.g. model.encoder.hidden_size) read better as dotted
    # keys in a two-column table than as a JSON blob.
    items: list[tuple[str, Any]] = []
    for key, value in settings.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            items.extend(_flatten(value, name + "."))
        else:
            items.append((name, value))
    return items


def _settings_table(settings: Mapping[str, Any]) -> list[str]:
    lines = ["| Setting | Value |", "|---|---|"]
    for key, value in _flatten(settings):
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value
        lines.append(f"| {_md(key)} | {_md('null' if shown is None else shown)} |")
    return lines


def _corpus_text(corpus: Any) -> str:
    # {"name": "wmt14", "split": "test", "src_lang": "en", "tgt_lang": "fr"} reads best as
    # "wmt14 (test), en-fr"; other shapes (e.g. {"hyps": ..., "refs": ...} file names) as
    # key: value pairs.
    if isinstance(corpus, Mapping):
        if corpus.get("name") and set(corpus) <= {"name", "split", "src_lang", "tgt_lang"}:
            text = str(corpus["name"]) + (f" ({corpus['split']})" if corpus.get("split") else "")
            if corpus.get("src_lang") and corpus.get("tgt_lang"):
                text += f", {corpus['src_lang']}-{corpus['tgt_lang']}"
            return text
        return ", ".join(f"{k}: {v}" for k, v in corpus.items() if v is not None)
    return str(corpus)


def render_markdown(report: Mapping[str, Any], plot_name: str | None = "bleu_by_length.png") -> str:
    """Render a ``build_report`` dict as a human-readable markdown report."""
    out: list[str] = []
    title = "Evaluation report"
    if report.get("corpus"):
        title += f": {_md(_corpus_text(report['corpus']))}"
    out += [f"# {title}", ""]
    if report.get("checkpoint"):
        out.append(f"- Checkpoint: `{report['checkpoint']}`")
    out.append(f"- Sentences: {report['n_sentences']}")
    out.append("")

    # Scores with CIs.
    ci = report.get("ci95") or {}
    boot = report.get("bootstrap") or {}
    out += ["## Scores", "", "| Metric | Score | 95% CI |", "|---|---:|---|"]
    for name, label in _METRIC_LABELS.items():
        suffix = " (lower is better)" if name == "ter" else ""
        out.append(f"| {label}{suffix} | {_num(report[name])} | {_ci_text(ci.get(name))} |")
    out.append("")
    if boot.get("samples"):
        out += [
            f"95% CIs: percentile bootstrap, {boot['samples']} resamples of the scored sentences, seed {boot.get('seed')}.",
            "",
        ]
    details = report.get("bleu_details")
    if details:
        precisions = "/".join(f"{p:.1f}" for p in details["precisions"])
        out += [
            f"BLEU n-gram precisions {precisions}, brevity penalty {details['bp']:.3f}, "
            f"hypothesis/reference length {details['sys_len']}/{details['ref_len']} "
            f"(ratio {details.get('ratio', 0.0):.3f}).",
            "",
        ]

    out += ["### sacreBLEU signatures", "", "```"]
    for name, label in _METRIC_LABELS.items():
        out.append(f"{label}: {report['signatures'][name]}")
    out += ["```", ""]

    compare = report.get("compare")
    if compare:
        sys_name = compare.get("system_name", "system")
        oth_name = compare.get("other_name", "other")
        out += [
            "## Paired significance test",
            "",
            f"{_md(sys_name)} vs. {_md(oth_name)}: {compare.get('method', 'paired bootstrap')}, "
            f"{compare.get('samples')} resamples, seed {compare.get('seed')}; "
            "significant when p < 0.05.",
            "",
            f"| Metric | {_md(sys_name)} | {_md(oth_name)} | Δ | 95% CI of Δ | p | Significant |",
            "|---|---:|---:|---:|---|---:|---|",
        ]
        for name, label in _METRIC_LABELS.items():
            r = compare.get(name)
            if not r:
                continue
            verdict = f"yes ({_md(r['better'])} better)" if r["significant"] else "no"
            out.append(
                f"| {label} | {_num(r['system'])} | {_num(r['other'])} | "
                f"{float(r['difference']):+.2f} | {_ci_text(r.get('difference_ci95'))} | "
                f"{_num(r['p_value'], 4)} | {verdict} |"
            )
        out.append("")

    out += ["## BLEU by source sentence length", ""]
    rows = report.get("bleu_by_length") or []
    if rows:
        out += ["| Source length (words) | Sentences | BLEU | chrF |", "|---|---:|---:|---:|"]
        for r in rows:
            out.append(f"| {_md(r['bucket'])} | {r['n_sentences']} | {_num(r['bleu'])} | {_num(r.get('chrf'))} |")
        out.append("")
        if plot_name:
            out += [f"![BLEU by source sentence length]({plot_name})", ""]
    else:
        out += ["Not available (no source sentences were given).", ""]

    speed = report.get("speed")
    if speed:
        out += [
            "## Decoding speed",
            "",
            "| Sentences/s | Target tokens/s | Seconds |",
            "|---:|---:|---:|",
            f"| {_num(speed.get('sentences_per_s'), 1)} | {_num(speed.get('tgt_tokens_per_s'), 1)} | "
            f"{_num(speed.get('seconds'), 2)} |",
            "",
        ]

    for key, heading in (("model", "Model settings"), ("decoding", "Decoding settings")):
        settings = report.get(key)
        if settings:
            out += [f"## {heading}", "", *_settings_table(settings), ""]

    examples = report.get("examples") or []
    if examples:
        out += ["## Examples", ""]
        for k, ex in enumerate(examples, 1):
            where = f" (line {ex['line']})" if ex.get("line") is not None else ""
            out.append(f"- **Example {k}**{where}")
            if ex.get("source") is not None:
                out.append(f"  - Source: {_md(ex['source'])}")
            out.append(f"  - Reference: {_md(ex.get('reference', ''))}")
            out.append(f"  - Hypothesis: {_md(ex.get('hypothesis', ''))}")
        out.append("")

    for figure in report.get("figures") or []:
        out += [f"## {_md(figure['title'])}", "", f"![{_md(figure['title'])}]({figure['file']})", ""]
    return "\n".join(out).rstrip("\n") + "\n"


# The files ``write_report`` writes into a report folder.
REPORT_FILES = ("report.json", "report.md", "hypotheses.txt", "bleu_by_length.png")


def write_report(
    report_dir: str | Path,
    report: Mapping[str, Any],
    hypotheses: Sequence[str],
    examples: Sequence[Mapping[str, Any]] | None = None,
    outputs: OutputFiles | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``hypotheses.txt`` and ``bleu_by_length.png``.

    Args:
        report_dir: created if missing; an earlier report there is replaced (with a warning).
        report: the dict from :func:`build_report`; written to JSON as given
            (it must contain at least :data:`REQUIRED_REPORT_KEYS`).
        hypotheses: the scored system outputs, one per line.
        examples: example sentences for the markdown; when given and the
            report has none, they are also stored in ``report.json``.
        outputs: the files are written through it, to appear with the caller's others (its
            figures) when it commits; without it they appear together when this returns.

    Returns:
        ``{"json", "markdown", "hypotheses", "plot"}`` -> paths (no ``"plot"``
        when the report has no by-length rows).

    Raises:
        ReportError: the report lacks a required key.
        OutputError: a file that could not be written (named), or a name there that is not a
            regular file (a device, a FIFO), which the report would replace.
    """
    missing = [key for key in REQUIRED_REPORT_KEYS if key not in report]
    if missing:
        raise ReportError(f"report is missing required keys: {', '.join(missing)}")
    if outputs is None:
        with OutputFiles() as own:
            return write_report(report_dir, report, hypotheses, examples, own)
    report = dict(report)
    if examples is not None and not report.get("examples"):
        report["examples"] = _jsonable(list(examples))

    out_dir = Path(report_dir)
    earlier = earlier_report_files(out_dir)
    if earlier:
        log.warning("%s: replacing the report there (report_dir=... keeps reports apart)", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}

    def write(name: str, text: str) -> Path:
        with outputs.open(str(out_dir / name), through=False) as out:
            out.write(text)
        return out_dir / name

    # A newline inside a hypothesis would shift every later line of
    # hypotheses.txt against the references; keep the file line-parallel.
    clean = []
    for i, hyp in enumerate(hypotheses):
        if "\n" in hyp or "\r" in hyp:
            log.warning("hypothesis %d contains a line break; written with spaces instead", i + 1)
            hyp = hyp.replace("\r", " ").replace("\n", " ")
        clean.append(hyp)
    paths["hypotheses"] = write("hypotheses.txt", "".join(h + "\n" for h in clean))

    rows = report.get("bleu_by_length") or []
    plot_name = None
    if rows:
        title = "BLEU by source sentence length"
        if report.get("corpus"):
            title += f": {_corpus_text(report['corpus'])}"
        with outputs.open(str(out_dir / "bleu_by_length.png"), binary=True, through=False) as out:
            plot_bleu_by_length(rows, out, title)
        paths["plot"] = out_dir / "bleu_by_length.png"
        plot_name = paths["plot"].name
    elif "bleu_by_length.png" in earlier:  # never leave an earlier report's plot beside this report
        (out_dir / "bleu_by_length.png").unlink(missing_ok=True)

    paths["json"] = write("report.json", json.dumps(_jsonable(report), indent=2, ensure_ascii=False) + "\n")
    paths["markdown"] = write("report.md", render_markdown(report, plot_name))
    return paths


def earlier_report_files(report_dir: Path) -> set[str]:
    """The files an earlier report in ``report_dir`` wrote, as its report.json lists them (its
    plot and figures, besides ``REPORT_FILES``); empty where the folder holds no report. Only
    these may be removed when a new report replaces it: the folder's other files are not ours."""
    try:
        earlier = json.loads((Path(report_dir) / "report.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    if not isinstance(earlier, dict):
        return set()
    figures = earlier.get("figures") if isinstance(earlier.get("figures"), list) else []
    names = {figure.get("file") for figure in figures if isinstance(figure, dict)}
    drawn = {name for name in names if isinstance(name, str) and FIGURE_NAMES.fullmatch(name)}  # a crafted list names no other
    plot = {"bleu_by_length.png"} if earlier.get("bleu_by_length") else set()
    return drawn | plot | {"report.json", "report.md", "hypotheses.txt"}


# The figures nmt-evaluate may add beside ``REPORT_FILES`` (report.json lists those it drew).
FIGURE_NAMES = re.compile(r"bleu_by_length_compared\.png|alignment-[0-9]+\.png")
