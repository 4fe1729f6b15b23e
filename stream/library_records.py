"""Records of the pattern library (read views) and its small helpers: LRU cache, vector codec."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.stream.library_schema import LibraryError

__all__ = ["Occurrence", "Pattern"]


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Pattern:
    """A stored pattern (read view)."""

    id: str
    key: int
    name: str | None
    feature: str
    embedding: npt.NDArray[np.float32]
    duration_s: float
    created_at: float
    updated_at: float
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    occurrence_count: int
    first_seen: float | None
    last_seen: float | None

    def summary(self) -> dict[str, Any]:
        """JSON-ready fields (no embedding)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("embedding", "key")}
        out["tags"] = list(self.tags)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class Occurrence:
    """One time a pattern was heard: stream time span plus wall-clock ``recorded_at``."""

    pattern_id: str
    stream: str
    start_s: float
    end_s: float
    score: float
    recorded_at: float


class Lru(OrderedDict[Any, Any]):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.hits = 0
        self.misses = 0

    def lookup(self, key: Any) -> Any:
        if key in self:
            self.move_to_end(key)
            self.hits += 1
            return self[key]
        self.misses += 1
        return None

    def store(self, key: Any, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


def blob(vector: npt.NDArray[np.float32]) -> bytes:
    return np.ascontiguousarray(vector, dtype=np.float32).tobytes()


def unit(vector: npt.NDArray[np.floating]) -> npt.NDArray[np.float32]:
    v = np.asarray(vector, dtype=np.float32).ravel()
    if v.size == 0 or not np.isfinite(v).all():
        raise LibraryError(f"embedding of shape {v.shape} is empty or holds NaN/Inf", hint="embed a non-silent clip")
    norm = float(np.linalg.norm(v))
    if norm < 1e-9:
        raise LibraryError("embedding is all zeros", hint="embed a non-silent clip")
    return v / norm
