"""Typed settings: plain dataclasses, one per concern, with their defaults.

The command layer (``nmt.commands``) registers them as Hydra schemas, so every YAML
file under ``conf/`` is merged into one of them and a misspelled key or a value of
the wrong type fails before anything runs. The library takes these dataclasses (or
plain arguments) and never imports Hydra or OmegaConf.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class TokenizerConfig:
    model_type: str = "unigram"  # unigram (SentencePiece default) or bpe
    vocab_size: int = 8000
    joint: bool = True  # one model for both languages; False trains one per side
    character_coverage: float = 1.0  # 1.0 keeps every character of small alphabets
    byte_fallback: bool = True  # unseen characters become bytes, never <unk>
    max_training_sentences: int = 1_000_000  # per model (a joint model: both sides together); sampled beyond


@dataclass
class SplitNames:
    """The corpus's own name of each split: a file stem ({name}.jsonl.gz, {name}.{lang},
    {name}.tsv) or a Hub dataset's split, e.g. data.splits.validation=newstest2013."""

    train: str = "train"
    validation: str = "validation"  # for early stopping and checkpoint selection
    test: str = "test"  # scored once at the end of training, and by nmt-evaluate


@dataclass
class DataConfig:
    name: str = "bible_es_en"
    # embedded: a folder of {split}.jsonl.gz written by scripts/prepare_bible.py
    # files: plain-text {split}.{lang} (or {split}.tsv) in `path`
    # hub: datasets.load_dataset(path, hub_name) -- a Hub id or a local folder
    source: str = "embedded"
    path: str = str(CONF_DIR.parent / "data" / "bible-es-en")
    hub_name: Optional[str] = None  # the dataset's configuration, e.g. "fr-en"
    src_lang: str = "es"
    tgt_lang: str = "en"
    # hub: "translation" = {"translation": {"en": ..., "fr": ...}}; "flat" = columns named by language
    layout: str = "translation"
    format: str = "text"  # files: "text" ({split}.{lang}) or "tsv" ({split}.tsv: source<TAB>target)
    splits: SplitNames = field(default_factory=SplitNames)
    max_words: int = 250  # pairs with a side longer than this (whitespace words) are dropped
    max_length_ratio: float = 4.0  # ... or whose word counts differ by more than this factor
    max_train_pairs: int = 0  # 0 = all; >0 keeps the first N (quick experiments)
    num_proc: int = 0  # processes for cleaning and tokenizing; 0 = one per core for splits of >= 200 000 pairs
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    cache_dir: str = field(default_factory=lambda: os.environ.get("NMT_CACHE_DIR", "~/.cache/nmt"))


@dataclass
class ModelConfig:
    """Shared by every architecture (``nmt.architectures``); each reads the fields it needs."""

    name: str = "small"
    arch: str = "cho2014"  # the model class (nmt.architectures.ARCHITECTURES); checkpoints without it: cho2014
    embed_size: int = 256  # the paper: rank-100 word embeddings
    hidden_size: int = 512  # encoder and decoder GRU units; also the size of c
    maxout_size: int = 256  # maxout units (pools of 2 over 2x pre-activations)
    output_rank: int = 0  # >0 factorizes the output matrix through this rank (paper: 100)
    dropout: float = 0.1  # on embeddings and on the maxout output
    cell: str = "cudnn"  # cudnn: PyTorch's fused GRU (reset after U h) | paper: reset before U h
    paper_init: bool = False  # N(0, 0.01) weights, orthogonal recurrent matrices, zero biases
    # Not in Cho et al.: read the source backwards (Sutskever et al. 2014), so the summary
    # is written last by the words the decoder needs first. Helps a fixed-size summary.
    reverse_source: bool = False
    attention_size: int = 0  # rnnsearch: units of the alignment model (0: hidden_size)
    rnn: str = "gru"  # the recurrent unit of encoder and decoder: gru | lstm (model.cell then stays cudnn)


