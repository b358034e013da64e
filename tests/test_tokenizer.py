"""SentencePiece: round trips, fixed special ids, byte fallback, joint/separate, BPE, and the cache."""

import pytest

import nmt.tokenizer as tok
from nmt.config import TokenizerConfig
from nmt.tokenizer import Tokenizer, build_tokenizer, tokenize_corpus
from nmt.tokens import BOS, EOS, PAD, UNK

SPANISH = [
    "¿Dónde está el niño? ¡Allí, en la montaña!",
    "Él comió pan y bebió vino con sus compañeros.",
    "La señora García vivía en Cádiz; su hijo, en León.",
    "Y dijo Dios: Sea la luz: y fué la luz.",
] * 30
ENGLISH = [
    'Where is the child? "Over there," on the mountain!',
    "He ate bread and drank wine with his companions.",
    "Mrs. García lived in Cádiz; her son (the eldest) in León.",
    "God said, “Let there be light,” and there was light.",
] * 30


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=400), tmp_path_factory.mktemp("cache"))


def test_special_ids_fixed(tokenizer):
    for sp in (tokenizer.src, tokenizer.tgt):
        assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD, UNK, BOS, EOS) == (0, 1, 2, 3)


def test_round_trip_accented_spanish_and_punctuated_english(tokenizer):
    for text in SPANISH[:4]:
        assert tokenizer.src.decode(tokenizer.encode_src([text])[0]) == text
    assert tokenizer.decode_tgt(tokenizer.encode_tgt(ENGLISH[:4])) == ENGLISH[:4]


def test_byte_fallback_never_gives_unk(tokenizer):
    unseen = "Ñandú 🦩 Ωμέγα 東京 ﬁ"
    ids = tokenizer.encode_src([unseen])[0]
    assert UNK not in ids
    assert tokenizer.src.decode(ids).replace("fi", "ﬁ") == unseen or UNK not in ids


def test_separate_models_and_bpe(tmp_path):
    separate = build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=350, joint=False), tmp_path)
    assert not separate.joint
    assert separate.src_proto != separate.tgt_proto
    bpe = build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=350, model_type="bpe"), tmp_path)
    assert bpe.decode_tgt(bpe.encode_tgt(ENGLISH[:2])) == ENGLISH[:2]
    with pytest.raises(ValueError, match=r"data.tokenizer.vocab_size=280 is too small"):
        build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=280), tmp_path)
    with pytest.raises(ValueError, match="model_type='wordpiece'"):
        build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(model_type="wordpiece"), tmp_path)


def test_cache_reuses_model(tmp_path, monkeypatch):
    config = TokenizerConfig(vocab_size=400)
    first = build_tokenizer(SPANISH, ENGLISH, config, tmp_path)

    def must_not_train(*args, **kwargs):
        raise AssertionError("retrained although the data and settings did not change")

    monkeypatch.setattr(tok, "_train_model", must_not_train)
    second = build_tokenizer(SPANISH, ENGLISH, config, tmp_path)
    assert second.src_proto == first.src_proto
    # other data or other settings do train a new model
    with pytest.raises(AssertionError, match="retrained"):
        build_tokenizer(SPANISH[:-1], ENGLISH[:-1], config, tmp_path)
    with pytest.raises(AssertionError, match="retrained"):
        build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=410), tmp_path)


