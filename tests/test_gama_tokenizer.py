"""runtime/tokenizer.py (pure Python) against tokenizers/transformers on Llama-layout files."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

from ostinato.runtime.errors import ModelNotFoundError
from ostinato.runtime.tokenizer import StreamDecoder, Tokenizer, TokenizerError

tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

from ostinato.export.gama_tokenizer import (  # noqa: E402
    convert_sentencepiece,
    train_random_tokenizer,
    write_tokenizer,
)

TEXTS = [
    "### Instruction:\nDescribe the audio.\n\n### Response:\n",
    "A dog barks twice while a car passes by.",
    "  leading and   multiple spaces  ",
    "Ünïcödé: 日本語のテキスト, emoji 🐶🚗 and Ελληνικά",
    "tabs\tand\r\nnewlines\n\n",
    "<s>special</s> tokens <unk> inside",
    "",
    "x",
]


def _ours_and_theirs(path: Path) -> tuple[Tokenizer, object, object]:
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), bos_token="<s>",
                                                eos_token="</s>", unk_token="<unk>")
    return Tokenizer.from_file(path), tokenizers.Tokenizer.from_file(str(path)), fast


@pytest.fixture(scope="module")
def random_tok(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tokenizer(tmp_path_factory.mktemp("tok"), vocab_size=400)


def _spm_model(path: Path) -> Path:
    """A small sentencepiece BPE model (Llama-2 layout) built with protobuf only."""
    convert = importlib.import_module("transformers.convert_slow_tokenizer")
    data = train_random_tokenizer(360)
    proto = convert.import_protobuf().ModelProto()
    proto.trainer_spec.model_type = 2
    proto.trainer_spec.byte_fallback = True
    proto.trainer_spec.unk_piece = "<unk>"
    vocab = sorted(data["model"]["vocab"].items(), key=lambda kv: kv[1])
    for piece, idx in vocab:
        if piece.startswith("<unused_"):
            continue
        p = proto.pieces.add()
        p.piece = piece
        p.score = 0.0 if idx < 259 else -float(idx)
        p.type = 2 if idx == 0 else 3 if idx < 3 else 6 if idx < 259 else 1
    path.write_bytes(proto.SerializeToString())
    return path


@pytest.mark.parametrize("text", TEXTS)
def test_random_tokenizer_matches_reference(random_tok: Path, text: str) -> None:
    ours, ref, fast = _ours_and_theirs(random_tok)
    ids = ours.encode(text)
    assert ids == ref.encode(text).ids == fast(text)["input_ids"]
    assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True) == fast.decode(ids, skip_special_tokens=True)
    assert ours.decode(ids, skip_special_tokens=False) == ref.decode(ids, skip_special_tokens=False)
    assert ids[:1] == [1]  # BOS from the template


def test_round_trip_and_byte_fallback(random_tok: Path) -> None:
    ours = Tokenizer.from_file(random_tok)
    for text in TEXTS:
        if "<" not in text:
            assert ours.decode(ours.encode(text)) == text
    ids = ours.encode("🐶", add_special_tokens=False)
    assert [ours.id_to_piece(i) for i in ids][-4:] == ["<0xF0>", "<0x9F>", "<0x90>", "<0xB6>"]
    assert ours.vocab_size == 400 and (ours.bos_id, ours.eos_id, ours.unk_id) == (1, 2, 0)


def test_every_id_decodes_like_reference(random_tok: Path) -> None:
    ours, ref, _ = _ours_and_theirs(random_tok)
    for i in range(ours.vocab_size):
        assert ours.decode([5, i, 300]) == ref.decode([5, i, 300], skip_special_tokens=True), i


def test_sentencepiece_conversion_matches_reference(tmp_path: Path) -> None:
    model = _spm_model(tmp_path / "tokenizer.model")
    out = tmp_path / "out"
    out.mkdir()
    path = write_tokenizer(out, source_dir=tmp_path)
    ours, ref, _ = _ours_and_theirs(path)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text).ids, text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True)
    assert convert_sentencepiece(model)["model"]["byte_fallback"] is True


def test_metaspace_layout_matches_reference(random_tok: Path, tmp_path: Path) -> None:
    data = json.loads(random_tok.read_text())
    data["normalizer"] = None
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    data["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        {"type": "ByteFallback"}, {"type": "Fuse"}]}
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(data, ensure_ascii=False))
    ours, ref, _ = _ours_and_theirs(path)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == ref.encode(text).ids, text
        assert ours.decode(ids) == ref.decode(ids, skip_special_tokens=True), text


def test_stream_decoder_holds_incomplete_utf8(random_tok: Path) -> None:
    ours = Tokenizer.from_file(random_tok)
    text = "A dog 🐶 barks, 日本"
    ids = ours.encode(text, add_special_tokens=False)
    stream = StreamDecoder(ours)
    pieces = [stream.push(i) for i in ids]
    assert "".join(pieces) + stream.flush() == text
    assert all("\ufffd" not in p for p in pieces)
    assert stream.text == text


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError):
        Tokenizer.from_file(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(TokenizerError, match="not valid JSON"):
        Tokenizer.from_file(bad)
    bad.write_text(json.dumps({"model": {"type": "WordPiece", "vocab": {}}}))
    with pytest.raises(TokenizerError, match="WordPiece"):
        Tokenizer.from_file(bad)
    with pytest.raises(ValueError, match="vocab_size"):
        train_random_tokenizer(100)