@dataclass
class OptimConfig:
    name: str = "default"
    optimizer: str = "adam"  # adam | adadelta
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    rho: float = 0.95  # adadelta
    eps: float = 1e-8
    weight_decay: float = 0.0
    # constant | inverse_sqrt (after warmup) | plateau (multiply by lr_decay when val stalls)
    lr_schedule: str = "plateau"
    warmup_steps: int = 0
    lr_decay: float = 0.5
    lr_patience: int = 1  # validations without improvement before a plateau decay
    min_lr: float = 1e-5
    clip_norm: float = 1.0  # 0 disables clipping
    label_smoothing: float = 0.0
    max_tokens: int = 4096  # token budget per batch: batch size x longest sequence (per rank under torchrun)
    accumulate: int = 1  # batches per optimizer step (fairseq's update_freq); with N ranks a step takes N x this
    max_subwords: int = 128  # training pairs with a longer side (subwords) are skipped
    max_epochs: int = 20
    max_steps: int = 0  # 0 = no limit
    max_minutes: float = 0.0  # wall-clock budget of this session's training loop, validation included; 0 = none
    val_every: int = 0  # steps; 0 = at the end of each epoch
    val_max_sentences: int = 0  # sentences decoded for BLEU/chrF (the loss uses all); 0 = all
    val_batch_tokens: int = 8000
    early_stopping_metric: str = "val_bleu"  # val_bleu | val_chrf | val_loss
    patience: int = 4  # validations without improvement before stopping; 0 = never stop early
    seed: int = 1
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    tf32: bool = True
    compile: bool = False  # torch.compile model.loss (graph breaks at the GRUs; the output head and loss fuse)
    deterministic: bool = False  # cuDNN deterministic kernels + CUBLAS_WORKSPACE_CONFIG
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 50  # steps between reads of the loss from the device (and progress-bar updates)
    keep_last: int = 2  # step checkpoints kept besides best.pt and last.pt
    average_last: int = 0  # >0: at the end, averaged.pt = the mean of the newest K step checkpoints (K <= keep_last)
    save_every: int = 0  # steps between step checkpoints; 0 = at each validation
    max_nonfinite_steps: int = 10  # consecutive skipped steps before training stops
    dist_timeout_minutes: float = 30.0  # torchrun: the longest wait on another rank (a dead one) before failing


@dataclass
class DecodeConfig:
    name: str = "greedy"
    beam_size: int = 1
    length_penalty: float = 1.0  # alpha: hypotheses ranked by score / length^alpha
    max_len_a: float = 1.5  # maximum output length = a * source length + b (subwords)
    max_len_b: int = 10
    min_len: int = 0
    nbest: int = 1
    batch_tokens: int = 6000  # source tokens per decoding batch (beam multiplies the work)


@dataclass
class TrainRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    resume: Optional[str] = None  # a run folder to continue exactly (from its newest checkpoint)
    # With resume=: "config" (the run's config.yaml) or "checkpoint" (the settings saved in
    # its newest checkpoint, for a config.yaml that is lost or damaged; it is rewritten)
    resume_settings: str = "config"
    evaluate_test: bool = True  # decode the test split with the best checkpoint at the end


@dataclass
class TranslateConfig:
    ckpt: Any = "???"  # a run folder or checkpoint file; a list of them ('[RUN_A,RUN_B]'): an ensemble
    input: Optional[str] = None  # default: stdin
    output: Optional[str] = None  # default: stdout
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    nbest: Optional[int] = None  # shorthand for decode.nbest (and at least that beam size)
    max_source_subwords: int = 250  # longer inputs are cut to this (counted and warned)
    replace_invalid_utf8: bool = False  # False: invalid UTF-8 is an error naming the line
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on a CPU) | float32 | bfloat16 | int8 (CPU)
    alignments: Optional[str] = None  # a file: per input line, the best translation's attention weights (JSON)


@dataclass
class EvaluateConfig:
    ckpt: Any = None  # a run folder or checkpoint file; a list of them: an ensemble
    data: Optional[DataConfig] = None  # default: the corpus the checkpoint was trained on
    split: str = "test"
    hyps: Optional[str] = None
    refs: Optional[str] = None
    srcs: Optional[str] = None  # optional sources for hyps= / refs= (length buckets, examples)
    compare: Optional[str] = None  # another system's hypotheses: paired bootstrap test, BLEU by length of both
    compare_ckpt: Any = None  # or another checkpoint (or ensemble), decoded on the same split for the same
    n_alignments: int = 3  # attention models: alignment heatmaps of this many example sentences
    report_dir: str = "report"
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    bootstrap_samples: int = 1000  # for the 95% CIs (0 or 1: none) and the paired test of compare= (at least 1)
    n_examples: int = 5
    max_sentences: int = 0  # 0 = whole split
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on a CPU) | float32 | bfloat16 | int8 (CPU)


