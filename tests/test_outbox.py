"""OutQueue: output seq numbering, priority shedding, and the bounded replay ring."""

from __future__ import annotations

import numpy as np

from ostinato.outbox import OutQueue
from ostinato.stream.wire import Bye, ErrorFrame, Event, FeaturesFrame, Status


def _drain(q: OutQueue) -> list[object]:
    out = []
    while (f := q.get_nowait()) is not None:
        out.append(f)
    return out


def test_output_frames_are_numbered_others_are_not() -> None:
    q = OutQueue(10)
    q.put(Status())
    q.put(ErrorFrame("x", "y"))
    q.put(Event({"event": "match"}))
    q.put(FeaturesFrame.from_array("s", "o", 0, np.zeros((2, 3), np.float32)))
    q.put(Bye())
    frames = _drain(q)
    assert [getattr(f, "seq", None) for f in frames] == [0, None, 1, 2, None] and q.next_seq == 3


def test_replay_after_requeues_sent_frames_in_order_ahead_of_new_ones() -> None:
    q = OutQueue(100, replay_frames=10)
    for _ in range(6):
        q.put(Status())
    sent = [q.get_nowait() for _ in range(4)]  # seq 0..3 went out; 4, 5 still queued
    assert [f.seq for f in sent] == [0, 1, 2, 3]  # type: ignore[union-attr]
    replay = q.replay_after(1)
    assert (replay.replayed, replay.lost, replay.lost_from_seq) == (2, 0, None)
    assert [f.seq for f in _drain(q)] == [2, 3, 4, 5]  # type: ignore[attr-defined]
    assert q.replay_after(5).replayed == 0  # nothing newer than what the client has


def test_frames_beyond_the_ring_are_reported_lost_and_the_ring_is_bounded_by_bytes() -> None:
    q = OutQueue(100, replay_frames=3)
    for _ in range(8):
        q.put(Status())
    _drain(q)  # 0..7 sent; the ring holds 5, 6, 7
    replay = q.replay_after(0)
    assert (replay.replayed, replay.lost, replay.lost_from_seq) == (3, 4, 1)
    big = OutQueue(100, replay_frames=100, replay_bytes=10_000)
    for _ in range(5):
        big.put(FeaturesFrame.from_array("s", "o", 0, np.zeros((1, 1000), np.float32)))  # ~4.2 kB each
    _drain(big)
    assert big.replay_after(-1).replayed == 2  # only two fit in 10 kB


def test_an_interrupted_send_is_not_replayed_twice() -> None:
    q = OutQueue(10)
    q.put(Status())
    frame = q.get_nowait()
    assert frame is not None
    q.unget(frame)  # the send failed: back in the queue, out of the ring
    assert q.replay_after(-1).replayed == 0 and [f.seq for f in _drain(q)] == [0]  # type: ignore[attr-defined]
