"""SentencePiece subwords, trained on the train split and cached by content hash.

Ids are fixed across every model this toolkit trains: pad 0, unk 1, bos 2, eos 3.
Byte fallback is on by default, so no character of an input ever becomes <unk>.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import random
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np
import pyarrow as pa
import sentencepiece as spm

from nmt.caches import map_rebuilding_damaged_cache
from nmt.config import TokenizerConfig
from nmt.data import text_column, worker_processes
from nmt.errors import CorpusError, SettingError, check_choice
from nmt.tokens import BOS, EOS, PAD, UNK

if TYPE_CHECKING:  # datasets takes a second to import: only what reads a corpus imports it
    import datasets

log = logging.getLogger(__name__)
_UMASK = os.umask(0)
os.umask(_UMASK)

# What the tokenized cache holds (its key includes this): bump it when encode() or the columns change.
TOKENIZED_FORMAT = "ids-int32-train-without-text-v2"
MODEL_TYPES = ("unigram", "bpe")  # SentencePiece's model types this toolkit offers


class Tokenizer:
    """Source and target SentencePiece models (one shared model when joint).

    Held as serialized model protos, so a checkpoint can carry its tokenizer and a
    single checkpoint file translates with nothing else beside it.
    """

    def __init__(self, src_proto: bytes, tgt_proto: bytes | None = None):
        self.src_proto = src_proto
        self.tgt_proto = src_proto if tgt_proto is None else tgt_proto
        self.src = spm.SentencePieceProcessor(model_proto=self.src_proto)
        self.tgt = self.src if self.joint else spm.SentencePieceProcessor(model_proto=self.tgt_proto)
        for sp in (self.src, self.tgt):
            ids = (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id())
            if ids != (PAD, UNK, BOS, EOS):
                raise CorpusError(f"SentencePiece model has special ids {ids}, expected {(PAD, UNK, BOS, EOS)}")

    @classmethod
    def from_files(cls, src_model: Path, tgt_model: Path | None = None) -> "Tokenizer":
        src = Path(src_model).read_bytes()
        return cls(src, None if tgt_model is None else Path(tgt_model).read_bytes())

    @property
    def joint(self) -> bool:
        return self.tgt_proto == self.src_proto

    def identity(self) -> tuple[str, str]:
        """What decides how each side encodes and decodes (``model_identity``), source and target."""
        return model_identity(self.src_proto), model_identity(self.tgt_proto)

    @property
    def src_vocab_size(self) -> int:
        return self.src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        return self.tgt.get_piece_size()

    def fingerprint(self) -> str:
        """A short key of ``identity()``: two builds of one tokenizer share their tokenized caches."""
        return hashlib.sha256("\x00".join(self.identity()).encode()).hexdigest()[:16]

    def encode_src(self, texts: list[str]) -> list[list[int]]:
        return self.src.encode(texts)

    def encode_tgt(self, texts: list[str]) -> list[list[int]]:
        return self.tgt.encode(texts)

    def decode_tgt(self, ids: list[list[int]]) -> list[str]:
        return self.tgt.decode(ids)

    def save(self, folder: Path) -> None:
        """Write spm.model (joint) or spm.src.model + spm.tgt.model into ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        from nmt.run_folder import write_atomically  # whole or not at all, like every file of a run

        if self.joint:
            write_atomically(folder / "spm.model", self.src_proto)
        else:
            write_atomically(folder / "spm.src.model", self.src_proto)
            write_atomically(folder / "spm.tgt.model", self.tgt_proto)

    @classmethod
    def load(cls, folder: Path) -> "Tokenizer":
        folder = Path(folder)
        if (folder / "spm.model").exists():
            return cls.from_files(folder / "spm.model")
        return cls.from_files(folder / "spm.src.model", folder / "spm.tgt.model")


# The TrainerSpec fields (sentencepiece_model.proto) that change how text is encoded or decoded:
# model_type, treat_whitespace_as_suffix, allow_whitespace_only_pieces, byte_fallback, the special
# ids, pieces and unk_surface. The others (input paths, threads, sampling sizes) only say how
# the model was trained.
_ENCODING_TRAINER_FIELDS = frozenset({3, 24, 26, 35, 40, 41, 42, 43, 44, 45, 46, 47, 48})


