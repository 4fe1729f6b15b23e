"""Per-stream key/value past for the cached Wav2Vec2 encoder (``encoder_cached.onnx``).

Streaming in windows, each window ``[left | hop | right]`` used to run every frame through
the transformer. With the cached encoder a window runs only its *new* frames (hop + right
context); their queries attend to the per-layer keys/values of the window's left-context
frames, kept from the windows that computed them as *core* frames. Right-context frames are
not kept: the next window computes them again as its core, with their own right context.

:class:`KVState` is one stream's bounded ring of those keys/values: at most
``KVConfig.max_past_frames`` frames x layers x 2 x hidden float32 (base: 72 KiB per frame;
it keeps one window's frames: 99 at the default geometry, 7 MiB; 36 MiB at the 512-frame
bound). A past is read as at most two views of the ring (:meth:`KVState.past_parts`), which
:func:`cached_feeds` copies straight into the batch's feed: one copy per frame, no gather.
Frames are appended in order; a gap (a dropped or failed window) makes the next window start a
new past (:meth:`KVState.restart`, counted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["KVConfig", "KVLayout", "KVState", "cached_feeds"]


@dataclasses.dataclass(frozen=True, slots=True)
class KVConfig:
    """How the stage keeps each stream's key/value past.

    Args:
        max_past_frames: Most past frames per stream (the ring's bound). A window whose
            left context is longer attends to its newest ``max_past_frames`` frames only.
    """

    max_past_frames: int = 512

    def __post_init__(self) -> None:
        if not isinstance(self.max_past_frames, int) or self.max_past_frames < 1:
            raise ValueError(f"max_past_frames={self.max_past_frames!r}; expected a positive integer")


@dataclasses.dataclass(frozen=True, slots=True)
class KVLayout:
    """Shape of the cached encoder's past (from the manifest's ``extra["cached_encoder"]``).

    Args:
        num_layers: Transformer layers.
        num_heads: Attention heads.
        head_dim: Width of one head.
        context_frames: Frames before the new ones the positional convolution reads.
    """

    num_layers: int
    num_heads: int
    head_dim: int
    context_frames: int

    @property
    def frame_bytes(self) -> int:
        """Bytes of one past frame (all layers, keys and values, float32)."""
        return self.num_layers * 2 * self.num_heads * self.head_dim * 4

    def empty(self, rows: int, frames: int = 0) -> npt.NDArray[np.float32]:
        """Zero past ``[layers, 2, rows, heads, frames, head_dim]``."""
        return np.zeros((self.num_layers, 2, rows, self.num_heads, frames, self.head_dim), np.float32)


class KVState:
    """One stream's ring of per-layer keys/values of its newest core frames.

    Holds frames ``[first_frame, next_frame)`` (contiguous, at most :attr:`capacity`) in a ring
    of exactly :attr:`capacity` frames: appending overwrites the oldest, a past is read as one
    or two views (:meth:`past_parts`). Not thread-safe: the stage keeps at most one window per
    stream in flight, which serialises every access.

    Args:
        layout: Past shape.
        config: Bound of the ring.
    """

    def __init__(self, layout: KVLayout, config: KVConfig) -> None:
        self.layout = layout
        self.config = config
        self._buf = np.zeros((layout.num_layers, 2, layout.num_heads, 0, layout.head_dim), np.float32)
        self._start = 0  # ring index of first_frame
        self.restarts = 0
        self.frames_stored = 0
        self.next_frame = 0
        self.first_frame = 0

    @property
    def capacity(self) -> int:
        """Frames the state keeps now (grows on demand up to ``max_past_frames``)."""
        return int(self._buf.shape[3])

    @property
    def nbytes(self) -> int:
        """Bytes held by the ring (:attr:`capacity` frames)."""
        return int(self._buf.nbytes)

    @property
    def _count(self) -> int:
        return self.next_frame - self.first_frame

    def has(self, first: int, end: int) -> bool:
        """Whether frames ``[first, end)`` are all kept and end where the kept frames end."""
        return end == self.next_frame and self.first_frame <= first <= end

    def restart(self, first: int) -> bool:
        """Forget the past; the next stored frame is ``first``. Returns whether this counts as a
        restart (something had been stored), as :attr:`restarts` does."""
        counted = self.frames_stored > 0
        self.restarts += counted
        self.first_frame = self.next_frame = first
        self._start = 0
        return counted

    def past_parts(self, first: int, end: int) -> tuple[npt.NDArray[np.float32], ...]:
        """Keys/values of frames ``[first, end)`` in order, as one or two views of the ring
        (``[layers, 2, heads, n, head_dim]`` each; none for an empty past).

        Raises:
            ValueError: Not all of those frames are kept.
        """
        if not self.has(first, end):
            raise ValueError(f"past [{first}, {end}) not cached (ring holds [{self.first_frame}, {self.next_frame}))")
        return self._slices(self._start + first - self.first_frame, end - first)

    def store(self, first: int, present: npt.NDArray[np.float32], want: int) -> None:
        """Append frames ``[first, first + n)`` (``present [layers, 2, heads, n, head_dim]``).

        ``first`` must be :attr:`next_frame` (call :meth:`restart` first otherwise). ``want``
        is how many past frames the stream's windows ask for: the ring grows to it (bounded).
        """
        if first != self.next_frame:
            raise ValueError(f"K/V must be stored in order: got frame {first}, expected {self.next_frame}")
        self._grow(min(max(want, 1), self.config.max_past_frames))
        size = self.capacity
        new = present[:, :, :, -size:]
        n = new.shape[3]
        keep = min(self._count, size - n)
        if keep == 0:
            self._start, at = 0, 0
        else:
            at = (self._start + self._count) % size
            self._start = (self._start + self._count - keep) % size
        done = 0
        for part in self._slices(at, n):  # overwrites exactly the frames that fall out
            part[...] = new[:, :, :, done : done + part.shape[3]]
            done += part.shape[3]
        self.next_frame = first + present.shape[3]
        self.first_frame = self.next_frame - keep - n
        self.frames_stored += present.shape[3]

    def _slices(self, at: int, n: int) -> tuple[npt.NDArray[np.float32], ...]:
        """Views of ``n`` ring slots from slot ``at`` (mod capacity), in order."""
        if n == 0:
            return ()
        size = self.capacity
        at %= size
        if at + n <= size:
            return (self._buf[:, :, :, at : at + n],)
        return self._buf[:, :, :, at:], self._buf[:, :, :, : at + n - size]

    def _grow(self, size: int) -> None:
        if size <= self.capacity:
            return
        count = self._count
        buf = np.zeros((*self._buf.shape[:3], size, self._buf.shape[4]), np.float32)
        done = 0
        for part in self._slices(self._start, count):
            buf[:, :, :, done : done + part.shape[3]] = part
            done += part.shape[3]
        self._buf, self._start = buf, 0


def cached_feeds(
    layout: KVLayout,
    conv: Sequence[npt.NDArray[np.float32]],
    context: Sequence[npt.NDArray[np.float32]],
    pasts: Sequence[Sequence[npt.NDArray[np.float32]]],
) -> dict[str, npt.NDArray[np.float32]]:
    """Batch rows into ``encoder_cached.onnx`` feeds; shorter pasts are padded and masked.

    Args:
        layout: Past shape.
        conv: Per row ``[P + N, C]`` conv frames (``P`` context frames, then ``N`` new ones;
            equal ``N`` across rows).
        context: Per row ``[P]`` 1/0: which context frames exist.
        pasts: Per row its past in order, as consecutive parts ``[layers, 2, heads, n, head_dim]``
            (:meth:`KVState.past_parts`; an empty sequence for no past). Copied once, straight
            into the feed.

    Returns:
        ``conv_features``, ``context_mask``, ``past_key_values``, ``past_mask``.
    """
    rows = len(conv)
    lengths = [sum(int(part.shape[3]) for part in p) for p in pasts]
    longest = max(lengths)
    kv = layout.empty(rows, longest)
    mask = np.zeros((rows, longest), np.float32)
    for b, (parts, n) in enumerate(zip(pasts, lengths, strict=True)):
        at = longest - n
        for part in parts:
            kv[:, :, b, :, at : at + part.shape[3]] = part
            at += part.shape[3]
        mask[b, longest - n :] = 1.0
    return {
        "conv_features": np.stack(conv).astype(np.float32, copy=False),
        "context_mask": np.stack(context).astype(np.float32, copy=False),
        "past_key_values": kv,
        "past_mask": mask,
    }
