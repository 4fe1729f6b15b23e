"""Frames waiting to be sent to one stream's client, bounded by priority."""

from __future__ import annotations

import asyncio
import collections

from ostinato.stream.wire import Frame

__all__ = ["OutQueue"]

_KEEP_PRIORITY = frozenset({"event", "error", "bye", "ready"})


class OutQueue:
    """Frames waiting for the connection, bounded: status/features frames are dropped oldest
    first beyond ``capacity``; events, errors and ``bye`` are kept (up to 4x capacity)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._items: collections.deque[Frame] = collections.deque()
        self._ready = asyncio.Event()
        self.dropped: collections.Counter[str] = collections.Counter()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, frame: Frame) -> None:
        """Queue a frame without waiting (never blocks the pipeline)."""
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
        """Wait for and return the oldest frame."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        return self._items.popleft()

    def unget(self, frame: Frame) -> None:
        """Put a frame back at the front (its send was interrupted)."""
        self._items.appendleft(frame)
        self._ready.set()

    def get_nowait(self) -> Frame | None:
        """The oldest frame, or ``None``."""
        return self._items.popleft() if self._items else None