def _proto_fields(data: bytes) -> list[tuple[int, bytes]]:
    """The top-level fields of a serialized protobuf message, as (field number, raw bytes of the
    field with its tag), in order. Raises ValueError on bytes that are not a message."""

    def varint(at: int) -> tuple[int, int]:
        value, shift = 0, 0
        while True:
            if at >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            byte = data[at]
            value |= (byte & 0x7F) << shift
            at, shift = at + 1, shift + 7
            if not byte & 0x80:
                return value, at

    fields, at = [], 0
    while at < len(data):  # (IndexError cannot happen: varint() checks its bounds)
        start = at
        tag, at = varint(at)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, at = varint(at)
        elif wire == 1:
            at += 8
        elif wire == 2:
            length, at = varint(at)
            at += length
        elif wire == 5:
            at += 4
        else:
            raise ValueError(f"wire type {wire}")
        if at > len(data) or number == 0:
            raise ValueError("truncated field")
        fields.append((number, data[start:at]))
    return fields


def model_identity(proto: bytes) -> str:
    """A SentencePiece model's identity: a digest of what decides its ids and texts (the pieces
    with their scores and types, the normalizer and denormalizer, the model type, byte fallback
    and the special ids and pieces), not of the bytes. SentencePiece records in the saved model
    where it was trained from (a temporary file's path), so two builds of one tokenizer can
    differ in bytes and still encode every text alike; those two have one identity."""
    digest = hashlib.sha256()
    try:
        for number, raw in _proto_fields(proto):
            if number == 2:  # trainer_spec: only the fields that encoding reads
                if raw[0] & 7 != 2:  # (a one-byte tag: field 2) not a message: no model proto
                    raise ValueError("trainer_spec is not length-delimited")
                body = raw[len(raw) - _payload_length(raw) :]
                kept = b"".join(field for sub, field in _proto_fields(body) if sub in _ENCODING_TRAINER_FIELDS)
                digest.update(b"trainer_spec" + kept)
            elif number in (1, 3, 5):  # pieces, normalizer_spec, denormalizer_spec
                digest.update(raw)
    except ValueError:  # not a model proto at all: only the bytes say what it is
        return hashlib.sha256(b"bytes" + proto).hexdigest()
    return digest.hexdigest()


def _payload_length(field: bytes) -> int:
    """The length of a length-delimited field's payload (the varint after its tag)."""
    at = 0
    while field[at] & 0x80:  # the tag
        at += 1
    value, shift, at = 0, 0, at + 1
    while True:
        byte = field[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return value


# Python strings, or an Arrow column (``nmt.data.text_column``).
Texts = Union[list[str], pa.Array, pa.ChunkedArray]


def _as_arrow(texts) -> pa.ChunkedArray:
    """Texts as one Arrow type (large_string), whatever they came as."""
    if isinstance(texts, pa.ChunkedArray):
        return texts.cast(pa.large_string())
    if isinstance(texts, pa.Array):
        return pa.chunked_array([texts.cast(pa.large_string())])
    return pa.chunked_array([pa.array(list(texts), type=pa.large_string())], type=pa.large_string())


def _digest_texts(digest, texts) -> None:
    """Feed the texts' content to ``digest``: their bytes and their lengths, read from the
    Arrow buffers (a second per gigabyte, not a Python call per sentence). The same texts
    give the same digest however they are chunked or typed."""
    lengths, data = hashlib.sha256(), hashlib.sha256()
    for chunk in _as_arrow(texts).chunks:
        if not len(chunk):
            continue
        if chunk.null_count:
            chunk = chunk.fill_null("")
        _, offset_buffer, data_buffer = chunk.buffers()
        offsets = np.frombuffer(offset_buffer, dtype=np.int64, count=chunk.offset + len(chunk) + 1)[chunk.offset :]
        lengths.update(np.diff(offsets).tobytes())
        if data_buffer is not None and len(offsets):
            data.update(memoryview(data_buffer)[offsets[0] : offsets[-1]])
    digest.update(lengths.digest() + data.digest())


def _fingerprint(*parts) -> str:
    """Settings (plain data) and texts, hashed together."""
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, (dict, str, int, float)):
            digest.update(json.dumps(part, sort_keys=True).encode("utf-8"))
        else:
            _digest_texts(digest, part)
        digest.update(b"\x00")
    return digest.hexdigest()[:16]


