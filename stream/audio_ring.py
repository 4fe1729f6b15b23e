"""Fixed-capacity ring of one stream's recent 16 kHz audio, addressed by global sample index
(sans-IO).

The describer (:mod:`ostinato.stream.pattern_describe`) cuts the clip around a pattern's first
occurrence out of this ring, seconds after it was heard. Samples are held as int16 (32 kB
per second of audio: the 10-minute default of ``ostinato run`` is 19.2 MB per stream); memory
is allocated once and never grows (:attr:`AudioRing.nbytes`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["AudioRing"]

_SCALE = 32767.0


class AudioRing:
    """The last ``capacity_samples`` samples of a stream.

    Args:
        capacity_samples: Samples kept (older ones are overwritten).
    """

    def __init__(self, capacity_samples: int) -> None:
        if capacity_samples < 1:
            raise ValueError(f"capacity_samples={capacity_samples}; expected >= 1")
        self.capacity = int(capacity_samples)
        self._data = np.zeros(self.capacity, dtype=np.int16)
        #: Global index of the next sample to be written (= samples written so far).
        self.end = 0

    @property
    def start(self) -> int:
        """Global index of the oldest sample still held."""
        return max(0, self.end - self.capacity)

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring."""
        return int(self._data.nbytes)

    def push(self, samples: npt.NDArray[np.floating]) -> None:
        """Append mono float samples (clipped to [-1, 1]); only the newest ``capacity`` are kept."""
        x = np.asarray(samples, dtype=np.float32).ravel()
        if x.size > self.capacity:
            self.end += x.size - self.capacity
            x = x[-self.capacity:]
        q = np.round(np.clip(np.nan_to_num(x), -1.0, 1.0) * _SCALE).astype(np.int16)
        at = self.end % self.capacity
        first = min(q.size, self.capacity - at)
        self._data[at : at + first] = q[:first]
        self._data[: q.size - first] = q[first:]
        self.end += q.size

    def holds(self, start: int, stop: int) -> bool:
        """Whether every sample of ``[start, stop)`` is still held."""
        return self.start <= start <= stop <= self.end

    def read(self, start: int, stop: int) -> npt.NDArray[np.float32]:
        """Samples ``[start, stop)`` as float32, clipped to what the ring holds (may be empty)."""
        start, stop = max(start, self.start), min(stop, self.end)
        if stop <= start:
            return np.zeros(0, np.float32)
        idx = np.arange(start, stop) % self.capacity
        return self._data[idx].astype(np.float32) / _SCALE
