"""Matcher events and their JSON-lines form (documented in ``docs/events.md``).

Every time is in seconds of *stream audio* (sample index / sample rate, counted from the
stream's first sample); ``detected_at_s`` is the stream time of the newest audio the matcher
had seen when it emitted the event, so ``detected_at_s - end_s`` is the detection latency.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from pathlib import Path
from typing import IO, Any

from ostinato.runtime._closing import Closing

__all__ = ["DescribeEvent", "Event", "EventLog", "MatchEvent", "NoveltyEvent", "event_from_json", "event_to_json"]


def _check_times(**times: float) -> None:
    for name, value in times.items():
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}={value!r}; expected a finite number of seconds >= 0")


@dataclasses.dataclass(frozen=True, slots=True)
class MatchEvent:
    """A sound heard before occurred again.

    Args:
        stream: Stream identifier.
        pattern_id: Identifier of the recurring pattern (the same for every occurrence).
        first_start_s: Start of the pattern's first known occurrence in this stream.
        first_end_s: End of that occurrence.
        start_s: Start of the occurrence just heard.
        end_s: End of the occurrence just heard.
        score: Calibrated similarity in [0, 1] (0 = no more alike than unrelated audio of
            this stream, 1 = identical; see ``docs/matcher.md``).
        detected_at_s: Stream time at which the event was emitted.
    """

    stream: str
    pattern_id: str
    first_start_s: float
    first_end_s: float
    start_s: float
    end_s: float
    score: float
    detected_at_s: float

    def __post_init__(self) -> None:
        _check_times(
            first_start_s=self.first_start_s,
            first_end_s=self.first_end_s,
            start_s=self.start_s,
            end_s=self.end_s,
            detected_at_s=self.detected_at_s,
        )
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score={self.score!r}; expected a value in [0, 1]")
        if self.end_s < self.start_s or self.first_end_s < self.first_start_s:
            raise ValueError(f"span ends before it starts: {self!r}")

    @property
    def duration_s(self) -> float:
        """Length of the occurrence just heard."""
        return self.end_s - self.start_s


@dataclasses.dataclass(frozen=True, slots=True)
class NoveltyEvent:
    """A stretch of audio unlike anything in the matcher's buffer.

    Args:
        stream: Stream identifier.
        start_s: Start of the novel stretch.
        end_s: End of the novel stretch.
        score: Novelty in [0, 1]: 1 minus the best segment similarity found in the buffer.
        detected_at_s: Stream time at which the event was emitted.
    """

    stream: str
    start_s: float
    end_s: float
    score: float
    detected_at_s: float

    def __post_init__(self) -> None:
        _check_times(start_s=self.start_s, end_s=self.end_s, detected_at_s=self.detected_at_s)
        if not 0.0 <= self.score <= 1.0:
            raise ValueError(f"score={self.score!r}; expected a value in [0, 1]")


@dataclasses.dataclass(frozen=True, slots=True)
class DescribeEvent:
    """A pattern was described in words by an audio-language model (GAMA; ``docs/gama.md``).

    Args:
        stream: Stream the clip was cut from.
        pattern_id: The pattern described (the library id when there is a library).
        text: The description, or ``None`` when describing failed.
        error: Why it failed (``Type: message``), or ``None``.
        model: Name of the describing model (its directory name).
        random_weights: The model has random weights: its text is meaningless.
        prompt: The instruction the model answered.
        clip_start_s: Start of the clip the model heard (stream time).
        clip_end_s: End of that clip.
        occurrence: ``first`` (the clip is centred on the pattern's first occurrence) or
            ``latest`` (the first had left the audio ring; the newest occurrence was used).
        elapsed_ms: Time the model took.
        detected_at_s: Stream time of the newest audio when the description was ready.
    """

    stream: str
    pattern_id: str
    text: str | None
    error: str | None
    model: str
    random_weights: bool
    prompt: str
    clip_start_s: float
    clip_end_s: float
    occurrence: str
    elapsed_ms: float
    detected_at_s: float

    def __post_init__(self) -> None:
        _check_times(clip_start_s=self.clip_start_s, clip_end_s=self.clip_end_s, elapsed_ms=self.elapsed_ms,
                     detected_at_s=self.detected_at_s)
        if (self.text is None) == (self.error is None):
            raise ValueError(f"text={self.text!r}, error={self.error!r}; expected exactly one of them")
        if self.occurrence not in ("first", "latest"):
            raise ValueError(f"occurrence={self.occurrence!r}; expected 'first' or 'latest'")


Event = MatchEvent | NoveltyEvent | DescribeEvent

_KINDS: dict[str, type[MatchEvent] | type[NoveltyEvent] | type[DescribeEvent]] = {
    "match": MatchEvent,
    "novelty": NoveltyEvent,
    "describe": DescribeEvent,
}
_NAMES = {cls: kind for kind, cls in _KINDS.items()}


def _round(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def event_to_json(event: Event) -> str:
    """One JSON object (no newline): ``{"event": "match"|"novelty"|"describe", ...fields}``.

    Times and scores are rounded to 0.1 ms / 1e-4.
    """
    record: dict[str, Any] = {"event": _NAMES[type(event)]}
    for field in dataclasses.fields(event):
        record[field.name] = _round(getattr(event, field.name))
    return json.dumps(record, separators=(",", ":"))


def event_from_json(line: str) -> Event:
    """Parse one line written by :func:`event_to_json`; unknown keys are ignored.

    Raises:
        ValueError: Not JSON, unknown ``event`` kind, or missing/invalid fields.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not a JSON event line: {line[:80]!r}") from e
    if not isinstance(record, dict):
        raise ValueError(f"event line is {type(record).__name__}; expected a JSON object")
    kind = record.get("event")
    cls = _KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"event={kind!r}; expected one of {sorted(_KINDS)}")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in record]
    if missing:
        raise ValueError(f"{kind} event lacks {missing}")
    return cls(**{n: record[n] for n in names})


class EventLog(Closing):
    """Appends events to a JSON-lines file, one flushed line per event.

    Args:
        path: File to append to (created with its parent folder if missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] | None = self.path.open("a", encoding="utf-8")
        self._lock = threading.Lock()  # the matcher thread and the loop (describe events) both write
        self.written = 0

    def write(self, events: list[Event]) -> None:
        """Append and flush ``events`` (thread-safe: lines never interleave)."""
        if not events:
            return
        text = "".join(event_to_json(e) + "\n" for e in events)
        with self._lock:
            if self._file is None:
                raise ValueError(f"event log {str(self.path)!r} is closed")
            self._file.write(text)
            self._file.flush()
            self.written += len(events)

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None

