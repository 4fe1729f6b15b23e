"""Write the ``tokenizer.json`` that the runtime reads (no sentencepiece at runtime).

Two sources:

* a real release ships ``tokenizer.json`` (copied as is) or Llama-2's sentencepiece
  ``tokenizer.model``, converted here the way ``transformers``' ``LlamaConverter`` does it
  (legacy layout: ``Prepend("▁")`` + ``Replace(" ", "▁")`` normaliser, BPE with byte
  fallback, merges from piece scores) — using only protobuf, so sentencepiece is not needed;
* random-init exports get a small Llama-style tokenizer trained here on a built-in English
  text: ``<unk>``/``<s>``/``</s>`` at ids 0–2, the 256 byte tokens ``<0x00>…<0xFF>`` at 3–258
  (byte fallback), then BPE pieces; it is padded with ``<unused_N>`` pieces to the model's
  vocabulary size. It is labelled random like the weights.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from ostinato.export.errors import SourceModelError

__all__ = ["TOKENIZER_FILE", "convert_sentencepiece", "train_random_tokenizer", "write_tokenizer"]

logger = logging.getLogger(__name__)

TOKENIZER_FILE = "tokenizer.json"
_SPECIALS = ("<unk>", "<s>", "</s>")
_BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
_MIN_RANDOM_VOCAB = len(_SPECIALS) + len(_BYTE_TOKENS) + 64

_CORPUS = """\
### Instruction:
Describe the audio.

### Response:
A dog barks twice while a car passes by on a wet road, followed by a siren in the distance.
The sound of rain falling on a roof with thunder rumbling and wind blowing through trees.
A man is speaking, then a woman laughs and music plays in the background of a busy street.
Birds are chirping and singing in a forest; water flows in a small stream nearby.
An engine starts, idles, revs up and then a vehicle drives away; a horn honks once.
Footsteps on a wooden floor, a door opens and closes, and a bell rings three times.
Glass breaks, an alarm beeps repeatedly, and people shout while a baby cries.
A guitar and a piano play a slow song; drums and a bass join in the chorus.
What is the source of the sound? Is it indoors or outdoors? How many events are there?
The audio contains speech, music, animals, vehicles, tools, alarms and natural sounds.
Question: what could be the reason for the repeated clicking sound? Answer: a clock ticking.
"""


def _llama_layout(tok_json: dict[str, Any]) -> dict[str, Any]:
    """Apply Llama-2's hub ``tokenizer.json`` layout (legacy normaliser, BOS template)."""
    tok_json["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "▁"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "▁"},
    ]}
    tok_json["pre_tokenizer"] = None
    tok_json["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    tok_json["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    return tok_json


def _added(content: str, token_id: int) -> dict[str, Any]:
    return {"id": token_id, "content": content, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True}


def train_random_tokenizer(vocab_size: int) -> dict[str, Any]:
    """Train a small Llama-style BPE tokenizer and pad it to ``vocab_size`` pieces.

    Raises:
        ValueError: ``vocab_size`` is below the 3 specials + 256 byte tokens + 64 pieces.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    if vocab_size < _MIN_RANDOM_VOCAB:
        raise ValueError(f"vocab_size={vocab_size}; a byte-fallback tokenizer needs >= {_MIN_RANDOM_VOCAB}")
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    trained_size = min(vocab_size, _MIN_RANDOM_VOCAB + 700)
    trainer = trainers.BpeTrainer(vocab_size=trained_size, special_tokens=[*_SPECIALS, *_BYTE_TOKENS],
                                  show_progress=False, min_frequency=1)
    tok.train_from_iterator(_CORPUS.splitlines(), trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    for i in range(vocab_size - len(vocab)):
        vocab[f"<unused_{i}>"] = len(vocab)
    data["added_tokens"] = [_added(s, i) for i, s in enumerate(_SPECIALS)]
    return _llama_layout(data)


def convert_sentencepiece(model_path: Path) -> dict[str, Any]:
    """Convert Llama-2's ``tokenizer.model`` (sentencepiece BPE) to ``tokenizer.json`` data.

    Follows ``transformers.convert_slow_tokenizer.LlamaConverter`` with ``legacy=True`` (the
    behaviour of the ``LlamaTokenizer`` GAMA used), reading the protobuf directly.

    Raises:
        SourceModelError: The file is not a sentencepiece BPE model.
    """
    convert = importlib.import_module("transformers.convert_slow_tokenizer")
    proto = convert.import_protobuf().ModelProto()
    try:
        proto.ParseFromString(model_path.read_bytes())
    except Exception as e:  # protobuf DecodeError
        raise SourceModelError(f"{str(model_path)!r} is not a sentencepiece model: {e}") from e
    if proto.trainer_spec.model_type != 2 or len(proto.pieces) < 3:
        raise SourceModelError(f"{str(model_path)!r} is not a sentencepiece BPE model (Llama uses BPE)")
    vocab_scores = [(s, 0.0) for s in _SPECIALS] + [(p.piece, p.score) for p in proto.pieces[3:]]
    vocab = {piece: i for i, (piece, _) in enumerate(vocab_scores)}
    merges = convert.generate_merges(vocab, vocab_scores)
    data: dict[str, Any] = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [_added(p.piece if i > 2 else _SPECIALS[i], i)
                         for i, p in enumerate(proto.pieces) if i < 3 or p.type == 3],
        "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>",
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                  "byte_fallback": True, "ignore_merges": False, "vocab": vocab,
                  "merges": [[a, b] for a, b in merges]},
    }
    return _llama_layout(data)


def write_tokenizer(out_dir: Path, *, source_dir: Path | None = None, vocab_size: int | None = None) -> Path:
    """Write ``tokenizer.json`` into ``out_dir``.

    Args:
        out_dir: Export directory.
        source_dir: A release's base folder (``tokenizer.json`` is copied, else
            ``tokenizer.model`` converted); ``None`` for random-init exports.
        vocab_size: Vocabulary of the random-init tokenizer.

    Raises:
        SourceModelError: ``source_dir`` has neither file.
    """
    from tokenizers import Tokenizer

    dest = out_dir / TOKENIZER_FILE
    if source_dir is not None and (source_dir / TOKENIZER_FILE).is_file():
        shutil.copyfile(source_dir / TOKENIZER_FILE, dest)
        return dest
    if source_dir is not None:
        spm = source_dir / "tokenizer.model"
        if not spm.is_file():
            raise SourceModelError(f"no tokenizer.json or tokenizer.model in {str(source_dir)!r}")
        data = convert_sentencepiece(spm)
    elif vocab_size is not None:
        data = train_random_tokenizer(vocab_size)
    else:
        raise ValueError("pass source_dir (a release) or vocab_size (random init)")
    text = json.dumps(data, ensure_ascii=False)
    Tokenizer.from_str(text)  # refuse to write anything the reference library cannot load
    dest.write_text(text, encoding="utf-8")
    return dest