@dataclass
class ScoreConfig:
    ckpt: Any = "???"  # a run folder or checkpoint file; a list of them: an ensemble
    input: Optional[str] = None  # TSV source<TAB>target; default: stdin
    output: Optional[str] = None
    batch_tokens: int = 8000
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on a CPU) | float32 | bfloat16 | int8 (CPU)


@dataclass
class EmbedConfig:
    ckpt: Any = "???"  # a run folder or checkpoint file
    input: Optional[str] = None  # one phrase per line; default: stdin
    output: str = "???"  # one vector per input line: .npy (float32, N x D) or .tsv
    neighbours: int = 0  # >0: each line's K nearest lines by cosine similarity, as TSV
    index: Optional[str] = None  # neighbours among this file's phrases instead of the input's
    neighbours_output: Optional[str] = None  # default: OUTPUT with .neighbours.tsv for its suffix
    plot: Optional[str] = None  # FILE.png: a 2-D map of the vectors, labelled (t-SNE; PCA for under 30 points)
    plot_points: int = 500  # the map shows the first this many non-empty lines (or words)
    words: bool = False  # embed the whole-word pieces of the source vocabulary (of input=, if given) instead of lines
    seed: int = 1  # of the map's t-SNE
    batch_tokens: int = 8000
    max_source_subwords: int = 250
    replace_invalid_utf8: bool = False
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on a CPU) | float32 | bfloat16 | int8 (CPU)


@dataclass
class AverageConfig:
    ckpt: Optional[str] = None  # a run folder: average its newest `last` step checkpoints (step-N.pt)
    last: int = 5
    ckpts: Optional[list[str]] = None  # or these checkpoint files (one architecture, size and tokenizer)
    output: str = "???"  # the averaged checkpoint (.pt), written atomically


@dataclass
class ExportConfig:
    ckpt: str = "???"  # a run folder (its best.pt), or a checkpoint file (best.pt, last.pt, an average)
    output: str = "???"  # the release folder (nmt.release): created, or an empty one
    dtype: str = "float16"  # of the weights: float16, bfloat16 or float32
    overwrite: bool = False  # replace a release already in output=
    report: Optional[str] = None  # report.json of `nmt-evaluate ckpt=...` on this checkpoint: its scores go in the model card


@dataclass
class ServedModel:
    """One language pair of nmt-serve (``models=[{ckpt: ..., source: es, target: en}]``)."""

    ckpt: Any = "???"  # a release, run folder or checkpoint; a list of them: an ensemble
    source: str = "???"  # language code of its input, as clients name it (LibreTranslate: ISO 639, e.g. es)
    target: str = "???"  # language code of its output
    decode: DecodeConfig = field(default_factory=lambda: DecodeConfig(name="beam", beam_size=5))  # a request's defaults
    max_beam_size: int = 10  # a request may ask for a beam up to this
    max_nbest: int = 5  # ... and up to this many alternatives


@dataclass
class ServeConfig:
    ckpt: Any = None  # one model (with source= and target=); or models= for several pairs
    source: Optional[str] = None
    target: Optional[str] = None
    models: Optional[list[ServedModel]] = None
    decode: DecodeConfig = field(default_factory=DecodeConfig)  # ckpt='s decoding defaults (conf/serve.yaml: beam 5)
    max_beam_size: int = 10  # ckpt='s limits on what a request may ask
    max_nbest: int = 5
    host: str = "127.0.0.1"  # 0.0.0.0 to be reached from other machines (then consider api_keys=)
    port: int = 5000  # LibreTranslate's port
    device: str = "auto"
    precision: str = "auto"  # auto (bf16 autocast on CUDA, float32 on a CPU) | float32 | bfloat16 | int8 (CPU)
    threads: int = 0  # PyTorch's threads for decoding; 0: its default (one per core)
    batching: bool = True  # decode the lines of concurrent requests together (False: one request at a time)
    batch_wait_ms: float = 5.0  # how long the first waiting line waits for others to join its batch
    batch_lines: int = 128  # at most this many lines decoded in one go
    max_lines: int = 100  # per request (413 beyond)
    max_chars: int = 20000  # per request, all lines together (413 beyond)
    max_source_subwords: int = 250  # longer lines are cut to this, as nmt-translate does
    max_queue_lines: int = 2000  # lines waiting at most; a request that would exceed it gets 503 and Retry-After
    api_keys: Optional[str] = None  # a file of keys, one per line: requests without one of them get 403
    log_file: Optional[str] = None  # one line per request (time, endpoint, lines, ms); default: stderr
    log_text: bool = False  # also log each request's lines (off: no request text in any log)


