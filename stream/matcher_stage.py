"""Pipeline stage around :class:`~ostinato.stream.matcher.PatternMatcher` (one per stream).

The stage takes frame features in stream order and writes the matcher's events to an
:class:`~ostinato.stream.events.EventLog` and, for matches, to a
:class:`~ostinato.stream.library.PatternLibrary`. Two feature kinds:

``logmel``
    the stage computes log-mel frames itself from the stream's audio (:meth:`feed`); model
    features are ignored. Works with random-weight models or none.
``model``
    the model's frames (:meth:`consume`) are matched; the audio fed through :meth:`feed`
    only supplies the per-frame energy of the silence gate.

The synchronous core, :class:`MatcherSession`, is what ``ostinato match`` uses on files; the
async methods are the thin shell the pipeline calls (``FeatureConsumer`` protocol). The shell
runs every session call on one matcher thread, in order: the search, the second-stage
verification and the library's SQLite writes never hold up the event loop (sources, batching,
other streams), as in the service.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime.logmel import LogMel, LogMelStream
from ostinato.stream.embedding import clip_embedding, pattern_feature_name
from ostinato.stream.events import DescribeEvent, Event, EventLog, MatchEvent
from ostinato.stream.library import PatternLibrary
from ostinato.stream.matcher import FeatureBlock, MatcherConfig, PatternMatcher

__all__ = ["MatcherSession", "MatcherStage", "MatcherStageConfig"]

logger = logging.getLogger(__name__)

_ENERGY_FRAMES_KEPT = 3000  # per stream: a minute of frame energies waiting for model features
_RAW_MARGIN_S = 10.0  # raw frames kept beyond max_pattern_s, to embed the occurrence just heard


@dataclasses.dataclass(frozen=True, slots=True)
class MatcherStageConfig:
    """What the stage matches on and where events go.

    Args:
        features: ``logmel`` or ``wav2vec2[:LAYER]`` (any model output).
        matcher: Matcher settings (default: :meth:`MatcherConfig.for_features`).
        events_path: JSON-lines file for events (None: not written).
        library_path: Pattern library to file matches in (None: none).
    """

    features: str = "logmel"
    matcher: MatcherConfig | None = None
    events_path: Path | None = None
    library_path: Path | None = None

    def __post_init__(self) -> None:
        if not (self.features == "logmel" or self.features.split(":", 1)[0] == "wav2vec2"):
            raise ValueError(f"features={self.features!r}; expected 'logmel' or 'wav2vec2[:LAYER]'")

    @property
    def matcher_config(self) -> MatcherConfig:
        """The matcher settings in effect."""
        return self.matcher if self.matcher is not None else MatcherConfig.for_features(self.features)


class MatcherSession:
    """Synchronous per-process core: matchers per stream, event log, library filing.

    Args:
        config: Stage settings.
        on_event: Called with every event (e.g. for a status line).
    """

    def __init__(self, config: MatcherStageConfig, on_event: Callable[[Event], None] | None = None) -> None:
        self.config = config
        self._on_event = on_event
        self._logmel = LogMel()
        self._matchers: dict[str, PatternMatcher] = {}
        self._logmel_streams: dict[str, LogMelStream] = {}
        self._energy: dict[str, collections.deque[tuple[int, float]]] = {}
        self._raw: dict[str, collections.deque[tuple[int, npt.NDArray[np.float32], npt.NDArray[np.float32] | None]]] = {}
        self._ids: dict[str, dict[str, str]] = {}  # per stream: matcher pattern id -> library id
        self.events = EventLog(config.events_path) if config.events_path is not None else None
        self.library = PatternLibrary(config.library_path) if config.library_path is not None else None
        self.matches = 0
        self.novelties = 0
        self.last_match: MatchEvent | None = None
        #: Describes each new pattern (``attach_describer``); ``None``: no descriptions.
        self.describer: Any = None
        self._seen: dict[str, set[str]] = {}  # matcher pattern ids per stream (a stream's calls never overlap)

    def attach_describer(self, describer: Any) -> None:
        """Describe new patterns with a :class:`~ostinato.stream.pattern_describe.PatternDescriber`
        (it gets every stream's audio); its ``describe`` events go to the event log and ``on_event``."""
        self.describer = describer
        describer.listeners.append(self._described)

    def _described(self, event: DescribeEvent) -> None:
        if self.events is not None:
            self.events.write([event])
        if self._on_event is not None:
            self._on_event(event)

    def _matcher(self, stream: str) -> PatternMatcher:
        if stream not in self._matchers:
            self._matchers[stream] = PatternMatcher(self.config.matcher_config, stream)
            self._logmel_streams[stream] = LogMelStream(self._logmel, stream)
            self._energy[stream] = collections.deque(maxlen=_ENERGY_FRAMES_KEPT)
            self._raw[stream] = collections.deque()
        return self._matchers[stream]

    def _push(self, stream: str, matcher: PatternMatcher, block: FeatureBlock) -> list[Event]:
        start = matcher.frames_seen if block.start_frame is None else block.start_frame
        raw = self._raw[stream]
        raw.append((start, np.asarray(block.frames, np.float32), block.energy_db))
        keep = matcher.config.frames(matcher.config.max_pattern_s + _RAW_MARGIN_S)
        while raw and raw[0][0] + raw[0][1].shape[0] < start + block.frames.shape[0] - keep:
            raw.popleft()
        return self._handle(stream, matcher, matcher.push(block))

    def _raw_span(self, stream: str, first: int, stop: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32] | None] | None:
        pieces = [(s, f, e) for s, f, e in self._raw.get(stream, ()) if s < stop and s + f.shape[0] > first]
        if not pieces:
            return None
        frames = np.concatenate([f[max(0, first - s) : stop - s] for s, f, _ in pieces])
        energies = [e for _, _, e in pieces]
        energy = None if any(e is None for e in energies) else np.concatenate(
            [e[max(0, first - s) : stop - s] for (s, _, _), e in zip(pieces, energies, strict=True)]  # type: ignore[index]
        )
        return frames, energy

    def feed(self, stream: str, samples: npt.NDArray[np.float32]) -> list[Event]:
        """16 kHz audio of ``stream`` in order; returns the events it completes (log-mel)."""
        matcher = self._matcher(stream)
        if self.describer is not None:
            self.describer.feed(stream, samples)
        out = self._logmel_streams[stream].push(samples)
        if not len(out):
            return []
        first = int(out.features.start_samples[0]) // 320
        if self.config.features == "logmel":
            return self._push(stream, matcher, FeatureBlock(out.features.frames, out.energy_db, first))
        self._energy[stream].extend((first + i, float(e)) for i, e in enumerate(out.energy_db))
        return []

    def consume_frames(self, stream: str, frames: npt.NDArray[np.float32], start_frame: int) -> list[Event]:
        """Model frames of ``stream`` (ignored for log-mel matching)."""
        if self.config.features == "logmel" or frames.shape[0] == 0:
            return []
        matcher = self._matcher(stream)
        known = dict(self._energy[stream])
        energy = np.array([known.get(start_frame + i, np.nan) for i in range(frames.shape[0])], np.float32)
        block = FeatureBlock(frames, None if np.isnan(energy).any() else energy, start_frame)
        return self._push(stream, matcher, block)

    def end(self, stream: str) -> list[Event]:
        """End of ``stream``: flush its matcher and forget it."""
        matcher = self._matchers.pop(stream, None)
        if matcher is None:
            return []
        events = self._handle(stream, matcher, matcher.flush())
        self._logmel_streams.pop(stream, None)
        self._energy.pop(stream, None)
        self._raw.pop(stream, None)
        self._ids.pop(stream, None)  # a later stream of this name restarts the matcher's ids
        if self.describer is not None:
            self.describer.end(stream)
        self._seen.pop(stream, None)
        return events

    def _handle(self, stream: str, matcher: PatternMatcher, events: list[Event]) -> list[Event]:
        out: list[Event] = []
        for event in events:
            if isinstance(event, MatchEvent):
                seen = self._seen.setdefault(stream, set())
                new = event.pattern_id not in seen
                seen.add(event.pattern_id)
                event = self._file(stream, matcher, event)
                self.matches += 1
                self.last_match = event
                if new and self.describer is not None:
                    self.describer.pattern_found(event, self.library)
            else:
                self.novelties += 1
            out.append(event)
            if self._on_event is not None:
                self._on_event(event)
        if self.events is not None:
            self.events.write(out)
        return out

    def _file(self, stream: str, matcher: PatternMatcher, event: MatchEvent) -> MatchEvent:
        if self.library is None:
            return event
        c = matcher.config
        first = int(round(event.start_s * c.frame_rate_hz))
        stop = int(round((event.end_s * c.sample_rate - c.frame_length_samples) / c.frame_stride_samples)) + 1
        span = self._raw_span(stream, first, stop)
        if span is None:
            return event
        try:
            embedding = clip_embedding(span[0], span[1], c)
        except ValueError:
            logger.debug("match %s has no active frame to embed", event)
            return event
        ids = self._ids.setdefault(stream, {})
        known = ids.get(event.pattern_id)
        occurrences = [(event.start_s, event.end_s, event.score)]
        if known is None:
            occurrences.insert(0, (event.first_start_s, event.first_end_s, 1.0))
        feature = pattern_feature_name(self.config.features, matcher.frame_dim or 0)
        pid = self.library.file_match(embedding, feature, event.duration_s, event.stream, occurrences, known)
        ids[event.pattern_id] = pid
        return dataclasses.replace(event, pattern_id=pid)

    def close_streams(self) -> list[Event]:
        """Flush every stream (the event log and library stay open)."""
        events: list[Event] = []
        for stream in list(self._matchers):
            events += self.end(stream)
        return events

    def close(self) -> list[Event]:
        """Flush every stream, then close the event log and the library."""
        events = self.close_streams()
        if self.events is not None:
            self.events.close()
        if self.library is not None:
            self.library.close()
        return events

    def status_text(self) -> str:
        """Short status for a live status line."""
        text = f"matches {self.matches}"
        if self.last_match is not None:
            m = self.last_match
            text += f" (last {m.pattern_id} at {m.start_s:.1f}-{m.end_s:.1f} s, score {m.score:.2f})"
        if self.describer is not None:
            text += f", {self.describer.status_text()}"
        return text


