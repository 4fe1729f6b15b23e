"""Bounded asyncio channels with an explicit overflow policy.

A :class:`Channel` is the only kind of edge between pipeline stages. It is bounded, and what
happens when it is full is chosen per edge:

``block``
    :meth:`Channel.put` waits for space (backpressure: the slowest stage sets the pace).
``drop_oldest``
    the oldest queued item is discarded to make room (live audio: keep the freshest).
``drop_newest``
    the new item is discarded.

:meth:`Channel.offer` never waits, whatever the policy, so an audio callback running on
another thread can call it through ``loop.call_soon_threadsafe(channel.offer, item)``; on a
full ``block`` channel it refuses the item and counts it as dropped (reason ``full``).
:meth:`Channel.close` marks end of stream: readers drain what is queued, then get
:class:`~ostinato.stream.errors.EndOfStream` (or ``async for`` ends). Every drop is counted
on the channel and, when metrics are attached, in ``ostinato_channel_dropped_items_total``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import AsyncIterator, Callable
from typing import Generic, Literal, TypeVar, get_args

from ostinato.stream.errors import ChannelClosedError, ConfigError, EndOfStream
from ostinato.stream.metrics import StreamMetrics

__all__ = ["OVERFLOW_POLICIES", "Channel", "OverflowPolicy"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
OverflowPolicy = Literal["block", "drop_oldest", "drop_newest"]
OVERFLOW_POLICIES: tuple[str, ...] = get_args(OverflowPolicy)


class Channel(Generic[T]):
    """A bounded FIFO between two pipeline stages.

    Must be used from one event loop; other threads reach it only through
    ``loop.call_soon_threadsafe(channel.offer, item)``.

    Args:
        capacity: Maximum queued items (>= 1).
        policy: Overflow policy: ``block``, ``drop_oldest`` or ``drop_newest``.
        name: Label used in metrics and logs.
        metrics: Where to export depth and drop counts (optional).
        on_drop: Called as ``(item, reason)`` for every dropped item (accounting hook;
            must not raise or block).

    Raises:
        ConfigError: If ``capacity`` or ``policy`` is invalid.
    """

    def __init__(
        self,
        capacity: int,
        policy: OverflowPolicy = "block",
        *,
        name: str = "channel",
        metrics: StreamMetrics | None = None,
        on_drop: Callable[[T, str], None] | None = None,
    ) -> None:
        if not isinstance(capacity, int) or capacity < 1:
            raise ConfigError(f"channel {name!r}: capacity={capacity!r}; expected an integer >= 1")
        if policy not in OVERFLOW_POLICIES:
            raise ConfigError(f"channel {name!r}: policy={policy!r}; expected one of {OVERFLOW_POLICIES}")
        self.capacity = capacity
        self.policy: OverflowPolicy = policy
        self.name = name
        # (item, is_control): control items (end-of-stream markers) bypass capacity and drops.
        self._items: collections.deque[tuple[T, bool]] = collections.deque()
        self._data = 0  # data items queued (what capacity bounds)
        self._getters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._putters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False
        #: Drops by reason (``drop_oldest``, ``drop_newest``, ``full``, ``closed``, ``discarded``).
        self.dropped: collections.Counter[str] = collections.Counter()
        #: Items accepted so far.
        self.accepted = 0
        #: Highest number of data items queued at once (control items excluded).
        self.max_depth = 0
        #: :meth:`put` calls that found the channel full and waited (backpressure engaged).
        self.put_waits = 0
        self._depth_gauge = None
        self._accepted_counter = None
        self._metrics = metrics
        self.on_drop = on_drop
        if metrics is not None:
            metrics.channel_capacity.labels(name).set(capacity)
            self._depth_gauge = metrics.channel_depth.labels(name)
            self._accepted_counter = metrics.channel_items.labels(name)

    # -- state -----------------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Items queued now."""
        return len(self._items)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called (items may still be queued)."""
        return self._closed

    @property
    def total_dropped(self) -> int:
        """All drops, every reason."""
        return sum(self.dropped.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return (
            f"Channel(name={self.name!r}, depth={self.depth}/{self.capacity}, "
            f"policy={self.policy!r}, closed={self._closed})"
        )

    # -- producers ---------------------------------------------------------------------------

    def offer(self, item: T) -> bool:
        """Queue ``item`` without ever waiting, applying the overflow policy.

        Args:
            item: The item.

        Returns:
            True if the item was queued (with ``drop_oldest`` an older item may have been
            dropped for it), False if it was dropped (channel full with ``drop_newest`` or
            ``block``, or channel closed).
        """
        if self._closed:
            self._count_drop("closed", item)
            return False
        if self._data >= self.capacity:
            if self.policy == "drop_oldest":
                self._count_drop("drop_oldest", self._evict_oldest_data())
            else:
                self._count_drop("drop_newest" if self.policy == "drop_newest" else "full", item)
                return False
        self._append(item)
        return True

    async def put(self, item: T) -> None:
        """Queue ``item``; with ``block`` wait for space, otherwise behave like :meth:`offer`.

        Args:
            item: The item.

        Raises:
            ChannelClosedError: If the channel is (or gets) closed before the item is queued.
        """
        if self._closed:
            raise ChannelClosedError(f"put on closed channel {self.name!r}")
        if self.policy != "block":
            self.offer(item)
            return
        if self._data >= self.capacity:
            self.put_waits += 1
        while self._data >= self.capacity:
            await self._wait(self._putters)
            if self._closed:
                raise ChannelClosedError(f"channel {self.name!r} closed while waiting for space")
        self._append(item)

    def put_control(self, item: T) -> None:
        """Queue a control item (e.g. an end-of-stream marker): never waits, never dropped.

        Control items keep their place in the FIFO order but do not count against the
        capacity, and ``drop_oldest`` evicts data items around them.

        Raises:
            ChannelClosedError: If the channel is closed.
        """
        if self._closed:
            raise ChannelClosedError(f"put_control on closed channel {self.name!r}")
        self._append(item, control=True)

    def close(self) -> None:
        """Mark end of stream. Queued items can still be read; waiting writers fail."""
        if self._closed:
            return
        self._closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                fut = waiters.popleft()
                if not fut.done():
                    fut.set_result(None)

    def discard(self) -> int:
        """Drop everything queued (forced shutdown), counting it as ``discarded``.

        Returns:
            The number of items dropped.
        """
        n = len(self._items)
        while self._items:
            item, _ = self._items.popleft()
            self._count_drop("discarded", item)
        self._data = 0
        for _ in range(min(n, len(self._putters))):
            self._wake(self._putters)
        self._update_depth()
        return n

    # -- consumers ---------------------------------------------------------------------------

    async def get(self) -> T:
        """Return the oldest item, waiting for one.

        Raises:
            EndOfStream: If the channel is closed and empty.
        """
        while not self._items:
            if self._closed:
                raise EndOfStream(f"channel {self.name!r} closed")
            await self._wait(self._getters)
        return self._pop()

    def get_nowait(self) -> T:
        """Return the oldest item without waiting.

        Raises:
            asyncio.QueueEmpty: If nothing is queued but the channel is open.
            EndOfStream: If the channel is closed and empty.
        """
        if not self._items:
            if self._closed:
                raise EndOfStream(f"channel {self.name!r} closed")
            raise asyncio.QueueEmpty
        return self._pop()

    def __aiter__(self) -> AsyncIterator[T]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[T]:
        while True:
            try:
                item = await self.get()
            except EndOfStream:
                return
            yield item

    # -- internals ---------------------------------------------------------------------------

    def _append(self, item: T, control: bool = False) -> None:
        self._items.append((item, control))
        self._data += not control
        self.accepted += 1
        if self._accepted_counter is not None:
            self._accepted_counter.inc()
        if self._data > self.max_depth:
            self.max_depth = self._data
        self._update_depth()
        self._wake(self._getters)

    def _pop(self) -> T:
        item, control = self._items.popleft()
        self._data -= not control
        self._update_depth()
        self._wake(self._putters)
        return item

    def _evict_oldest_data(self) -> T:
        for i, (item, control) in enumerate(self._items):
            if not control:
                del self._items[i]
                self._data -= 1
                return item
        raise RuntimeError("channel full of control items (bug)")  # capacity >= 1 data item

    def _count_drop(self, reason: str, item: T) -> None:
        self.dropped[reason] += 1
        if self._metrics is not None:
            self._metrics.channel_dropped.labels(self.name, reason).inc()
        if self.on_drop is not None:
            self.on_drop(item, reason)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug("channel %s dropped an item: %s", self.name, reason)

    def _update_depth(self) -> None:
        if self._depth_gauge is not None:
            self._depth_gauge.set(len(self._items))

    @staticmethod
    def _wake(waiters: collections.deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    async def _wait(self, waiters: collections.deque[asyncio.Future[None]]) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters.append(fut)
        try:
            await fut
        except asyncio.CancelledError:
            # Pass our wake-up on, so a cancelled waiter never swallows it (asyncio.Queue does
            # the same).
            if fut.done() and not fut.cancelled():
                self._wake(waiters)
            else:
                try:
                    waiters.remove(fut)
                except ValueError:
                    pass
            raise
