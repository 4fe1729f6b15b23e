"""Frames waiting to be sent to one stream's client, bounded by priority, plus the replay ring.

Output frames (``event``, ``features``, ``status``) get a per-stream sequence number ``seq``
as they are queued, so a client sees loss as a jump. Frames handed to the connection stay in a
bounded replay ring (``replay_frames`` frames, ``replay_bytes`` bytes): a client that resumes
with ``hello.last_output_seq`` gets the later ones again (:meth:`OutQueue.replay_after`);
what already fell out of the ring is reported as lost.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses

from ostinato.stream.wire import Frame

__all__ = ["OutQueue", "Replay"]

_KEEP_PRIORITY = frozenset({"event", "error", "bye", "ready"})
#: Frame types that carry an output sequence number (and can be replayed).
SEQUENCED = frozenset({"event", "features", "status"})
_FRAME_OVERHEAD_BYTES = 200  # rough msgpack size of a frame besides its payload


@dataclasses.dataclass(frozen=True, slots=True)
class Replay:
    """What a resume with ``last_output_seq`` got: frames sent again, and seq numbers lost."""

    after_seq: int
    replayed: int = 0
    lost: int = 0
    lost_from_seq: int | None = None

    def info(self) -> dict[str, int | None]:
        """For ``ready.info.replay``."""
        return {"after_seq": self.after_seq, "replayed": self.replayed, "lost": self.lost, "lost_from_seq": self.lost_from_seq}


class OutQueue:
    """Frames waiting for the connection, bounded: status/features frames are dropped oldest
    first beyond ``capacity``; events, errors and ``bye`` are kept (up to 4x capacity).

    Args:
        capacity: Frames queued before status/features frames are shed.
        replay_frames: Sequenced frames kept after sending, for a resume.
        replay_bytes: Byte bound of the replay ring.
    """

    def __init__(self, capacity: int, replay_frames: int = 256, replay_bytes: int = 2 * 1024 * 1024) -> None:
        self.capacity = capacity
        self.replay_frames = replay_frames
        self.replay_bytes = replay_bytes
        self._items: collections.deque[Frame] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped: collections.Counter[str] = collections.Counter()
        #: Sequence number the next output frame gets.
        self.next_seq = 0
        self._sent: collections.deque[Frame] = collections.deque()
        self._sent_bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Frame) -> None:
        """Queue a frame without waiting (never blocks the pipeline); numbers output frames."""
        if frame.type in SEQUENCED:
            frame = dataclasses.replace(frame, seq=self.next_seq)  # type: ignore[arg-type]
            self.next_seq += 1
        self._items.append(frame)
        if len(self._items) > self.capacity:
            self._shed()
        self._ready.set()

    def _shed(self) -> None:
        for i, item in enumerate(self._items):
            if item.type not in _KEEP_PRIORITY:
                del self._items[i]
                self.dropped[f"send_{item.type}"] += 1
                return
        if len(self._items) > 4 * self.capacity:
            item = self._items.popleft()
            self.dropped[f"send_{item.type}"] += 1

    async def get(self) -> Frame:
        """Wait for and return the oldest frame (an output frame enters the replay ring)."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        frame = self._items.popleft()
        self._remember(frame)
        return frame

    def unget(self, frame: Frame) -> None:
        """Put a frame back at the front (its send was interrupted)."""
        if self._sent and self._sent[-1] is frame:
            self._sent.pop()
            self._sent_bytes -= _size(frame)
        self._items.appendleft(frame)
        self._ready.set()

    def get_nowait(self) -> Frame | None:
        """The oldest frame, or ``None``."""
        frame = self._items.popleft() if self._items else None
        if frame is not None:
            self._remember(frame)
        return frame

    def _remember(self, frame: Frame) -> None:
        if frame.type not in SEQUENCED:
            return
        self._sent.append(frame)
        self._sent_bytes += _size(frame)
        while self._sent and (len(self._sent) > self.replay_frames or self._sent_bytes > self.replay_bytes):
            self._sent_bytes -= _size(self._sent.popleft())

    def replay_after(self, last_seq: int) -> Replay:
        """Queue again, in order and ahead of newer frames, the sent frames after ``last_seq``.

        Returns:
            How many frames were queued again, and how many sequence numbers after
            ``last_seq`` can no longer be sent (they fell out of the ring, or were shed).
        """
        if last_seq >= self.next_seq - 1:
            return Replay(last_seq)
        again = [f for f in self._sent if _seq(f) > last_seq]
        while self._sent and _seq(self._sent[-1]) > last_seq:
            self._sent_bytes -= _size(self._sent.pop())
        self._items.extendleft(reversed(again))
        if self._items:
            self._ready.set()
        first = next((_seq(f) for f in self._items if f.type in SEQUENCED), self.next_seq)
        lost = max(0, first - (last_seq + 1))
        return Replay(last_seq, len(again), lost, last_seq + 1 if lost else None)


def _size(frame: Frame) -> int:
    return len(getattr(frame, "data", b"")) + _FRAME_OVERHEAD_BYTES


def _seq(frame: Frame) -> int:
    value = getattr(frame, "seq", None)
    return value if isinstance(value, int) else -1