class MatcherStage:
    """The async shell: a ``FeatureConsumer`` for :class:`~ostinato.stream.pipeline.Pipeline`
    plus :meth:`tap_source`, which lets the stage see each stream's audio.

    Args:
        config: Stage settings.
        describer: Describes new patterns (a :class:`~ostinato.stream.pattern_describe.PatternDescriber`
            built with ``open``: the stage closes it, waiting up to ``describe_drain_s`` for
            queued descriptions at the end).
        describe_drain_s: How long :meth:`close` waits for queued descriptions.
    """

    def __init__(self, config: MatcherStageConfig, describer: Any = None, describe_drain_s: float = 120.0) -> None:
        self.session = MatcherSession(config)
        self._describe_drain_s = describe_drain_s
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ostinato-matcher")
        if describer is not None:
            self.session.attach_describer(describer)

    async def call(self, fn: Callable[..., list[Event]], *args: Any) -> list[Event]:
        """Run a session call on the matcher thread (calls run one at a time, in order)."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def tap_source(self, source: Any) -> Any:
        """Wrap a pipeline source so its audio also reaches :meth:`MatcherSession.feed`."""
        return _TappedSource(source, self)

    async def consume(self, features: Any) -> None:
        """Model features of one window (``StreamFeatures``)."""
        if features.num_frames:
            await self.call(self.session.consume_frames, features.stream_id, features.frames,
                            int(features.start_samples[0]) // 320)

    async def end_stream(self, end: Any) -> None:
        """Flush the stream's matcher."""
        await self.call(self.session.end, end.stream_id)

    async def close(self) -> None:
        """Flush everything; let queued descriptions finish; close files."""
        describer = self.session.describer
        try:
            await self.call(self.session.close_streams)
            if describer is not None:
                await describer.close(self._describe_drain_s)
        finally:
            try:
                await self.call(self.session.close)
            finally:
                self._thread.shutdown(wait=True)

    def summary_lines(self) -> list[str]:
        """Describe counts for the run summary (nothing without a describer)."""
        d = self.session.describer
        if d is None:
            return []
        s = d.summary()
        w = s["worker"]
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(w["dropped_by"].items())) or "none"
        return [f"describe ({d.config.model_name}{', RANDOM WEIGHTS' if d.config.random_weights else ''}): "
                f"described {s['described']}, failed {s['failed']}, dropped {w['dropped']} ({dropped}), "
                f"no audio {s['no_audio']}, already described {s['already_described']}, mean {w['mean_s']:.2f} s"]

    def status_text(self) -> str:
        """Matches so far, for ``ostinato run``'s status line."""
        return self.session.status_text()


class _TappedSource:
    def __init__(self, inner: Any, stage: MatcherStage) -> None:
        self._inner = inner
        self._stage = stage

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_inner", "_stage"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._inner, name, value)

    async def chunks(self) -> AsyncIterator[Any]:
        async for chunk in self._inner.chunks():
            await self._stage.call(self._stage.session.feed, chunk.stream_id, chunk.samples)
            yield chunk
