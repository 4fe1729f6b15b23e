"""ResendBuffer: bounded by acknowledgements and by audio duration, evictions counted."""

from __future__ import annotations

from ostinato.client_buffer import ResendBuffer
from ostinato.stream.wire import Audio


def _frame(seq: int, samples: int = 100) -> Audio:
    return Audio(seq=seq, pcm=b"\0\0" * samples)


def test_acks_free_frames_and_since_returns_the_rest() -> None:
    buf = ResendBuffer(max_samples=10_000, encoding="s16le", channels=1)
    for seq in range(5):
        buf.add(_frame(seq))
    buf.ack(2)
    assert len(buf) == 2 and buf.first_seq() == 3 and buf.samples == 200
    assert [f.seq for f in buf.since(4)] == [4]
    buf.ack(1)  # stale acks change nothing
    assert buf.acked_seq == 2 and len(buf) == 2


def test_the_size_bound_evicts_oldest_and_counts_unacked_ones() -> None:
    buf = ResendBuffer(max_samples=300, encoding="s16le", channels=1)
    for seq in range(6):
        buf.add(_frame(seq))
    assert buf.samples <= 300 and buf.first_seq() == 3 and buf.evicted_unacked == 3
