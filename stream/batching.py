"""How the inference stage forms batches: plain, or gated per stream for the K/V path.

:func:`collect_plain` takes windows in arrival order, up to ``batch_size`` of equal length
(waiting at most ``max_wait_s`` for more); an end marker closes a batch. With the
left-context K/V cache (:mod:`ostinato.stream.kv_cache`) a stream's window needs the
previous one's keys/values, so :func:`collect_gated` also holds back a window whose stream
has one in flight or held (:class:`StreamGate`), while other streams still batch together.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Sequence
from typing import Any

from ostinato.stream.channel import Channel
from ostinato.stream.errors import EndOfStream
from ostinato.stream.frames import StreamEnd, Window

__all__ = ["StreamGate", "collect_gated", "collect_plain"]

_FREED = object()


async def collect_plain(
    inbox: Channel[Window | StreamEnd],
    held: Window | StreamEnd | None,
    batch_size: int,
    max_wait_s: float,
    on_first: Callable[[], None],
) -> tuple[list[Window], StreamEnd | None, Window | StreamEnd | None]:
    """Next batch of equal-length windows, or an end marker (which closes a batch).

    Args:
        inbox: Windows and end markers of every stream.
        held: The item the previous call held back (it goes first), or ``None``.
        batch_size: Most windows per batch.
        max_wait_s: Longest wait for more windows once the first one is in.
        on_first: Called once the batch's first window is in.

    Returns:
        The batch, the end marker that closed it (or ``None``), and the item held back for
        the next call (a shorter end-of-stream window, or ``None``). ``([], None, None)``
        once the inbox ended.
    """
    item = held
    if item is None:
        try:
            item = await inbox.get()
        except EndOfStream:
            return [], None, None
    if isinstance(item, StreamEnd):
        return [], item, None
    batch = [item]
    on_first()
    deadline = asyncio.get_running_loop().time() + max_wait_s
    while len(batch) < batch_size:
        try:
            nxt = await _next_before(inbox, deadline)
        except (TimeoutError, EndOfStream):
            break
        if isinstance(nxt, StreamEnd):
            return batch, nxt, None
        if nxt.num_samples != batch[0].num_samples:
            return batch, None, nxt  # a shorter end-of-stream window: it runs in its own batch
        batch.append(nxt)
    return batch, None, None


class StreamGate:
    """At most one window per stream in flight; later ones (and their end marker) wait.

    Sans-IO apart from :attr:`freed` (an event set whenever a stream finishes a window).

    Args:
        max_held: Most items held back; beyond it the stage stops reading its inbox.
    """

    def __init__(self, max_held: int) -> None:
        self.max_held = max_held
        self._held: collections.deque[Window | StreamEnd] = collections.deque()
        self._busy: set[str] = set()
        self.freed = asyncio.Event()
        self.max_held_seen = 0

    @property
    def held(self) -> int:
        """Items waiting for their stream."""
        return len(self._held)

    @property
    def full(self) -> bool:
        """Whether the stage must wait for a stream to finish before reading more."""
        return len(self._held) >= self.max_held

    @property
    def in_flight(self) -> frozenset[str]:
        """Streams with a window in flight."""
        return frozenset(self._busy)

    def admit(self, item: Window | StreamEnd, batch_streams: set[str]) -> bool:
        """Whether ``item`` may go now; otherwise it is held (in arrival order)."""
        stream = item.stream_id
        blocked = any(h.stream_id == stream for h in self._held)
        if isinstance(item, Window):
            blocked = blocked or stream in self._busy or stream in batch_streams
        if blocked:
            self._held.append(item)
            self.max_held_seen = max(self.max_held_seen, len(self._held))
        return not blocked

    def hold(self, item: Window | StreamEnd) -> None:
        """Hold an admitted item back after all (e.g. a window of another length)."""
        self._held.append(item)
        self.max_held_seen = max(self.max_held_seen, len(self._held))

    def take(self, batch_streams: set[str], num_samples: int | None = None) -> Window | StreamEnd | None:
        """The oldest held item that may go now (first of its stream, stream free), or ``None``."""
        seen: set[str] = set()
        for i, item in enumerate(self._held):
            stream = item.stream_id
            if stream in seen:
                continue
            seen.add(stream)
            if isinstance(item, Window) and (
                stream in self._busy or stream in batch_streams or (num_samples is not None and item.num_samples != num_samples)
            ):
                continue
            del self._held[i]
            return item
        return None

    def start(self, windows: Sequence[Window]) -> None:
        """Mark the streams of a dispatched batch busy."""
        self._busy.update(w.stream_id for w in windows)

    def finish(self, windows: Sequence[Window]) -> None:
        """Their windows are done (run, dropped or failed): the streams may go again."""
        self._busy.difference_update(w.stream_id for w in windows)
        self.freed.set()

    @property
    def idle(self) -> bool:
        """Nothing held and nothing in flight."""
        return not self._held and not self._busy


async def collect_gated(
    gate: StreamGate, inbox: Channel[Window | StreamEnd], batch_size: Callable[[], int], max_wait_s: float
) -> tuple[list[Window], StreamEnd | None]:
    """Next batch of equal-length windows of distinct, idle streams, or an end marker.

    Like the stage's plain batching (an end marker closes a batch), but a window whose stream
    has a window in flight or held is held back (:class:`StreamGate`) and goes in a later
    batch. ``batch_size()`` is asked once the first window is in (the limit can depend on
    what finished meanwhile). Returns ``([], None)`` once the inbox ended and nothing
    is held.
    """
    first = await _first_item(gate, inbox)
    if first is None or isinstance(first, StreamEnd):
        return [], first
    limit = batch_size()
    batch, streams = [first], {first.stream_id}
    deadline = asyncio.get_running_loop().time() + max_wait_s
    while len(batch) < limit:
        item = gate.take(streams, first.num_samples)
        if item is None:
            if gate.full:
                break
            try:
                item = await _next_before(inbox, deadline)
            except (TimeoutError, EndOfStream):
                break
            if not gate.admit(item, streams):
                continue
        if isinstance(item, StreamEnd):
            return batch, item
        if item.num_samples != first.num_samples:
            gate.hold(item)  # a shorter end-of-stream window: a batch of its own later
            continue
        batch.append(item)
        streams.add(item.stream_id)
    return batch, None


async def _first_item(gate: StreamGate, inbox: Channel[Window | StreamEnd]) -> Window | StreamEnd | None:
    while True:
        item = gate.take(set())
        if item is not None:
            return item
        got = await _inbox_or_freed(gate, inbox)
        if got is _FREED:
            continue
        if got is None:  # the inbox ended: wait for the held windows' streams
            if not gate.held:
                return None
            await gate.freed.wait()
            gate.freed.clear()
            continue
        if isinstance(got, (Window, StreamEnd)) and gate.admit(got, set()):
            return got


async def _inbox_or_freed(gate: StreamGate, inbox: Channel[Window | StreamEnd]) -> object:
    """An inbox item, ``None`` at its end, or ``_FREED`` when a stream finished first."""
    if gate.freed.is_set() or gate.full:
        await gate.freed.wait()
        gate.freed.clear()
        return _FREED
    if not gate.held:  # nothing waits for a stream: only the inbox matters
        try:
            return await inbox.get()
        except EndOfStream:
            return None
    get = asyncio.ensure_future(inbox.get())
    wake = asyncio.ensure_future(gate.freed.wait())
    try:
        await asyncio.wait({get, wake}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (get, wake):
            if not task.done():
                task.cancel()  # Channel.get pops only after its wait: a cancelled get loses nothing
            task.add_done_callback(_retrieve)
    if get.done() and not get.cancelled():
        error = get.exception()
        if isinstance(error, EndOfStream):
            return None
        if error is not None:
            raise error
        return get.result()
    gate.freed.clear()
    return _FREED


def _retrieve(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


async def _next_before(inbox: Channel[Window | StreamEnd], deadline: float) -> Window | StreamEnd:
    """The next inbox item, waiting until the loop time ``deadline`` at most."""
    try:
        return inbox.get_nowait()
    except asyncio.QueueEmpty:
        pass
    remaining = deadline - asyncio.get_running_loop().time()
    if remaining <= 0:
        raise TimeoutError
    async with asyncio.timeout(remaining):
        return await inbox.get()
