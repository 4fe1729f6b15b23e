"""Channel: bounded FIFO, overflow policies, EOF, cancellation safety, metrics."""

from __future__ import annotations

import asyncio

import pytest

from ostinato.stream.channel import Channel
from ostinato.stream.errors import ChannelClosedError, ConfigError, EndOfStream
from ostinato.stream.metrics import StreamMetrics


async def test_fifo_and_eof() -> None:
    ch: Channel[int] = Channel(4, name="t")
    for i in range(3):
        await ch.put(i)
    ch.close()
    assert [x async for x in ch] == [0, 1, 2]
    with pytest.raises(EndOfStream):
        await ch.get()


async def test_block_policy_waits_for_space() -> None:
    ch: Channel[int] = Channel(2)
    await ch.put(1)
    await ch.put(2)
    putter = asyncio.ensure_future(ch.put(3))
    await asyncio.sleep(0.01)
    assert not putter.done() and ch.depth == 2
    assert await ch.get() == 1
    await asyncio.wait_for(putter, 1)
    assert [ch.get_nowait(), ch.get_nowait()] == [2, 3]
    assert ch.total_dropped == 0 and ch.max_depth == 2 and ch.put_waits == 1


async def test_offer_never_blocks_and_counts_drops() -> None:
    metrics = StreamMetrics()
    oldest: Channel[int] = Channel(2, "drop_oldest", name="old", metrics=metrics)
    newest: Channel[int] = Channel(2, "drop_newest", name="new", metrics=metrics)
    block: Channel[int] = Channel(2, "block", name="blk", metrics=metrics)
    for i in range(5):
        oldest.offer(i)
        newest.offer(i)
        block.offer(i)
    assert [oldest.get_nowait(), oldest.get_nowait()] == [3, 4]
    assert [newest.get_nowait(), newest.get_nowait()] == [0, 1]
    assert [block.get_nowait(), block.get_nowait()] == [0, 1]
    assert oldest.dropped["drop_oldest"] == 3
    assert newest.dropped["drop_newest"] == 3
    assert block.dropped["full"] == 3
    value = metrics.value
    assert value("ostinato_channel_dropped_items_total", {"channel": "old", "reason": "drop_oldest"}) == 3
    assert value("ostinato_channel_dropped_items_total", {"channel": "blk", "reason": "full"}) == 3
    assert value("ostinato_channel_depth_items", {"channel": "old"}) == 0
    assert value("ostinato_channel_capacity_items", {"channel": "new"}) == 2
    assert value("ostinato_channel_items_total", {"channel": "old"}) == 5


async def test_put_with_drop_policy_does_not_wait() -> None:
    ch: Channel[int] = Channel(1, "drop_oldest")
    await asyncio.wait_for(ch.put(1), 0.5)
    await asyncio.wait_for(ch.put(2), 0.5)
    assert ch.get_nowait() == 2


async def test_close_fails_waiting_putter_and_refuses_offers() -> None:
    ch: Channel[int] = Channel(1)
    await ch.put(1)
    putter = asyncio.ensure_future(ch.put(2))
    await asyncio.sleep(0)
    ch.close()
    with pytest.raises(ChannelClosedError):
        await putter
    assert ch.offer(3) is False and ch.dropped["closed"] == 1
    with pytest.raises(ChannelClosedError):
        await ch.put(4)
    assert await ch.get() == 1  # queued items survive close


async def test_close_wakes_waiting_getter() -> None:
    ch: Channel[int] = Channel(1)
    getter = asyncio.ensure_future(ch.get())
    await asyncio.sleep(0)
    ch.close()
    with pytest.raises(EndOfStream):
        await getter


async def test_cancelled_getter_loses_nothing() -> None:
    ch: Channel[int] = Channel(3)
    g1 = asyncio.ensure_future(ch.get())
    g2 = asyncio.ensure_future(ch.get())
    await asyncio.sleep(0)
    ch.offer(7)  # wakes g1 ...
    g1.cancel()  # ... which is cancelled before it runs: the wake-up must pass to g2
    assert await asyncio.wait_for(g2, 1) == 7
    with pytest.raises(asyncio.CancelledError):
        await g1


async def test_get_nowait_empty_and_discard() -> None:
    ch: Channel[int] = Channel(3)
    with pytest.raises(asyncio.QueueEmpty):
        ch.get_nowait()
    ch.offer(1)
    ch.offer(2)
    assert ch.discard() == 2 and ch.dropped["discarded"] == 2
    ch.close()
    with pytest.raises(EndOfStream):
        ch.get_nowait()


async def test_offer_from_another_thread() -> None:
    loop = asyncio.get_running_loop()
    ch: Channel[int] = Channel(1000, "drop_oldest")

    def producer() -> None:
        for i in range(500):
            loop.call_soon_threadsafe(ch.offer, i)
        loop.call_soon_threadsafe(ch.close)

    await asyncio.to_thread(producer)
    assert [x async for x in ch] == list(range(500))


@pytest.mark.parametrize("kwargs", [{"capacity": 0}, {"capacity": 2, "policy": "lifo"}])
def test_invalid_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        Channel(**kwargs)  # type: ignore[arg-type]


async def test_on_drop_sees_every_dropped_item() -> None:
    seen: list[tuple[int, str]] = []
    ch: Channel[int] = Channel(2, "drop_oldest", on_drop=lambda item, reason: seen.append((item, reason)))
    for i in range(4):
        ch.offer(i)
    ch.close()
    ch.offer(9)
    ch.discard()
    assert seen == [(0, "drop_oldest"), (1, "drop_oldest"), (9, "closed"), (2, "discarded"), (3, "discarded")]


async def test_control_items_are_never_dropped_and_keep_order() -> None:
    ch: Channel[str] = Channel(2, "drop_oldest")
    ch.offer("a")
    ch.put_control("END-1")
    ch.offer("b")
    ch.offer("c")  # full: evicts "a", not the marker
    ch.put_control("END-2")  # beyond capacity: allowed
    assert ch.depth == 4 and ch.dropped["drop_oldest"] == 1
    ch.close()
    assert [x async for x in ch] == ["END-1", "b", "c", "END-2"]
    with pytest.raises(ChannelClosedError):
        ch.put_control("late")


async def test_control_items_do_not_block_putters() -> None:
    ch: Channel[str] = Channel(1)
    ch.put_control("m")
    await asyncio.wait_for(ch.put("x"), 0.5)  # the marker takes no capacity
    assert [ch.get_nowait(), ch.get_nowait()] == ["m", "x"]
