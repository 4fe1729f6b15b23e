"""Candidate search over segment embeddings of one stream's buffer (sans-IO).

Every ``hop`` frames the matcher embeds the last ``segment`` frames (a few pooled sub-blocks
of unit frames, L2-normalised) and asks this index for the most similar *earlier* segments.
It is a flat ring of float32 vectors scanned with one matrix-vector product: at the sizes a
stream buffer reaches (an hour at 0.2 s hops is 18,000 vectors of ≤ 256 dims, ~0.3 ms per
query) a flat scan is exact, cheaper than maintaining a graph index under constant
eviction, and its memory is fixed at construction. ``docs/matcher.md`` has the measured
cost by buffer length.

With two views (log-mel: ``[slow view | fast view]`` frames, ``FrameNormalizer``) each
embedding is ``[slow half | fast half]``, each half L2-normalised, plus a flag saying whether
the fast view had settled over the whole segment. Two settled segments compare by
``slow_weight · cos(slow) + (1 − slow_weight) · cos(fast)``; a segment from before the fast
view settled (a stream's first seconds) compares by the slow view alone, so a pattern the
stream began with is still found.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["SegmentIndex"]


class SegmentIndex:
    """Ring of segment embeddings keyed by their start frame.

    Args:
        capacity: Maximum segments held (the oldest are overwritten).
        dim: Embedding dimension (both halves with ``two_views``).
        two_views: Embeddings are ``[slow half | fast half]`` (see the module docs).
        slow_weight: Share of the slow half's cosine between two settled segments (0 … 1).
    """

    def __init__(self, capacity: int, dim: int, two_views: bool = False, slow_weight: float = 1.0) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity={capacity}, dim={dim}; expected >= 1")
        if two_views and dim % 2:
            raise ValueError(f"dim={dim}; two views need an even dimension")
        if not 0.0 <= slow_weight <= 1.0:
            raise ValueError(f"slow_weight={slow_weight}; expected 0 .. 1")
        self.capacity = capacity
        self.dim = dim
        self.two_views = two_views
        self.slow_weight = slow_weight
        # Two views: the halves in separate contiguous arrays, so that a search reads only
        # the half it needs (settled segments compared by the fast view alone: half the scan).
        half = dim // 2 if two_views else dim
        self._vectors = np.zeros((capacity, half), dtype=np.float32)  # the only view, or the slow half
        self._fast = np.zeros((capacity, dim - half if two_views else 0), dtype=np.float32)
        self._settled = np.zeros(capacity, dtype=bool)
        self._starts = np.full(capacity, -1, dtype=np.int64)
        self._next = 0
        self.size = 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the index arrays."""
        return int(self._vectors.nbytes + self._fast.nbytes + self._settled.nbytes + self._starts.nbytes)

    def add(self, start_frame: int, vector: npt.NDArray[np.float32], settled: bool = False) -> None:
        """Insert one segment (its start frame must not precede the previous one's);
        ``settled``: its fast half is valid (two views only)."""
        half = self._vectors.shape[1]
        self._vectors[self._next] = vector[:half]
        self._fast[self._next] = vector[half:]
        self._settled[self._next] = settled and self.two_views
        self._starts[self._next] = start_frame
        self._next = (self._next + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def _similarities(self, query: npt.NDArray[np.float32], settled: bool) -> npt.NDArray[np.float32]:
        n, half = self.size, self._vectors.shape[1]
        slow_query = query[:half]
        if not (self.two_views and settled):
            sims: npt.NDArray[np.float32] = self._vectors[:n] @ slow_query
            return sims
        fast = self._fast[:n] @ query[half:]
        rows_settled = self._settled[:n]
        w = np.float32(self.slow_weight)
        if w > 0:
            slow = self._vectors[:n] @ slow_query
            both: npt.NDArray[np.float32] = np.where(rows_settled, w * slow + (1 - w) * fast, slow)
            return both
        early = np.flatnonzero(~rows_settled)  # a stream's first seconds: compared by the slow view
        if early.size:
            fast[early] = self._vectors[early] @ slow_query
        return fast

    def search(
        self, query: npt.NDArray[np.float32], min_start: int, max_start: int, k: int, settled: bool = False
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Top-``k`` segments by cosine among those starting in ``[min_start, max_start]``
        (``settled``: the query's fast half is valid; two views only).

        Returns:
            ``(start_frames, similarities)``, best first (possibly fewer than ``k``).
        """
        if self.size == 0 or max_start < min_start:
            return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
        sims = self._similarities(query, settled)
        starts = self._starts[: self.size]
        sims = np.where((starts >= min_start) & (starts <= max_start), sims, -np.inf)
        k = min(k, self.size)
        top = np.argpartition(-sims, k - 1)[:k] if k < self.size else np.arange(self.size)
        top = top[np.argsort(-sims[top])]
        top = top[np.isfinite(sims[top])]
        return starts[top].copy(), sims[top].astype(np.float32)
