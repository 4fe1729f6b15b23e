"""Describe new patterns in words: audio ring per stream → clip around the first occurrence →
:class:`~ostinato.stream.describe.DescribeWorker` → pattern library metadata + ``describe`` event.

:class:`PatternDescriber` is attached to a :class:`~ostinato.stream.matcher_stage.MatcherSession`
(``ostinato run --describe-model``, ``ostinato serve --describe-model``). The session feeds it
every stream's 16 kHz audio (kept in a bounded :class:`~ostinato.stream.audio_ring.AudioRing`)
and tells it about the first match of each pattern. The describer cuts the model's window
(GAMA: 164 080 samples = 10.24 s) centred on the pattern's **first** occurrence — shifted to
stay inside the audio that exists, clipped at the stream start; shorter clips are padded by
the model as upstream GAMA pads — or, when that occurrence has already left the ring, on the
newest one (``occurrence: "latest"``). The clip is filed in the :class:`ClipStore` (so the
service can describe the pattern again on request) and submitted to the worker, which never
blocks: a full queue drops the job and counts it.

When the text (or an error) is back, it is stored in the pattern's library metadata under
``"description"`` on the describer's own thread (SQLite never runs on the event loop), then
every listener gets a :class:`~ostinato.stream.events.DescribeEvent`.

Threads: :meth:`feed`, :meth:`end` and :meth:`pattern_found` may be called from a matcher
thread (the service) or the event loop (``ostinato run``); results are handled on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.stream.audio_ring import AudioRing
from ostinato.stream.clip_store import ClipStore
from ostinato.stream.describe import DescribeJob, DescribeResult, DescribeWorker, DescribeWorkerConfig, describer_for
from ostinato.stream.events import DescribeEvent, MatchEvent
from ostinato.stream.resample import PIPELINE_SAMPLE_RATE

__all__ = ["ClipRequest", "PatternDescriber", "PatternDescriberConfig", "clip_span", "is_described", "span_samples"]

logger = logging.getLogger(__name__)

SAMPLE_RATE = PIPELINE_SAMPLE_RATE  # the rate every stream is resampled to
_ENDED_KEPT = 1024  # ended streams whose length is remembered for late describe events


@dataclasses.dataclass(frozen=True, slots=True)
class PatternDescriberConfig:
    """How new patterns are described.

    Args:
        model_name: Name of the describing model (shown in events and metadata).
        random_weights: The model has random weights (its text is meaningless; labelled so).
        prompt: Instruction given to the model.
        window_samples: Clip length the model looks at (GAMA: 164 080 = 1024 fbank frames).
        ring_s: Audio kept per stream to cut clips from (memory: 32 kB per second per stream).
        max_new_tokens: Longest description in tokens (``None``: the model's default, 400 for GAMA).
    """

    model_name: str
    random_weights: bool
    prompt: str = "Describe the audio."
    window_samples: int = 164080
    ring_s: float = 120.0
    max_new_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; expected >= 1")
        if not self.prompt.strip():
            raise ValueError(f"prompt={self.prompt!r}; expected a non-empty instruction")
        if self.window_samples < SAMPLE_RATE // 10:
            raise ValueError(f"window_samples={self.window_samples}; expected >= {SAMPLE_RATE // 10}")
        if not self.ring_s * SAMPLE_RATE >= self.window_samples or self.ring_s > 24 * 3600:
            raise ValueError(f"ring_s={self.ring_s}; expected at least the window "
                             f"({self.window_samples / SAMPLE_RATE:.2f} s) and at most 86400 s")


@dataclasses.dataclass(frozen=True, slots=True)
class ClipRequest:
    """A clip to describe for a pattern (what the stream cut, or a stored clip).

    Args:
        pattern_id: Pattern the clip belongs to.
        stream: Stream it was cut from.
        audio: Mono float32 samples at 16 kHz.
        start_s: Stream time of the clip's first sample.
        occurrence: ``first`` or ``latest``.
        prompt: Instruction (``None``: the describer's).
    """

    pattern_id: str
    stream: str
    audio: npt.NDArray[np.float32]
    start_s: float
    occurrence: str = "first"
    prompt: str | None = None

    @property
    def end_s(self) -> float:
        """Stream time just after the clip's last sample."""
        return self.start_s + self.audio.size / SAMPLE_RATE


def clip_span(first: tuple[int, int], latest: tuple[int, int], held: tuple[int, int],
              window: int) -> tuple[int, int, str] | None:
    """Where to cut the clip (sample indices ``[start, stop)`` and which occurrence).

    The window is centred on the first occurrence if the ring still holds it whole, else on
    the latest; it is shifted back when the audio after it does not exist yet, and clipped
    at the oldest held sample (the stream start at the latest). ``None``: neither is held.
    """
    oldest, newest = held
    for (s0, s1), which in ((first, "first"), (latest, "latest")):
        if oldest <= s0 <= s1 <= newest:
            start = min((s0 + s1) // 2 - window // 2, newest - window)
            start = max(start, oldest, 0)
            return start, min(start + window, newest), which
    return None


class PatternDescriber:
    """Describes new patterns of any number of streams with one worker.

    Args:
        worker: The (started) describe worker; owned by the caller.
        config: Settings.
        clips: Where pattern clips are filed (``None``: not kept).
    """

    def __init__(self, worker: DescribeWorker, config: PatternDescriberConfig, clips: ClipStore | None = None) -> None:
        self.worker = worker
        self.config = config
        self.clips = clips
        self.listeners: list[Callable[[DescribeEvent], None]] = []
        self.counts: dict[str, int] = {"described": 0, "failed": 0, "no_audio": 0, "already_described": 0}
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._rings: dict[str, AudioRing] = {}
        self._lock = threading.Lock()
        self._pending: set[str] = set()
        self._store = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="describe-store")
        self._stores: set[asyncio.Future[Any]] = set()

        self._model: Any = None  # owned when built by open()
        self._ended: dict[str, int] = {}  # samples seen by recently ended streams (event times)

    @classmethod
    def open(cls, model_dir: str | Path, settings: dict[str, Any] | None = None, *, clips: ClipStore | None = None,
             metrics: Any = None, worker: DescribeWorkerConfig | None = None) -> PatternDescriber:
        """Load a GAMA export, start a worker on the running loop; the describer owns both.

        Args:
            model_dir: Directory written by ``ostinato export gama``.
            settings: :class:`PatternDescriberConfig` fields to set (``prompt``, ``ring_s``,
                ``max_new_tokens``); the model supplies the rest.
            clips: Clip store (``None``: clips are not kept).
            metrics: :class:`~ostinato.stream.metrics.StreamMetrics` for the worker.
            worker: Queue size and per-job timeout.

        Raises:
            ModelNotFoundError, ManifestError, ModelLoadError: The model cannot be loaded.
        """
        from ostinato.runtime.gama import DEFAULT_INSTRUCTION, GamaModel

        model = GamaModel.from_dir(model_dir)
        try:
            given = {k: v for k, v in (settings or {}).items() if v is not None}
            config = PatternDescriberConfig(**{"model_name": Path(model_dir).resolve().name,
                                               "random_weights": model.random_init, "prompt": DEFAULT_INSTRUCTION,
                                               "window_samples": model.window_samples, **given})
            runner = DescribeWorker(describer_for(model, max_new_tokens=config.max_new_tokens), worker, metrics)
            runner.start()
            describer = cls(runner, config, clips)
        except BaseException:
            model.close()
            raise
        describer._model = model
        return describer

    # -- stream side (matcher thread or loop) ---------------------------------------------------

    def feed(self, stream: str, samples: npt.NDArray[np.float32]) -> None:
        """Keep ``stream``'s newest 16 kHz audio."""
        ring = self._rings.get(stream)
        if ring is None:
            ring = self._rings[stream] = AudioRing(int(self.config.ring_s * SAMPLE_RATE))
        ring.push(samples)

    def end(self, stream: str) -> None:
        """Forget ``stream``'s audio (jobs already cut keep their clip)."""
        ring = self._rings.pop(stream, None)
        if ring is not None:
            self._ended[stream] = ring.end
            while len(self._ended) > _ENDED_KEPT:
                self._ended.pop(next(iter(self._ended)))

    @property
    def ring_bytes(self) -> int:
        """Memory held by the audio rings."""
        return sum(r.nbytes for r in list(self._rings.values()))

    def pattern_found(self, event: MatchEvent, library: Any = None) -> bool:
        """First match of a pattern: cut its clip, file it, submit it. Returns whether a job
        was handed on (not whether the worker accepted it: that is counted by the worker)."""
        pid = event.pattern_id
        if library is not None and is_described(library, pid):
            self.counts["already_described"] += 1
            return False
        ring = self._rings.get(event.stream)
        span = None if ring is None else clip_span(
            span_samples(event.first_start_s, event.first_end_s), span_samples(event.start_s, event.end_s),
            (ring.start, ring.end), self.config.window_samples)
        if ring is None or span is None:
            self.counts["no_audio"] += 1
            logger.info("pattern %s: no occurrence left in the %g s audio ring; not described", pid, self.config.ring_s)
            return False
        start, stop, which = span
        with self._lock:
            if pid in self._pending:  # described right now (another stream found it too)
                return False
            self._pending.add(pid)
        request = ClipRequest(pid, event.stream, ring.read(start, stop), start / SAMPLE_RATE, which)
        self.file_clip(request)
        if threading.get_ident() == self._loop_thread:
            self._submit(request, library, None)
        else:
            self._loop.call_soon_threadsafe(self._submit, request, library, None)
        return True

    def file_clip(self, request: ClipRequest) -> None:
        """Keep the clip beside the library (``POST /v1/patterns/{id}/describe`` describes it again)."""
        if self.clips is None:
            return
        info = {"stream": request.stream, "start_s": round(request.start_s, 4), "end_s": round(request.end_s, 4),
                "occurrence": request.occurrence}
        try:
            self.clips.put(request.pattern_id, request.audio, SAMPLE_RATE, info)
        except (OSError, RuntimeError, ValueError) as e:  # a full disk must not stop the matcher
            logger.warning("clip of pattern %s not stored: %s", request.pattern_id, e)

    # -- loop side --------------------------------------------------------------------------------

    def request(self, request: ClipRequest, library: Any = None) -> asyncio.Future[DescribeEvent] | None:
        """Describe a clip on request (the service's ``POST /v1/patterns/{id}/describe``).

        Returns:
            A future of the event (after the library was updated), or ``None`` when the
            worker's queue is full (the drop is counted).
        """
        future: asyncio.Future[DescribeEvent] = self._loop.create_future()
        with self._lock:
            self._pending.add(request.pattern_id)
        return future if self._submit(request, library, future) else None

    def _submit(self, request: ClipRequest, library: Any, future: asyncio.Future[DescribeEvent] | None) -> bool:
        def done(result: DescribeResult) -> None:
            self._finish(request, library, result, future)

        prompt = request.prompt or self.config.prompt
        accepted = self.worker.submit(DescribeJob(request.audio, SAMPLE_RATE, done, prompt=prompt, job_id=request.pattern_id))
        if not accepted:
            with self._lock:
                self._pending.discard(request.pattern_id)
        return bool(accepted)

    def _finish(self, request: ClipRequest, library: Any, result: DescribeResult,
                future: asyncio.Future[DescribeEvent] | None) -> None:
        self.counts["described" if result.text is not None else "failed"] += 1
        ring = self._rings.get(request.stream)
        seen = ring.end if ring is not None else self._ended.get(request.stream, 0)
        event = DescribeEvent(
            stream=request.stream, pattern_id=request.pattern_id, text=result.text, error=result.error,
            model=self.config.model_name, random_weights=self.config.random_weights,
            prompt=request.prompt or self.config.prompt, clip_start_s=request.start_s, clip_end_s=request.end_s,
            occurrence=request.occurrence, elapsed_ms=result.elapsed_s * 1000,
            detected_at_s=max(seen / SAMPLE_RATE, request.end_s),
        )
        stored = self._loop.run_in_executor(self._store, _store_description, library, event)
        self._stores.add(stored)

        def announce(f: asyncio.Future[Any]) -> None:
            self._stores.discard(f)
            with self._lock:
                self._pending.discard(request.pattern_id)
            if not f.cancelled() and f.exception() is not None:
                logger.warning("description of %s not stored: %s", request.pattern_id, f.exception())
            self._announce(event)
            if future is not None and not future.done():
                future.set_result(event)

        stored.add_done_callback(announce)

    def _announce(self, event: DescribeEvent) -> None:
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:  # one broken listener must not hide the event from the others
                logger.exception("describe listener failed for %s", event.pattern_id)

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop: with a model of its own (:meth:`open`), let the worker finish queued jobs for up
        to ``drain_timeout_s`` and close both; wait for library writes in flight. Idempotent."""
        if self._model is not None:
            await self.worker.close(drain_timeout_s)
        if self._stores:
            await asyncio.gather(*list(self._stores), return_exceptions=True)
        self._store.shutdown(wait=True)
        self._rings.clear()
        if self._model is not None:
            model, self._model = self._model, None
            model.close()

    def summary(self) -> dict[str, Any]:
        """Counters of the describer and its worker (JSON-ready)."""
        return {**self.counts, "worker": self.worker.stats.as_dict(),
                "clips_stored": self.clips.written if self.clips is not None else 0}

    def status_text(self) -> str:
        """``described N`` plus failures and drops, for a status line."""
        s = self.worker.stats
        text = f"described {self.counts['described']}"
        if self.counts["failed"]:
            text += f", failed {self.counts['failed']}"
        if s.dropped:
            text += f", dropped {s.dropped}"
        return text + (", busy" if self.worker.busy else "")


def span_samples(start_s: float, end_s: float) -> tuple[int, int]:
    """A span of stream seconds as 16 kHz sample indices."""
    return int(round(start_s * SAMPLE_RATE)), int(round(end_s * SAMPLE_RATE))


def is_described(library: Any, pattern_id: str) -> bool:
    """Whether the library already holds a description of ``pattern_id`` (a later run does not redo it)."""
    from ostinato.stream.library import LibraryError

    try:
        record = library.get(pattern_id).metadata.get("description")
    except LibraryError:
        return False
    return isinstance(record, dict) and bool(record.get("text") is not None)


def _store_description(library: Any, event: DescribeEvent) -> None:
    """Merge the result into the pattern's metadata (``"description"``) and commit."""
    if library is None:
        return
    record = {
        "text": event.text, "error": event.error, "model": event.model, "random_weights": event.random_weights,
        "prompt": event.prompt, "elapsed_ms": round(event.elapsed_ms, 1), "described_at": round(time.time(), 3),
        "clip": {"stream": event.stream, "start_s": round(event.clip_start_s, 4), "end_s": round(event.clip_end_s, 4),
                 "occurrence": event.occurrence},
    }
    metadata = dict(library.get(event.pattern_id).metadata)
    previous = metadata.get("description")
    if event.text is None and isinstance(previous, dict) and previous.get("text") is not None:
        record["text"] = None  # keep the good description; note the failed retry beside it
        metadata["description_error"] = record
    else:
        metadata["description"] = record
    library.set_metadata(event.pattern_id, metadata)
    library.commit()
