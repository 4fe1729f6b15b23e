"""Candidate search over segment embeddings of one stream's buffer (sans-IO).

Every ``hop`` frames the matcher embeds the last ``segment`` frames (a few pooled sub-blocks
of unit frames, L2-normalised) and asks this index for the most similar *earlier* segments.
It is a flat ring of float32 vectors scanned with one matrix-vector product: at the sizes a
stream buffer reaches (an hour at 0.2 s hops is 18,000 vectors of ≤ 256 dims, ~0.3 ms per
query) a flat scan is exact, cheaper than maintaining a graph index under constant
eviction, and its memory is fixed at construction. ``docs/matcher.md`` has the measured
cost by buffer length.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SegmentIndex"]


class SegmentIndex:
    """Ring of segment embeddings keyed by their start frame.

    Args:
        capacity: Maximum segments held (the oldest are overwritten).
        dim: Embedding dimension.
    """

    def __init__(self, capacity: int, dim: int) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity={capacity}, dim={dim}; expected >= 1")
        self.capacity = capacity
        self.dim = dim
        self._vectors = np.zeros((capacity, dim), dtype=np.float32)
        self._starts = np.full(capacity, -1, dtype=np.int64)
        self._next = 0
        self.size = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays."""
        return int(self._vectors.nbytes + self._starts.nbytes)

    def add(self, start_frame: int, vector: npt.NDArray[np.float32]) -> None:
        """Insert one segment (its start frame must not precede the previous one's)."""
        self._vectors[self._next] = vector
        self._starts[self._next] = start_frame
        self._next = (self._next + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def search(
        self, query: npt.NDArray[np.float32], min_start: int, max_start: int, k: int
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` segments by cosine among those starting in ``[min_start, max_start]``.

        Returns:
            ``(start_frames, similarities)``, best first (possibly fewer than ``k``).
        """
        if self.size == 0 or max_start < min_start:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        sims = self._vectors[: self.size] @ query
        starts = self._starts[: self.size]
        sims = np.where((starts >= min_start) & (starts <= max_start), sims, -np.inf)
        k = min(k, self.size)
        top = np.argpartition(-sims, k - 1)[:k] if k < self.size else np.arange(self.size)
        top = top[np.argsort(-sims[top])]
        top = top[np.isfinite(sims[top])]
        return starts[top].copy(), sims[top].astype(np.float32)
