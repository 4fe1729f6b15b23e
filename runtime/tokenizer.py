"""A pure-Python Llama tokenizer reading ``tokenizer.json`` (no sentencepiece, no tokenizers).

Implements the subset of Hugging Face ``tokenizers`` that Llama/sentencepiece-BPE files use:

* added tokens split out of the text first (``<s>``, ``</s>``, ``<unk>``, …);
* normaliser ``Sequence[Prepend, Replace]`` (legacy layout) or pre-tokeniser ``Metaspace``
  (``prepend_scheme`` always/first/never, ``split`` true/false);
* BPE by merge rank with byte fallback (``<0xXX>`` pieces) and fused ``<unk>``;
* ``TemplateProcessing`` post-processor (BOS), decoders ``Replace``/``ByteFallback``/``Fuse``/
  ``Strip``/``Metaspace``.

Anything else raises :class:`TokenizerError` at load time instead of tokenising differently.
``tests/test_gama_tokenizer.py`` checks ids and text against ``tokenizers`` itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ostinato.runtime.errors import ModelLoadError, ModelNotFoundError

__all__ = ["StreamDecoder", "Tokenizer", "TokenizerError"]

_BYTE_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_CACHE_WORDS = 4096


class TokenizerError(ModelLoadError):
    """``tokenizer.json`` is malformed or uses a feature this tokenizer does not implement."""

    default_hint = "re-export the model with ostinato export gama (it writes a Llama-style tokenizer.json)"


def _string_pattern(spec: dict[str, Any]) -> str:
    pattern = spec.get("pattern", {})
    if "String" not in pattern:
        raise TokenizerError(f"only string patterns are supported, got {pattern}")
    return str(pattern["String"])


class Tokenizer:
    """Encode text to ids and back, as ``tokenizers.Tokenizer`` does for Llama files.

    Build with :meth:`from_file`. Thread-safe (no mutable state after construction).
    """

    def __init__(self, data: dict[str, Any]) -> None:
        model = data.get("model") or {}
        if model.get("type") != "BPE":
            raise TokenizerError(f"model type {model.get('type')!r}; expected 'BPE'")
        if model.get("continuing_subword_prefix") or model.get("end_of_word_suffix") or model.get("dropout"):
            raise TokenizerError("BPE subword prefixes/suffixes/dropout are not supported")
        self._vocab: dict[str, int] = dict(model["vocab"])
        self._pieces = {i: p for p, i in self._vocab.items()}
        self._byte_fallback = bool(model.get("byte_fallback", False))
        self._fuse_unk = bool(model.get("fuse_unk", False))
        self._unk = model.get("unk_token")
        merges = [m.split(" ", 1) if isinstance(m, str) else m for m in model.get("merges", [])]
        self._ranks = {(a, b): r for r, (a, b) in enumerate(merges)}
        self._added = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
        self._special_ids = {int(t["id"]) for t in data.get("added_tokens", []) if t.get("special")}
        for content, token_id in self._added.items():
            self._pieces.setdefault(token_id, content)
        self._added_re = (re.compile("|".join(re.escape(t) for t in sorted(self._added, key=len, reverse=True)))
                          if self._added else None)
        self._normalizers = self._parse_normalizer(data.get("normalizer"))
        self._metaspace = self._parse_metaspace(data.get("pre_tokenizer"))
        self._prefix_ids, self._suffix_ids = self._parse_template(data.get("post_processor"))
        self._decoders = self._parse_decoders(data.get("decoder"))
        self.bos_id = self._added.get("<s>", self._vocab.get("<s>"))
        self.eos_id = self._added.get("</s>", self._vocab.get("</s>"))
        self.unk_id = self._vocab.get(self._unk) if self._unk else None
        self.vocab_size = max(self._pieces) + 1
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_file(cls, path: str | Path) -> Tokenizer:
        """Load ``tokenizer.json``.

        Raises:
            ModelNotFoundError: The file does not exist.
            TokenizerError: The file is not a supported tokenizer.
        """
        path = Path(path)
        if not path.is_file():
            raise ModelNotFoundError(f"tokenizer file {str(path)!r} not found")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise TokenizerError(f"{str(path)!r} is not valid JSON: {e}") from e
        try:
            return cls(data)
        except (KeyError, TypeError, AttributeError, ValueError) as e:
            raise TokenizerError(f"{str(path)!r} is not a supported tokenizer: {e!r}") from e

    # ------------------------------------------------------------------ parsing
    @staticmethod
    def _parse_normalizer(spec: dict[str, Any] | None) -> list[tuple[str, str, str]]:
        if spec is None:
            return []
        items = spec["normalizers"] if spec["type"] == "Sequence" else [spec]
        out: list[tuple[str, str, str]] = []
        for item in items:
            if item["type"] == "Prepend":
                out.append(("prepend", item["prepend"], ""))
            elif item["type"] == "Replace":
                out.append(("replace", _string_pattern(item), item["content"]))
            else:
                raise TokenizerError(f"normalizer {item['type']!r} is not supported")
        return out

    @staticmethod
    def _parse_metaspace(spec: dict[str, Any] | None) -> tuple[str, str, bool] | None:
        if spec is None:
            return None
        if spec["type"] != "Metaspace":
            raise TokenizerError(f"pre_tokenizer {spec['type']!r} is not supported")
        scheme = spec.get("prepend_scheme", "always" if spec.get("add_prefix_space", True) else "never")
        return spec["replacement"], scheme, bool(spec.get("split", True))

    def _parse_template(self, spec: dict[str, Any] | None) -> tuple[list[int], list[int]]:
        if spec is None:
            return [], []
        if spec["type"] != "TemplateProcessing":
            raise TokenizerError(f"post_processor {spec['type']!r} is not supported")
        prefix: list[int] = []
        suffix: list[int] = []
        seen_seq = False
        for piece in spec["single"]:
            if "Sequence" in piece:
                seen_seq = True
                continue
            ids = spec["special_tokens"][piece["SpecialToken"]["id"]]["ids"]
            (suffix if seen_seq else prefix).extend(int(i) for i in ids)
        return prefix, suffix

    @staticmethod
    def _parse_decoders(spec: dict[str, Any] | None) -> list[dict[str, Any]]:
        if spec is None:
            return []
        items = spec["decoders"] if spec["type"] == "Sequence" else [spec]
        for item in items:
            if item["type"] not in ("Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"):
                raise TokenizerError(f"decoder {item['type']!r} is not supported")
        return list(items)

    # ------------------------------------------------------------------ encoding
    def _pre_split(self, text: str, first: bool) -> list[str]:
        for kind, a, b in self._normalizers:
            if kind == "prepend":
                text = a + text if text else text
            else:
                text = text.replace(a, b)
        if self._metaspace is None:
            return [text] if text else []
        repl, scheme, split = self._metaspace
        text = text.replace(" ", repl)
        if text and (scheme == "always" or (scheme == "first" and first)) and not text.startswith(repl):
            text = repl + text
        if not split:
            return [text] if text else []
        return [w for w in re.split(f"(?={re.escape(repl)})", text) if w]

    def _bpe(self, word: str) -> tuple[int, ...]:
        cached = self._cache.get(word)
        if cached is None:
            cached = self._bpe_uncached(word)
            if len(self._cache) >= _CACHE_WORDS:
                self._cache.clear()  # bounded; a dict swap is atomic under the GIL
            self._cache[word] = cached
        return cached

    def _bpe_uncached(self, word: str) -> tuple[int, ...]:
        symbols: list[str] = []
        for ch in word:
            if ch in self._vocab:
                symbols.append(ch)
            elif self._byte_fallback and all(f"<0x{b:02X}>" in self._vocab for b in ch.encode()):
                symbols.extend(f"\x00<0x{b:02X}>" for b in ch.encode())  # \x00: never merged
            elif self._unk is not None:
                if not (self._fuse_unk and symbols and symbols[-1] == "\x00unk"):
                    symbols.append("\x00unk")
            else:
                raise TokenizerError(f"character {ch!r} has no piece and no <unk> is defined")
        while len(symbols) > 1:
            best, best_rank = -1, len(self._ranks)
            for i in range(len(symbols) - 1):
                rank = self._ranks.get((symbols[i], symbols[i + 1]))
                if rank is not None and rank < best_rank:
                    best, best_rank = i, rank
            if best < 0:
                break
            symbols[best:best + 2] = [symbols[best] + symbols[best + 1]]
        ids = []
        for s in symbols:
            if s == "\x00unk":
                ids.append(self._vocab[str(self._unk)])
            else:
                ids.append(self._vocab[s.removeprefix("\x00")])
        return tuple(ids)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the template's BOS is added."""
        ids: list[int] = []
        pos, first = 0, True
        matches = self._added_re.finditer(text) if self._added_re else iter(())
        for m in [*matches, None]:
            end = m.start() if m is not None else len(text)
            for word in self._pre_split(text[pos:end], first):
                ids.extend(self._bpe(word))
            if m is not None:
                ids.append(self._added[m.group(0)])
                pos = m.end()
            first = False
        if add_special_tokens:
            ids = self._prefix_ids + ids + self._suffix_ids
        return ids

    # ------------------------------------------------------------------ decoding
    def id_to_piece(self, token_id: int) -> str:
        """The vocabulary piece of one id.

        Raises:
            ValueError: The id is outside the vocabulary.
        """
        try:
            return self._pieces[int(token_id)]
        except KeyError:
            raise ValueError(f"token id {token_id} is not in the vocabulary (size {self.vocab_size})") from None

    def is_special(self, token_id: int) -> bool:
        """Whether ``token_id`` is a special added token (BOS, EOS, …)."""
        return int(token_id) in self._special_ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``, applying the file's decoder chain."""
        tokens = [self.id_to_piece(i) for i in ids if not (skip_special_tokens and int(i) in self._special_ids)]
        for dec in self._decoders:
            tokens = self._apply_decoder(dec, tokens)
        return "".join(tokens)

    def _apply_decoder(self, dec: dict[str, Any], tokens: list[str]) -> list[str]:
        kind = dec["type"]
        if kind == "Replace":
            pat = _string_pattern(dec)
            return [t.replace(pat, dec["content"]) for t in tokens]
        if kind == "Fuse":
            return ["".join(tokens)]
        if kind == "Strip":
            out = []
            for t in tokens:
                for _ in range(int(dec.get("start", 0))):
                    t = t.removeprefix(dec["content"])
                for _ in range(int(dec.get("stop", 0))):
                    t = t.removesuffix(dec["content"])
                out.append(t)
            return out
        if kind == "Metaspace":
            repl = dec["replacement"]
            scheme = dec.get("prepend_scheme", "always")
            out = [t.replace(repl, " ") for t in tokens]
            if out and scheme != "never" and out[0].startswith(" "):
                out[0] = out[0][1:]
            return out
        return self._byte_fallback_decode(tokens)

    @staticmethod
    def _byte_fallback_decode(tokens: list[str]) -> list[str]:
        out: list[str] = []
        pending: list[int] = []

        def flush() -> None:
            if pending:
                try:
                    out.append(bytes(pending).decode("utf-8"))
                except UnicodeDecodeError:
                    out.extend("\ufffd" for _ in pending)
                pending.clear()

        for t in tokens:
            m = _BYTE_RE.match(t)
            if m is not None:
                pending.append(int(m.group(1), 16))
            else:
                flush()
                out.append(t)
        flush()
        return out


class StreamDecoder:
    """Turns a stream of generated ids into text pieces as soon as they are complete.

    Re-decodes the ids so far and emits what was added. Byte-fallback pieces (``<0xXX>``)
    are held back until a regular piece (or :meth:`flush`) closes their group, because the
    decoder turns a whole group into U+FFFD when it is not valid UTF-8: text once emitted is
    then always a prefix of the final text.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._emitted = 0

    def push(self, token_id: int) -> str:
        """Add one id; return the newly completed text (possibly empty)."""
        self._ids.append(int(token_id))
        if _BYTE_RE.match(self._tokenizer.id_to_piece(token_id)):
            return ""
        text = self._tokenizer.decode(self._ids)
        new, self._emitted = text[self._emitted:], len(text)
        return new

    def flush(self) -> str:
        """Return whatever is left (incomplete bytes come out as U+FFFD)."""
        text = self._tokenizer.decode(self._ids)
        new, self._emitted = text[self._emitted:], len(text)
        return new

    @property
    def text(self) -> str:
        """The full text decoded so far."""
        return self._tokenizer.decode(self._ids)
