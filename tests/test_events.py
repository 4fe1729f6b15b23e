"""Event dataclasses and their JSON-lines form (docs/events.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ostinato.stream.events import EventLog, MatchEvent, NoveltyEvent, event_from_json, event_to_json

MATCH = MatchEvent("mic", "pat-1", 3.0, 5.02, 12.0, 14.025, 0.98765, 14.4)


def test_match_json_has_exactly_the_documented_fields() -> None:
    record = json.loads(event_to_json(MATCH))
    assert list(record) == ["event", "stream", "pattern_id", "first_start_s", "first_end_s", "start_s", "end_s", "score", "detected_at_s"]
    assert record["event"] == "match" and record["score"] == 0.9877
    assert event_from_json(event_to_json(MATCH)) == MatchEvent("mic", "pat-1", 3.0, 5.02, 12.0, 14.025, 0.9877, 14.4)


def test_novelty_round_trip_and_unknown_keys_ignored() -> None:
    ev = NoveltyEvent("s", 1.0, 2.5, 0.4, 2.7)
    record = json.loads(event_to_json(ev))
    assert record == {"event": "novelty", "stream": "s", "start_s": 1.0, "end_s": 2.5, "score": 0.4, "detected_at_s": 2.7}
    assert event_from_json(json.dumps({**record, "extra": 1})) == ev


@pytest.mark.parametrize(
    "line, message",
    [("nope", "not a JSON"), ("[1]", "JSON object"), ('{"event": "x"}', "expected one of"), ('{"event": "novelty"}', "lacks")],
)
def test_bad_lines_are_refused(line: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        event_from_json(line)


def test_invalid_values_are_refused() -> None:
    with pytest.raises(ValueError, match="score"):
        MatchEvent("s", "p", 0, 1, 2, 3, 1.5, 3)
    with pytest.raises(ValueError, match="start_s"):
        NoveltyEvent("s", -1.0, 1.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="ends before"):
        MatchEvent("s", "p", 0, 1, 3, 2, 0.5, 3)


def test_event_log_appends_flushed_lines(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "events.jsonl"
    with EventLog(path) as log:
        log.write([MATCH])
        assert path.read_text().count("\n") == 1  # flushed before close
        log.write([NoveltyEvent("s", 1.0, 2.0, 0.3, 2.2)])
    with EventLog(path) as log:
        log.write([MATCH])
    lines = path.read_text().splitlines()
    assert [event_from_json(x).__class__.__name__ for x in lines] == ["MatchEvent", "NoveltyEvent", "MatchEvent"]
    with pytest.raises(ValueError, match="closed"):
        log.write([MATCH])
