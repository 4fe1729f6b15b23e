"""PeriodicRegions and NoveltyRun: the matcher's loop regions and novelty spans, on their own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ostinato.stream.matcher_config import MatcherConfig
from ostinato.stream.matcher_runs import NoveltyRun, PeriodicRegions, within_loop


def test_regions_follow_their_track_cover_by_majority_and_are_pruned() -> None:
    regions = PeriodicRegions(limit=2, slack=10)
    loop = SimpleNamespace(serial=1, start=100, last_hit=300, lag=50, periodic=True)
    regions.mark(loop)
    loop.last_hit = 500
    regions.update([loop, SimpleNamespace(serial=2, start=0, last_hit=900, lag=50, periodic=False)])  # a plain track is no region
    assert regions.covers(350, 550, 100)  # 151 of 201 frames inside [100, 500], repeating bars of the loop
    assert not regions.covers(450, 650, 100)  # 51 of 201
    assert not regions.covers(600, 900, 100)
    for start in (1000, 2000):  # bounded: the oldest region falls out
        regions.mark(SimpleNamespace(serial=start, start=start, last_hit=start + 100, lag=50, periodic=True))
    assert not regions.covers(350, 550, 100) and regions.covers(1000, 1100, 50)
    regions.prune(1150)
    assert not regions.covers(1000, 1100, 50) and regions.covers(2000, 2100, 50)


def test_region_does_not_hide_the_whole_loop_heard_again() -> None:
    regions = PeriodicRegions(slack=10)
    regions.mark(SimpleNamespace(serial=3, start=1100, last_hit=1400, lag=50, periodic=True))  # loop from ~1050
    # Earlier occurrence inside the loop (one bar, three bars back): music's own repetition.
    assert regions.covers(1100, 1300, 50) and regions.covers(1200, 1400, 150)
    # The earliest the loop can have begun: two periods + slack before its periodic track.
    assert within_loop(990, 1100, 50, 10) and not within_loop(989, 1100, 50, 10)
    # Earlier occurrence 900 frames back, before the loop began: the loop recurring, a pattern.
    assert not regions.covers(1100, 1300, 900)


def test_novelty_run_reports_one_span_when_it_ends_or_grows_too_long() -> None:
    c = MatcherConfig(novelty_threshold=0.5, novelty_max_s=2.0)
    run = NoveltyRun(c)
    seg, hop = c.frames(c.segment_s), c.frames(c.segment_hop_s)
    assert run.step(0.2, enough_history=False, ring_end=500, flush=False) is None  # too little history
    assert run.step(0.2, True, 500, False) is None  # starts a run
    assert run.step(0.4, True, 500 + hop, False) is None
    start, end, score = run.step(0.9, True, 500 + 2 * hop, False)  # a familiar segment ends it
    assert (start, end) == (500 - seg, 500 + hop - 1)
    assert score == pytest.approx(1 - 0.3)
    assert run.step(0.9, True, 600, False) is None  # nothing open
    steps = int(c.novelty_max_s / c.segment_hop_s)
    out = [run.step(0.1, True, 1000 + i * hop, False) for i in range(steps)]
    assert out[:-1] == [None] * (steps - 1) and out[-1] is not None  # cut at novelty_max_s
    run.step(0.1, True, 5000, False)
    assert run.step(None, True, 5000 + hop, flush=True) == (5000 - seg, 5000 + hop - 1, pytest.approx(0.9))


def test_a_later_periodic_track_does_not_extend_a_finished_ones_region() -> None:
    # Regions were keyed by id(track); once a finished loop's track was collected, a new
    # periodic track could get the same id and stretch the old region over everything in
    # between, hiding a jingle heard again later (a flaky full-suite failure). Keyed by serial.
    regions = PeriodicRegions(slack=10)
    regions.mark(SimpleNamespace(serial=10, start=100, last_hit=300, lag=50, periodic=True))
    later = SimpleNamespace(serial=11, start=2000, last_hit=2400, lag=50, periodic=True)
    regions.update([later])
    assert not regions.covers(1200, 1300, 1100)  # between the two loops: no region
    assert regions.covers(150, 250, 50)

