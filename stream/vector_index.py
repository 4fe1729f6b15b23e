"""Nearest-neighbour index over pattern embeddings (cosine / inner product on unit vectors).

Chosen by measurement (``bench/vector_index_bench.py``, table in ``docs/library.md``):

* below ``exact_limit`` vectors an exact numpy scan (:class:`FlatIndex`) is as fast as any
  graph and has perfect recall;
* above it, an HNSW graph from ``usearch`` (:class:`HnswIndex`): sub-millisecond queries at
  100k × 768-d with recall@10 >= 0.99, cheap single inserts, removals, and wheels for
  x86-64 and aarch64 Linux, macOS and Windows. Where usearch cannot be imported, the flat
  index is used at every size (exact, slower: see the table).

The index is a cache: the SQLite database is the source of truth, and
:func:`build_index` rebuilds an index from ``(keys, vectors)`` read from it. An HNSW index is
also persisted beside the database (:func:`save_persisted`, ``<db>.usearch`` plus a
``.json`` stamp), so that the first query of a new process loads it instead of rebuilding
(64 s at 100k patterns); :func:`load_persisted` uses the file only when its stamp equals the
database's (pattern count, largest and summed keys, vector generation, dimension) *and* the
loaded graph holds exactly that many keys with that largest key and sum; anything else —
stale, truncated, foreign or unreadable — means a rebuild.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = [
    "EXACT_LIMIT", "FlatIndex", "HnswIndex", "VectorIndex", "build_index", "load_persisted", "save_persisted",
    "usearch_available",
]

logger = logging.getLogger(__name__)

#: Sizes up to which the exact scan is used.
EXACT_LIMIT = 20_000


class VectorIndex(Protocol):
    """What the library needs from an index."""

    dim: int

    def __len__(self) -> int: ...

    def add(self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None: ...

    def remove(self, keys: npt.NDArray[np.int64]) -> None: ...

    def search(self, vector: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]: ...

    def keys(self) -> npt.NDArray[np.int64]: ...


class FlatIndex:
    """Exact inner-product search over a contiguous float32 matrix.

    Args:
        dim: Vector dimension.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._store = np.zeros((16, dim), dtype=np.float32)  # grows by doubling: O(1) inserts
        self._keys = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self._keys.size)

    @property
    def _vectors(self) -> npt.NDArray[np.float32]:
        return self._store[: self._keys.size]

    def add(self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Append vectors (``[n, dim]``) under integer keys."""
        new = np.asarray(vectors, np.float32).reshape(-1, self.dim)
        n = self._keys.size
        if n + len(new) > len(self._store):
            grown = np.zeros((max(2 * len(self._store), n + len(new)), self.dim), np.float32)
            grown[:n] = self._store[:n]
            self._store = grown
        self._store[n : n + len(new)] = new
        self._keys = np.concatenate([self._keys, np.asarray(keys, np.int64).ravel()])

    def remove(self, keys: npt.NDArray[np.int64]) -> None:
        """Drop the given keys (unknown keys are ignored)."""
        keep = ~np.isin(self._keys, np.asarray(keys, np.int64))
        kept = self._vectors[keep]
        self._store[: len(kept)] = kept
        self._keys = self._keys[keep]

    def search(self, vector: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` keys by inner product, best first."""
        if len(self) == 0 or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        scores = self._vectors @ np.asarray(vector, np.float32)
        k = min(k, len(self))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(self) else np.arange(len(self))
        top = top[np.argsort(-scores[top])]
        return self._keys[top].copy(), scores[top].astype(np.float32)

    def keys(self) -> npt.NDArray[np.int64]:
        """All keys held."""
        return self._keys.copy()


class HnswIndex:
    """usearch HNSW graph (inner product, float32 storage).

    Args:
        dim: Vector dimension.
        connectivity: Graph degree (M).
        expansion_add: Candidate list size while inserting (efConstruction).
        expansion_search: Candidate list size while searching (ef).
    """

    def __init__(self, dim: int, connectivity: int = 16, expansion_add: int = 128, expansion_search: int = 64) -> None:
        from usearch.index import Index

        self.dim = dim
        self._index = Index(
            ndim=dim, metric="ip", dtype="f32", connectivity=connectivity,
            expansion_add=expansion_add, expansion_search=expansion_search,
        )

    def __len__(self) -> int:
        return len(self._index)

    def add(self, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32]) -> None:
        """Insert vectors under integer keys."""
        keys = np.asarray(keys, np.int64).ravel()
        if keys.size:
            self._index.add(keys.astype(np.uint64), np.asarray(vectors, np.float32).reshape(-1, self.dim))

    def remove(self, keys: npt.NDArray[np.int64]) -> None:
        """Drop the given keys."""
        for key in np.asarray(keys, np.int64).ravel().tolist():
            self._index.remove(int(key))

    def search(self, vector: npt.NDArray[np.float32], k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Approximate top-``k`` keys by inner product, best first."""
        if len(self) == 0 or k < 1:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        found = self._index.search(np.asarray(vector, np.float32), min(k, len(self)))
        keys = np.asarray(found.keys, dtype=np.int64)
        scores = 1.0 - np.asarray(found.distances, dtype=np.float32)  # usearch "ip" distance = 1 - dot
        return keys, scores

    def keys(self) -> npt.NDArray[np.int64]:
        """All keys held."""
        return np.asarray(self._index.keys, dtype=np.int64)

    def save(self, path: Path) -> None:
        """Write the graph to ``path``."""
        self._index.save(str(path))

    @classmethod
    def load(cls, path: Path, dim: int) -> HnswIndex:
        """Read a graph written by :meth:`save`.

        Raises:
            ValueError: Not a usearch index of ``dim`` dimensions.
        """
        from usearch.index import Index

        loaded = Index.restore(str(path), view=False)
        if loaded is None or int(loaded.ndim) != dim:
            raise ValueError(f"{str(path)!r} is not a usearch index of dim {dim}")
        index = cls.__new__(cls)
        index.dim = dim
        index._index = loaded
        return index


def usearch_available() -> bool:
    """Whether the usearch package can be imported."""
    try:
        import usearch.index  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def build_index(
    dim: int, keys: npt.NDArray[np.int64], vectors: npt.NDArray[np.float32], exact_limit: int = EXACT_LIMIT
) -> FlatIndex | HnswIndex:
    """An index holding ``vectors``: exact below ``exact_limit`` vectors (or without
    usearch), HNSW above."""
    index: FlatIndex | HnswIndex
    if len(keys) > exact_limit and usearch_available():
        index = HnswIndex(dim)
    else:
        index = FlatIndex(dim)
    index.add(keys, vectors)
    logger.debug("built %s with %d vectors of %d dims", type(index).__name__, len(keys), dim)
    return index


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _key_stamp(keys: npt.NDArray[np.int64]) -> list[int]:
    return [int(keys.size), int(keys.max()) if keys.size else 0, int(keys.sum()) if keys.size else 0]


def save_persisted(index: HnswIndex, path: Path, stamp: dict[str, int]) -> None:
    """Write ``index`` to ``path`` and its ``stamp`` beside it (both atomically replaced; the
    stamp last, and it also records the graph's own keys, so a crash between the two leaves
    a pair that :func:`load_persisted` rejects). Errors are logged, not raised: the file is
    only a cache."""
    try:
        tmp = path.with_name(path.name + ".tmp")
        index.save(tmp)
        os.replace(tmp, path)
        record = {**stamp, "keys": _key_stamp(index.keys())}
        tmp_stamp = _stamp_path(path).with_name(_stamp_path(path).name + ".tmp")
        tmp_stamp.write_text(json.dumps(record))
        os.replace(tmp_stamp, _stamp_path(path))
    except (OSError, RuntimeError, ValueError) as e:
        logger.warning("could not persist the vector index to %s: %s", path, e)


def load_persisted(path: Path, dim: int, stamp: dict[str, int]) -> HnswIndex | None:
    """The index persisted at ``path`` when its stamp equals ``stamp`` and the graph holds
    the stamped keys; else None (the caller rebuilds)."""
    try:
        record = json.loads(_stamp_path(path).read_text())
        if {k: record.get(k) for k in stamp} != stamp or record.get("keys") != [stamp["count"], stamp["max_key"], stamp["key_sum"]]:
            logger.info("persisted vector index %s is stale; rebuilding", path)
            return None
        index = HnswIndex.load(path, dim)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as e:
        logger.info("persisted vector index %s unusable (%s); rebuilding", path, e)
        return None
    if _key_stamp(index.keys()) != record["keys"]:
        logger.info("persisted vector index %s does not hold the stamped keys; rebuilding", path)
        return None
    return index