def _train_model(texts: pa.ChunkedArray, cfg: TokenizerConfig, model_path: Path) -> None:
    if len(texts) > cfg.max_training_sentences:
        # SentencePiece would sample anyway; sampling first spares handing it (and holding
        # as Python strings) millions of lines.
        keep = random.Random(1).sample(range(len(texts)), cfg.max_training_sentences)
        texts = texts.take(sorted(keep))
    model = io.BytesIO()
    try:
        # From memory to memory: no temporary file whose random path SentencePiece would record
        # in the model, so the same texts and settings build the same bytes.
        _run_trainer(iter(texts.to_pylist()), model, cfg)
    except RuntimeError as err:
        if "Vocabulary size is smaller than required_chars" in str(err):
            raise SettingError(
                f"data.tokenizer.vocab_size={cfg.vocab_size} is too small for this corpus's characters "
                f"(plus 256 byte-fallback pieces): {str(err).split('. ')[-2]}; raise it"
            ) from None
        raise
    model_path.parent.mkdir(parents=True, exist_ok=True)
    # Atomic: a concurrent run sees the old state or the whole model, never half; each writer
    # has a temporary file of its own.
    fd, partial = tempfile.mkstemp(dir=model_path.parent, prefix=f".{model_path.name}.", suffix=".partial")
    try:
        with open(fd, "wb") as out:
            out.write(model.getvalue())
        os.chmod(partial, 0o666 & ~_UMASK)  # mkstemp's files are private; a shared cache's need not be
        os.replace(partial, model_path)
        partial = None
    finally:
        if partial is not None:
            os.unlink(partial)


def _run_trainer(sentences, model_writer, cfg: TokenizerConfig) -> None:
    spm.SentencePieceTrainer.train(
        sentence_iterator=sentences,
        model_writer=model_writer,
        model_type=cfg.model_type,
        vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage,
        byte_fallback=cfg.byte_fallback,
        pad_id=PAD,
        unk_id=UNK,
        bos_id=BOS,
        eos_id=EOS,
        input_sentence_size=cfg.max_training_sentences,
        shuffle_input_sentence=True,
        # A small corpus may not support the requested size: take what it has.
        hard_vocab_limit=False,
        num_threads=2,
        minloglevel=2,
    )


def build_tokenizer(train_src: Texts, train_tgt: Texts, cfg: TokenizerConfig, cache_dir: Path) -> Tokenizer:
    """Train SentencePiece on the train split, or reuse the model cached for the same data and settings.

    ``train_src`` / ``train_tgt``: lists of strings, or Arrow columns (``nmt.data.text_column``).
    """
    check_choice("data.tokenizer.model_type", cfg.model_type, MODEL_TYPES)
    settings = {**asdict(cfg), "sentencepiece": spm.__version__}
    cache_dir = Path(cache_dir).expanduser() / "spm"
    spm.set_random_generator_seed(1)  # reproducible sampling of large corpora
    train_src, train_tgt = _as_arrow(train_src), _as_arrow(train_tgt)
    if cfg.joint:
        key = _fingerprint(settings, train_src, train_tgt)
        path = cache_dir / f"joint-{key}.model"
        if not _reusable(path):
            log.info("tokenizer: training joint %s model (%d subwords)", cfg.model_type, cfg.vocab_size)
            _train_model(pa.chunked_array(train_src.chunks + train_tgt.chunks, type=pa.large_string()), cfg, path)
        return _report_size(Tokenizer.from_files(path), cfg)
    paths = []
    for side, texts in (("src", train_src), ("tgt", train_tgt)):
        path = cache_dir / f"{side}-{_fingerprint(settings, texts)}.model"
        if not _reusable(path):
            log.info("tokenizer: training %s %s model (%d subwords)", side, cfg.model_type, cfg.vocab_size)
            _train_model(texts, cfg, path)
        paths.append(path)
    return _report_size(Tokenizer.from_files(*paths), cfg)


def _reusable(path: Path) -> bool:
    """Whether the cached model ``path`` exists and loads; a damaged one is deleted (and then retrained)."""
    if not path.exists():
        return False
    try:
        spm.SentencePieceProcessor(model_file=str(path))
    except (RuntimeError, OSError):  # SentencePiece: "INTERNAL: ... ParseFromArray"
        log.warning("tokenizer: the cached %s is damaged (not a SentencePiece model); training it again", path)
        path.unlink(missing_ok=True)
        return False
    log.info("tokenizer: reusing %s", path)
    return True


