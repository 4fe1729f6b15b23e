"""Fixed-capacity ring of normalised frames addressed by global frame index (sans-IO).

The ring holds the last ``capacity`` frames of one stream as float16 unit vectors plus their
activity flags; its memory is allocated once and never grows (``nbytes``).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["FrameRing"]


class FrameRing:
    """Last ``capacity`` frames of a stream.

    Args:
        capacity: Frames kept (older ones are overwritten).
        dim: Frame dimension.
    """

    def __init__(self, capacity: int, dim: int) -> None:
        if capacity < 1 or dim < 1:
            raise ValueError(f"capacity={capacity}, dim={dim}; expected >= 1")
        self.capacity = capacity
        self.dim = dim
        self._frames = np.zeros((capacity, dim), dtype=np.float16)
        self._active = np.zeros(capacity, dtype=bool)
        #: Global index of the next frame to be written (= frames written so far).
        self.end = 0

    @property
    def start(self) -> int:
        """Global index of the oldest frame still held."""
        return max(0, self.end - self.capacity)

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring's arrays."""
        return int(self._frames.nbytes + self._active.nbytes)

    def write(self, frames: npt.NDArray[np.float32], active: npt.NDArray[np.bool_]) -> None:
        """Append ``frames`` ``[T, dim]`` with their activity flags ``[T]``."""
        count = int(frames.shape[0])
        if count > self.capacity:
            frames, active = frames[-self.capacity :], active[-self.capacity :]
            self.end += count - self.capacity
            count = self.capacity
        slots = (np.arange(self.end, self.end + count)) % self.capacity
        self._frames[slots] = frames
        self._active[slots] = active
        self.end += count

    def take(
        self, indices: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Frames at global ``indices`` (any shape) as float32, and a mask that is True
        where the frame is held *and* active; other rows are zeros."""
        idx = np.asarray(indices, dtype=np.int64)
        valid = (idx >= self.start) & (idx < self.end)
        slots = np.where(valid, idx, 0) % self.capacity
        frames = self._frames[slots].astype(np.float32)
        frames[~valid] = 0.0
        return frames, valid & self._active[slots]

    def span(self, start: int, stop: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Frames ``start … stop-1`` (see :meth:`take`)."""
        a, b = start % self.capacity, (stop - 1) % self.capacity
        if start >= self.start and stop <= self.end and stop > start and a <= b:
            return self._frames[a : b + 1].astype(np.float32), self._active[a : b + 1].copy()
        return self.take(np.arange(start, stop, dtype=np.int64))

    def active_fraction(self, start: int, stop: int) -> float:
        """Fraction of frames ``start … stop-1`` that are held and active."""
        if stop <= start:
            return 0.0
        _, ok = self.span(start, stop)
        return float(ok.mean())
