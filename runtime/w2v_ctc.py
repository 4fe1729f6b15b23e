"""CTC decoding for Wav2Vec2 ``task = ctc`` exports: the vocabulary file and greedy decoding."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime.errors import ModelNotFoundError

__all__ = ["ctc_greedy_decode", "read_vocab"]


def read_vocab(directory: Path, name: str | None) -> list[str]:
    """Tokens by id from the export's ``vocab.json`` (token -> id).

    Args:
        directory: Model directory.
        name: The vocabulary's file name (``manifest.files["vocab"]``), or ``None``.

    Raises:
        ModelNotFoundError: The file is missing.
    """
    path = directory / name if name else None
    if path is None or not path.is_file():
        raise ModelNotFoundError(f"vocabulary file missing in {str(directory)!r}")
    token_to_id: dict[str, int] = json.loads(path.read_text())
    vocab = [""] * (max(token_to_id.values()) + 1)
    for token, idx in token_to_id.items():
        vocab[idx] = token
    return vocab


def ctc_greedy_decode(
    ids: npt.NDArray[np.integer[Any]], vocab: Sequence[str], blank_id: int = 0, word_delimiter: str = "|"
) -> str:
    """Collapse repeats, drop blanks, map ids to tokens and word delimiters to spaces."""
    out: list[str] = []
    previous = -1
    for i in ids.tolist():
        if i != previous and i != blank_id and 0 <= i < len(vocab):
            token = vocab[i]
            if not (token.startswith("<") and token.endswith(">")):
                out.append(" " if token == word_delimiter else token)
        previous = i
    return " ".join("".join(out).split())