def _report_size(tokenizer: Tokenizer, cfg: TokenizerConfig) -> Tokenizer:
    """Say when the vocabulary is smaller than asked (``hard_vocab_limit=False``: a small
    corpus gets what it supports), since the model's embedding tables follow the real size."""
    sizes = {tokenizer.src_vocab_size, tokenizer.tgt_vocab_size}
    if min(sizes) < cfg.vocab_size:  # separate models: either side may fall short
        real = " / ".join(str(size) for size in sorted(sizes))
        log.warning(
            "tokenizer: %s subwords, not data.tokenizer.vocab_size=%d: the training text supports no more", real, cfg.vocab_size
        )
    return tokenizer


def tokenize_corpus(
    corpus: datasets.DatasetDict, tokenizer: Tokenizer, cache_dir: Path, num_proc: int = 0
) -> datasets.DatasetDict:
    """Add ``src_ids`` and ``tgt_ids`` columns (batched ``datasets.map``, cached on disk).

    Ids are stored as int32. The train split keeps only its ids (training reads nothing
    else, and at WMT'14 scale a second copy of the text costs gigabytes of disk); the
    evaluation splits keep their text for BLEU. ``num_proc``: processes (``data.num_proc``;
    0 = one per core for large splits).
    """
    import datasets

    cache_dir = Path(cache_dir).expanduser() / "tokenized"
    cache_dir.mkdir(parents=True, exist_ok=True)
    model_key = tokenizer.fingerprint()

    def encode(batch):
        return {"src_ids": tokenizer.encode_src(batch["src"]), "tgt_ids": tokenizer.encode_tgt(batch["tgt"])}

    out = {}
    for split, table in corpus.items():
        drop_text = split == "train"
        features = datasets.Features({} if drop_text else dict(table.features))
        features["src_ids"] = features["tgt_ids"] = datasets.List(datasets.Value("int32"))
        # The columns' types too: the same text read from CSV (string) and JSON lines (large_string)
        # makes two files, as datasets cannot load one with the other's features.
        texts = text_column(table, "src"), text_column(table, "tgt")
        key = _fingerprint(TOKENIZED_FORMAT, model_key, str(features), *texts)
        cache_file = cache_dir / f"{split}-{key}.arrow"
        out[split] = map_rebuilding_damaged_cache(  # checks the cache file (or num_proc shards) it reuses
            table,
            f"the tokenized {split} split cached under {cache_dir}",
            check=lambda result: ids_problem(result, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size),
            function=encode,
            batched=True,
            batch_size=2000,
            num_proc=worker_processes(num_proc, len(table)),
            remove_columns=["src", "tgt"] if drop_text else None,
            features=features,
            cache_file_name=str(cache_file),
            load_from_cache_file=True,
            desc=f"tokenizing {split}",
        )
    return datasets.DatasetDict(out)


def ids_problem(table: datasets.Dataset, src_vocab_size: int, tgt_vocab_size: int) -> str | None:
    """Where a tokenized table holds an id outside its vocabulary (a damaged cache: Arrow files
    carry no checksums, and such an id would fail deep in the model, on a GPU as a device-side
    assert), or None. One min/max over each column's Arrow buffer: no Python per sentence."""
    import pyarrow.compute as pc

    for column, size in (("src_ids", src_vocab_size), ("tgt_ids", tgt_vocab_size)):
        values = pc.list_flatten(table.data.column(column))
        if not len(values):
            continue
        low, high = (scalar.as_py() for scalar in pc.min_max(values).values())
        if low < 0 or high >= size:
            bad = low if low < 0 else high
            return f"{column} holds id {bad}, outside the vocabulary of {size} subwords"
    return None


def flat_ids(table: datasets.Dataset, column: str) -> tuple[np.ndarray, np.ndarray]:
    """A list column as one flat int32 array plus offsets: no Python list per sentence.

    Sentence i is ``values[offsets[i]:offsets[i + 1]]``. Kept flat so a corpus of
    tens of millions of pairs fits in memory.
    """
    if table._indices is not None:  # a selected/shuffled view: materialize its rows
        table = table.flatten_indices()
    column_data = table.data.column(column).combine_chunks()
    offsets = column_data.offsets.to_numpy().astype(np.int64)
    values = column_data.values.to_numpy().astype(np.int32)
    if offsets[0] != 0:  # a sliced table: rebase
        values = values[offsets[0] : offsets[-1]]
        offsets = offsets - offsets[0]
    return values, offsets
