"""Vocabulary reading of CTC exports (greedy decoding is tested in test_wav2vec2_runtime.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ostinato.runtime.errors import ModelNotFoundError
from ostinato.runtime.w2v_ctc import read_vocab


def test_read_vocab_orders_tokens_by_id(tmp_path: Path) -> None:
    (tmp_path / "vocab.json").write_text(json.dumps({"A": 3, "<pad>": 0, "|": 2, "<s>": 1}))
    assert read_vocab(tmp_path, "vocab.json") == ["<pad>", "<s>", "|", "A"]


@pytest.mark.parametrize("name", [None, "vocab.json"])
def test_read_vocab_missing_file(tmp_path: Path, name: str | None) -> None:
    with pytest.raises(ModelNotFoundError, match="vocabulary file missing"):
        read_vocab(tmp_path, name)
