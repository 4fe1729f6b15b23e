"""MatcherSession: matches filed into a real pattern library, stream by stream."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ostinato.stream.events import MatchEvent
from ostinato.stream.matcher_stage import MatcherSession, MatcherStageConfig

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
