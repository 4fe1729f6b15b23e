"""Audio clips of library patterns, kept beside the library so a pattern can be described
(again) on request: ``<library>.clips/<pattern id>.flac``.

The pattern library stores embeddings, not audio; the describer cuts a GAMA-sized clip (at
most 10.24 s at 16 kHz, 16-bit FLAC: at most 328 kB, typically half) for every new pattern
and files it here. The store is bounded: beyond ``max_clips`` files the oldest are deleted
(``docs/gama.md``). Where the clip came from (stream, span, occurrence) travels in the FLAC
comment as JSON.
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ClipStore", "clip_dir_for"]

logger = logging.getLogger(__name__)

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")


def clip_dir_for(library_path: str | Path) -> Path:
    """The clip folder that belongs to a library file (``patterns.db`` -> ``patterns.db.clips``)."""
    path = Path(library_path)
    return path.with_name(path.name + ".clips")


class ClipStore:
    """A folder of pattern clips.

    Args:
        directory: Folder (created on the first write).
        max_clips: Clips kept at most; the oldest files go first.
    """

    def __init__(self, directory: str | Path, max_clips: int = 500) -> None:
        if max_clips < 1:
            raise ValueError(f"max_clips={max_clips}; expected >= 1")
        self.directory = Path(directory)
        self.max_clips = max_clips
        self.written = 0
        self.evicted = 0

    def _path(self, pattern_id: str) -> Path:
        if not _SAFE_ID.match(pattern_id) or ".." in pattern_id:
            raise ValueError(f"pattern_id={pattern_id!r}; expected letters, digits and . _ - /")
        return self.directory / (pattern_id.replace("/", "__") + ".flac")

    def put(self, pattern_id: str, audio: npt.NDArray[np.float32], sample_rate: int, info: dict[str, Any]) -> Path:
        """Write (or replace) a pattern's clip atomically, then evict beyond ``max_clips``."""
        import soundfile as sf

        path = self._path(pattern_id)
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with sf.SoundFile(str(tmp), "w", int(sample_rate), 1, "PCM_16", format="FLAC") as f:
            f.comment = json.dumps(info, separators=(",", ":"))
            f.write(np.clip(np.asarray(audio, np.float32), -1.0, 1.0))
        os.replace(tmp, path)
        self.written += 1
        self._evict()
        return path

    def get(self, pattern_id: str) -> tuple[npt.NDArray[np.float32], int, dict[str, Any]] | None:
        """``(audio, sample_rate, info)`` of a pattern's clip, or ``None`` when there is none."""
        import soundfile as sf

        path = self._path(pattern_id)
        if not path.is_file():
            return None
        with sf.SoundFile(str(path)) as f:
            audio = f.read(dtype="float32")
            try:
                info = json.loads(f.comment or "{}")
            except json.JSONDecodeError:
                info = {}
            return audio, int(f.samplerate), info if isinstance(info, dict) else {}

    def __contains__(self, pattern_id: object) -> bool:
        return isinstance(pattern_id, str) and self._path(pattern_id).is_file()

    def _evict(self) -> None:
        files = sorted(self.directory.glob("*.flac"), key=lambda p: p.stat().st_mtime_ns)
        for old in files[: max(0, len(files) - self.max_clips)]:
            try:
                old.unlink()
                self.evicted += 1
            except OSError as e:  # another process removed it first
                logger.debug("clip %s not evicted: %s", old, e)
