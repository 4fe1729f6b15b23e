"""MatcherSession and MatcherStage: matches filed into a real pattern library, stream by stream."""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from pathlib import Path

import numpy as np

from ostinato.stream.events import MatchEvent
from ostinato.stream.frames import StreamEnd
from ostinato.stream.library import PatternLibrary
from ostinato.stream.matcher_stage import MatcherSession, MatcherStage, MatcherStageConfig
from ostinato.stream.sources import ArraySource

sys.path.insert(0, str(Path(__file__).parent))
from test_matcher import SR, _filler, _jingle, _place  # noqa: E402


def _run(session: MatcherSession, stream: str, jingle_seed: int, filler_seed: int) -> list[MatchEvent]:
    audio = _filler(24.0, filler_seed)
    jingle = _jingle(jingle_seed, 2.0)
    for at in (2.0, 14.0):
        _place(audio, jingle, at)
    events = []
    for i in range(0, audio.size, SR // 5):
        events += session.feed(stream, audio[i : i + SR // 5])
    events += session.end(stream)
    return [e for e in events if isinstance(e, MatchEvent)]


def test_a_stream_name_used_again_files_its_own_patterns(tmp_path: Path) -> None:
    # A new stream of the same name has a new matcher whose pattern ids start again at p0:
    # its repeat is another pattern, with both of its occurrences, not one more of the old.
    session = MatcherSession(MatcherStageConfig(library_path=tmp_path / "patterns.db"))
    try:
        first = _run(session, "radio", 60, 50)
        second = _run(session, "radio", 61, 51)
        assert len(first) == 1 and len(second) == 1
        assert second[0].pattern_id != first[0].pattern_id
        library = session.library
        assert library is not None and library.count() == 2
        for event in (first[0], second[0]):
            assert len(library.occurrences(event.pattern_id)) == 2
    finally:
        session.close()


def test_the_stage_matches_on_its_own_thread_while_the_loop_keeps_serving(tmp_path: Path) -> None:
    # The first feed blocks until a callback scheduled on the event loop runs. On the loop
    # itself that callback could never run (the wait would time out and the test fail); on the
    # matcher thread it runs at once. The stream's repeat is still found and filed, in order.
    stage = MatcherStage(MatcherStageConfig(events_path=tmp_path / "events.jsonl", library_path=tmp_path / "p.db"))
    audio = _filler(24.0, 52)
    jingle = _jingle(62, 2.0)
    for at in (2.0, 14.0):
        _place(audio, jingle, at)
    real_feed, released, threads = stage.session.feed, threading.Event(), set()

    def feed(stream: str, samples: np.ndarray) -> list:  # type: ignore[type-arg]
        threads.add(threading.current_thread().name)
        if not released.is_set():
            assert released.wait(10.0), "the loop could not run while the matcher worked"
        return real_feed(stream, samples)

    stage.session.feed = feed  # type: ignore[method-assign]

    async def main() -> None:
        asyncio.get_running_loop().call_later(0.05, released.set)
        async for _chunk in stage.tap_source(ArraySource(audio, stream_id="radio", block_samples=SR // 5)).chunks():
            pass
        await stage.end_stream(StreamEnd("radio", audio.size))
        await stage.close()

    asyncio.run(main())
    assert threads and all(name.startswith("ostinato-matcher") for name in threads)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    matches = [e for e in lines if e["event"] == "match"]
    assert len(matches) == 1 and abs(matches[0]["start_s"] - 14.0) < 0.5 and abs(matches[0]["first_start_s"] - 2.0) < 0.5
    with PatternLibrary(tmp_path / "p.db") as library:
        assert library.count() == 1 and len(library.occurrences(matches[0]["pattern_id"])) == 2