# --------------------------------------------------------------------------- allowed ranges

# The allowed values of each number. Numbers not listed must be finite and at least 0: every
# count, size and limit (a negative count would read as a Python slice from the end, so
# ``max_sentences=-1`` would quietly drop one sentence). ``check_ranges`` applies these.
_AT_LEAST_1 = (lambda v: v >= 1, "at least 1")
_POSITIVE = (lambda v: v > 0, "greater than 0")
_FRACTION = (lambda v: 0 <= v < 1, "at least 0 and below 1")
_ANY = (lambda v: True, "finite")
RANGES: dict[str, tuple] = {
    "TokenizerConfig.vocab_size": _POSITIVE,
    "TokenizerConfig.character_coverage": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    "TokenizerConfig.max_training_sentences": _AT_LEAST_1,
    "ModelConfig.embed_size": _POSITIVE,
    "ModelConfig.hidden_size": _POSITIVE,
    "ModelConfig.maxout_size": _POSITIVE,
    "ModelConfig.dropout": _FRACTION,
    "OptimConfig.lr": _POSITIVE,
    "OptimConfig.betas": _FRACTION,
    "OptimConfig.rho": _FRACTION,
    "OptimConfig.lr_decay": (lambda v: 0 < v <= 1, "above 0 and at most 1"),
    "OptimConfig.label_smoothing": _FRACTION,
    "OptimConfig.max_tokens": _POSITIVE,
    "OptimConfig.max_epochs": _POSITIVE,
    "OptimConfig.val_batch_tokens": _AT_LEAST_1,
    "OptimConfig.log_every": _AT_LEAST_1,
    "OptimConfig.max_nonfinite_steps": _AT_LEAST_1,
    "EmbedConfig.plot_points": _AT_LEAST_1,
    "OptimConfig.accumulate": _AT_LEAST_1,
    "OptimConfig.dist_timeout_minutes": _POSITIVE,
    "DecodeConfig.beam_size": _AT_LEAST_1,
    "DecodeConfig.nbest": _AT_LEAST_1,
    "DecodeConfig.length_penalty": _ANY,
    "DecodeConfig.batch_tokens": _AT_LEAST_1,
    # An output length of a * source length + b subwords: beyond these it is no limit at all.
    "DecodeConfig.max_len_a": (lambda v: 0 <= v <= 100, "at least 0 and at most 100"),
    "DecodeConfig.max_len_b": (lambda v: 0 <= v <= 10_000, "at least 0 and at most 10000"),
    "TranslateConfig.nbest": _AT_LEAST_1,
    "TranslateConfig.max_source_subwords": _AT_LEAST_1,
    "ScoreConfig.batch_tokens": _AT_LEAST_1,
    "AverageConfig.last": _AT_LEAST_1,
    "EmbedConfig.batch_tokens": _AT_LEAST_1,
    "EmbedConfig.max_source_subwords": _AT_LEAST_1,
    "ServedModel.max_beam_size": _AT_LEAST_1,
    "ServedModel.max_nbest": _AT_LEAST_1,
    "ServeConfig.max_beam_size": _AT_LEAST_1,
    "ServeConfig.max_nbest": _AT_LEAST_1,
    "ServeConfig.port": (lambda v: 0 <= v <= 65535, "a port number, 0 to 65535 (0: any free port)"),
    "ServeConfig.batch_lines": _AT_LEAST_1,
    "ServeConfig.max_lines": _AT_LEAST_1,
    "ServeConfig.max_chars": _AT_LEAST_1,
    "ServeConfig.max_source_subwords": _AT_LEAST_1,
    "ServeConfig.max_queue_lines": _AT_LEAST_1,
}
_DEFAULT_RANGE = (lambda v: v >= 0, "at least 0")


