"""AckTracker: through_seq advances only when a frame's windows and matcher work are done."""

from __future__ import annotations

from ostinato.acks import AckTracker


def test_through_seq_waits_for_windows_and_matcher() -> None:
    t = AckTracker()
    a, b, c = object(), object(), object()
    for chunk, seq in ((a, 0), (b, 1), (c, 2)):
        t.fed(chunk, seq)
    t.window_submitted()
    t.consumed(a, 1600)  # frame 0 completed one window
    t.consumed(b, 3200)  # frame 1 completed none
    assert t.through(matching=True) is None
    t.matched(3200)
    assert t.through(matching=True) is None  # the window of frame 0 is still being inferred
    t.window_done()
    assert t.through(matching=True) == 1  # frame 1 needed nothing more
    assert t.through(matching=False) == 1


def test_frames_dropped_by_the_queue_are_covered_by_the_next_consumed_one() -> None:
    t = AckTracker()
    chunks = [object() for _ in range(4)]
    for seq, chunk in enumerate(chunks):
        t.fed(chunk, seq)
    gap_fill = object()
    t.consumed(gap_fill, 100)  # silence inserted by the server has no client seq
    t.consumed(chunks[3], 200)  # 0..2 were dropped by the overflow policy
    assert t.through(matching=False) == 3


def test_frames_dropped_at_the_tail_are_settled_once_the_queue_is_empty() -> None:
    t = AckTracker()
    kept, dropped = object(), object()
    t.fed(kept, 0)
    t.fed(dropped, 1)
    t.consumed(kept, 160)
    assert t.through(matching=False) == 0
    t.settle(160)  # nothing queued any more: seq 1 was dropped by the overflow policy
    assert t.through(matching=False) == 1
