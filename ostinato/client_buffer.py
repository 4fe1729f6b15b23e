"""The client's resend buffer: audio frames the server may still need after a reconnect.

Bounded twice: by the server's acknowledgements (``through_seq`` in ``ready.info`` and
``status``: every audio frame up to it was fully processed, so it is never needed again) and
by ``resend_buffer_s`` of audio (a frame pushed out before it was acknowledged is counted in
:attr:`ResendBuffer.evicted_unacked`: after a drop longer than the buffer, that audio is lost).
Sans-IO: no sockets, no clock.
"""

from __future__ import annotations

import collections

from ostinato.stream.wire import Audio

__all__ = ["ResendBuffer"]

_BYTES_PER_SAMPLE = {"f32le": 4, "s16le": 2}


class ResendBuffer:
    """Audio frames kept for a resume.

    Args:
        max_samples: Most audio kept, in samples at the stream's rate.
        encoding: PCM encoding of the frames (to count their samples).
        channels: Interleaved channels of the frames.
    """

    def __init__(self, max_samples: float, encoding: str, channels: int) -> None:
        self.max_samples = max_samples
        self._width = _BYTES_PER_SAMPLE[encoding] * channels
        self._frames: collections.deque[Audio] = collections.deque()
        self._samples = 0
        #: Highest audio ``seq`` the server said it fully processed (-1: none yet).
        self.acked_seq = -1
        #: Frames dropped from the buffer by the size bound before the server acknowledged them.
        self.evicted_unacked = 0

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def samples(self) -> int:
        """Audio held, in samples."""
        return self._samples

    def add(self, frame: Audio) -> None:
        """Keep a frame just sent; drop the oldest beyond the size bound (counted if unacked)."""
        self._frames.append(frame)
        self._samples += self._count(frame)
        while self._frames and self._samples - self._count(self._frames[0]) >= self.max_samples:
            old = self._frames.popleft()
            self._samples -= self._count(old)
            if old.seq > self.acked_seq:
                self.evicted_unacked += 1

    def ack(self, through_seq: int | None) -> None:
        """The server fully processed every frame up to ``through_seq``: forget them."""
        if through_seq is None or through_seq <= self.acked_seq:
            return
        self.acked_seq = through_seq
        while self._frames and self._frames[0].seq <= through_seq:
            self._samples -= self._count(self._frames.popleft())

    def since(self, next_seq: int) -> list[Audio]:
        """Frames with ``seq >= next_seq`` (what a resumed server has not received)."""
        return [f for f in self._frames if f.seq >= next_seq]

    def first_seq(self) -> int | None:
        """Oldest ``seq`` still held."""
        return self._frames[0].seq if self._frames else None

    def _count(self, frame: Audio) -> int:
        return len(frame.pcm) // self._width