def check_ranges(cfg: Any, prefix: str = "") -> None:
    """Raise ``SettingError`` for the first number of ``cfg`` (a config dataclass, nested
    ones too) outside its range in ``RANGES``, naming the setting and the range."""
    from nmt.errors import SettingError

    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{key}.")
            continue
        values = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(values):
            if dataclasses.is_dataclass(item):  # a list of groups (nmt-serve's models=)
                check_ranges(item, f"{key}[{i}].")
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        allowed, described = RANGES.get(f"{type(cfg).__name__}.{f.name}", _DEFAULT_RANGE)
        for number in numbers:
            if not math.isfinite(number):
                raise SettingError(f"{key}={value}: must be a finite number" + ("" if allowed is _ANY[0] else f", {described}"))
            if not allowed(number):
                raise SettingError(f"{key}={value}: must be {described}")


def from_dict(schema: type, values: dict[str, Any], prefix: str = "") -> Any:
    """A dataclass (nested ones too) from plain data, e.g. a checkpoint's saved settings,
    checked as the command line's settings are: each value of its field's type (text that
    reads as one is taken, as ``key=512`` on the command line is: ``"512"`` is 512) and in
    its range (``check_ranges``).

    Keys the schema lacks (settings of another version) are dropped and missing ones
    take their defaults, so checkpoints of older versions keep loading. Raises
    ``SettingError`` naming the setting for a value that does not fit.
    """
    from nmt.errors import SettingError

    if not isinstance(values, dict):
        raise SettingError(f"{prefix.rstrip('.') or schema.__name__}: expected a group of settings, found {values!r}")
    hints = typing.get_type_hints(schema)
    kwargs = {}
    for key, value in values.items():
        if key not in hints:
            logging.getLogger(__name__).warning(
                "%s: ignoring the saved setting %s=%r, which this version does not have", schema.__name__, key, value
            )
            continue
        nested = dataclass_of(hints[key])
        if nested is not None and isinstance(value, dict):
            kwargs[key] = from_dict(nested, value, f"{prefix}{key}.")
        elif nested is not None and value is not None:
            raise SettingError(f"{prefix}{key}={value!r}: expected a group of settings ({nested.__name__})")
        else:
            kwargs[key] = _typed(value, hints[key], f"{prefix}{key}")
    config = schema(**kwargs)
    if not prefix:
        check_ranges(config)
    return config


_KINDS = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}


def _typed(value: Any, annotation: Any, key: str) -> Any:
    """``value`` as a value of ``annotation`` (a number, flag, text, list of them, or Optional
    of one), converting text that reads as one; ``SettingError`` naming ``key`` otherwise."""
    from nmt.errors import SettingError

    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _typed(value, option, key)
            except SettingError as err:
                errors.append(err)
        raise errors[0]
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise SettingError(f"{key}={value!r}: expected a list")
        return [_typed(item, args[0] if args else Any, key) for item in value]
    if annotation in _KINDS:
        if isinstance(value, str) and annotation is not str:
            text = value.strip().lower()
            if annotation is bool and text in ("true", "false"):
                return text == "true"
            try:
                converted = annotation(text) if annotation is not bool else None
            except ValueError:
                converted = None
            if converted is not None and (annotation is not int or "." not in text):
                return converted
        elif isinstance(value, bool):
            if annotation is bool:
                return value
        elif annotation is float and isinstance(value, (int, float)):
            return float(value)
        elif annotation is str and isinstance(value, (int, float)):
            return str(value)
        elif isinstance(value, annotation):
            return value
        raise SettingError(f"{key}={value!r}: expected {_KINDS[annotation]}")
    return value  # an enum-like or other type: as saved


def saved_data_path(path: str) -> str:
    """``data.path`` as a run's config.yaml keeps it: absolute where it names something here,
    so that the saved config works from any folder (a Hub name stays as it is)."""
    local = Path(path).expanduser()
    return str(local.resolve()) if path and local.exists() else path


def dataclass_of(annotation: Any) -> type | None:
    """The dataclass behind a field's type (``Optional[DataConfig]`` -> DataConfig), or None."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None