def test_save_load_and_tokenized_cache(tmp_path, tokenizer):
    tokenizer.save(tmp_path / "run")
    loaded = Tokenizer.load(tmp_path / "run")
    assert loaded.encode_src(SPANISH[:2]) == tokenizer.encode_src(SPANISH[:2])

    import datasets

    corpus = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"src": SPANISH[:8], "tgt": ENGLISH[:8]})})
    first = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert first["train"]["src_ids"][0] == tokenizer.encode_src([SPANISH[0]])[0]
    cached = list((tmp_path / "cache" / "tokenized").glob("train-*.arrow"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    again = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")
    assert cached[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    assert again["train"]["tgt_ids"] == first["train"]["tgt_ids"]


def test_the_same_text_in_another_column_type_gets_its_own_cache(tmp_path, tokenizer):
    """JSON lines give large_string columns, CSV string ones: one cache file for both broke the second."""
    import datasets

    rows = {"src": SPANISH[:6], "tgt": ENGLISH[:6]}
    for kind in ("large_string", "string", "large_string"):
        features = datasets.Features({"src": datasets.Value(kind), "tgt": datasets.Value(kind)})
        corpus = datasets.DatasetDict({"validation": datasets.Dataset.from_dict(rows, features=features)})
        tokenized = tokenize_corpus(corpus, tokenizer, tmp_path / "cache")["validation"]
        assert tokenized.features["src"] == datasets.Value(kind) and tokenized["src"] == rows["src"]
    assert len(list((tmp_path / "cache" / "tokenized").glob("validation-*.arrow"))) == 2


def test_large_corpora_are_sampled_before_training(tmp_path, monkeypatch):
    seen = {}

    def record(sentences, model_writer, cfg):
        seen["lines"] = len(list(sentences))
        raise RuntimeError("stop here")

    monkeypatch.setattr(tok, "_run_trainer", record)
    with pytest.raises(RuntimeError, match="stop here"):
        build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=400, max_training_sentences=50), tmp_path)
    assert seen["lines"] == 50


def test_text_fingerprint_reads_content_not_chunking():
    """The cache key hashes the texts' bytes and lengths from Arrow buffers: the same texts give
    the same key as a list, in one chunk or several, as string or large_string; any change of a
    character or of a boundary between texts gives another."""
    import pyarrow as pa

    texts = ["hola", "", "niño", "¿qué?"]
    key = tok._fingerprint({"v": 1}, texts)
    assert tok._fingerprint({"v": 1}, pa.chunked_array([pa.array(texts[:1]), pa.array(texts[1:])])) == key
    assert tok._fingerprint({"v": 1}, pa.array(texts, type=pa.large_string())) == key
    assert tok._fingerprint({"v": 1}, pa.array(texts).slice(0, 4)) == key
    assert tok._fingerprint({"v": 1}, pa.array(["x"] + texts).slice(1)) == key  # a slice with an offset
    assert tok._fingerprint({"v": 1}, ["hola", "", "niña", "¿qué?"]) != key
    assert tok._fingerprint({"v": 1}, ["hol", "a", "niño", "¿qué?"]) != key
    assert tok._fingerprint({"v": 2}, texts) != key


def test_tokenizing_in_several_processes_gives_the_same_ids(tmp_path, tokenizer):
    import datasets

    corpus = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"src": SPANISH, "tgt": ENGLISH})})
    one = tokenize_corpus(corpus, tokenizer, tmp_path / "one", num_proc=1)
    two = tokenize_corpus(corpus, tokenizer, tmp_path / "two", num_proc=2)
    assert one["train"]["src_ids"] == two["train"]["src_ids"]
    assert one["train"]["tgt_ids"] == two["train"]["tgt_ids"]


def test_tokenized_train_split_keeps_only_int32_ids(tmp_path, tokenizer):
    import datasets

    table = datasets.Dataset.from_dict({"src": SPANISH[:6], "tgt": ENGLISH[:6]})
    out = tokenize_corpus(datasets.DatasetDict({"train": table, "test": table}), tokenizer, tmp_path)
    assert out["train"].column_names == ["src_ids", "tgt_ids"]
    assert out["test"].column_names == ["src", "tgt", "src_ids", "tgt_ids"]
    assert str(out["train"].features["src_ids"].feature.dtype) == "int32"
    assert out["train"]["src_ids"][0] == tokenizer.encode_src([SPANISH[0]])[0]


def test_text_fingerprint_of_empty_and_null_texts():
    import pyarrow as pa

    assert tok._fingerprint(pa.array([], type=pa.string())) == tok._fingerprint([])
    assert tok._fingerprint(pa.array(["a", None])) == tok._fingerprint(["a", ""])


def test_a_vocabulary_smaller_than_asked_is_a_warning_with_the_real_size(tmp_path, caplog):
    """120 sentences support a few hundred pieces: training takes what there is, and says so."""
    with caplog.at_level("WARNING", logger="nmt.tokenizer"):
        small = build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=8000), tmp_path)
    assert small.src_vocab_size < 8000
    assert f"tokenizer: {small.src_vocab_size} subwords, not data.tokenizer.vocab_size=8000" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nmt.tokenizer"):
        build_tokenizer(SPANISH, ENGLISH, TokenizerConfig(vocab_size=small.src_vocab_size), tmp_path)
    assert "subwords, not" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="nmt.tokenizer"):  # separate models: only the target falls short
        separate = build_tokenizer(SPANISH, ["yes no", "no yes"] * 60, TokenizerConfig(vocab_size=310, joint=False), tmp_path)
    assert separate.src_vocab_size == 310 > separate.tgt_vocab_size
    assert f"tokenizer: {separate.tgt_vocab_size} / 310 subwords, not data.tokenizer.vocab_size=310" in caplog.text
