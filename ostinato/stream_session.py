"""One live stream of the service: audio in, windows to the shared model, events out.

A :class:`StreamSession` outlives its WebSocket: when the connection drops without ``end``
the session keeps processing what it has and queues its output for
:attr:`~ostinato.limits.ServiceLimits.resume_grace_s`; a client that reconnects with the
stream id and resume token gets the queued frames and continues sending from
``ready.info.next_seq``.

Data path (every queue bounded)::

    feed() -> input Channel (policy block|drop_oldest|drop_newest)
           -> processor: resample to 16 kHz -> log-mel -> matcher (events)
                                            -> Windower -> engine inbox (shared, batched)
    engine router -> results Channel -> emitter: features frames (+ matcher on model features)
    outbox (OutQueue) -> the connection's writer

Audio is accepted in order of ``seq``; duplicates (a resumed client resending) are skipped,
gaps are counted (and filled with silence when ``start_sample`` says how long they were).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import secrets
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.acks import AckTracker
from ostinato.outbox import OutQueue
from ostinato.stream.channel import Channel
from ostinato.stream.errors import ChannelClosedError, EndOfStream, InvalidAudioError, StreamError, classify_error
from ostinato.stream.events import event_to_json
from ostinato.stream.frames import AudioChunk, StreamEnd, StreamFeatures
from ostinato.stream.resample import PIPELINE_SAMPLE_RATE, StreamResampler
from ostinato.stream.windowing import Windower, num_frames
from ostinato.stream.wire import Bye, ErrorFrame, Event, FeaturesFrame, Hello, Status, decode_pcm
from ostinato.stream_options import SessionOptions

__all__ = ["StreamSession"]

logger = logging.getLogger(__name__)

_MAX_GAP_FILL_S = 5.0  # longest sequence gap filled with silence; longer gaps restart timing
_MATCH_QUEUE_BLOCKS = 50  # audio blocks waiting for the matcher before the stream waits for it


class StreamSession:
    """State and tasks of one stream.

    Args:
        stream_id: Stream id.
        hello: The opening ``hello``.
        options: Validated options.
        engine: The model engine (``None`` when the stream needs no model).
        matching: The shared :class:`~ostinato.stream.matcher_stage.MatcherSession` for this
            stream's feature kind (it files matches in the library), or ``None`` for no matching.
        hub: The owning hub (library, metrics, limits).
        model_entry: Catalog entry of the model in use (``None``: a model-free stream).
        media_path: Server-side file to play instead of client audio.
    """

    def __init__(
        self, stream_id: str, hello: Hello, options: SessionOptions, engine: Any, matching: Any, hub: Any,
        *, model_entry: Any = None, media_path: Path | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.model_entry = model_entry
        self.media_path = media_path
        self.hello = hello
        self.options = options
        self.engine = engine
        self.hub = hub
        self.resume_token = secrets.token_urlsafe(16)
        limits = hub.limits
        self.outbox = OutQueue(limits.max_send_queue, limits.replay_frames, limits.replay_bytes)
        self.acks = AckTracker()  # through_seq: client audio fully processed
        self.input: Channel[AudioChunk] = Channel(hub.streaming(engine).max_queue, options.overflow,  # type: ignore[arg-type]
                                                  name="server_input", metrics=hub.metrics)
        self.results: Channel[StreamFeatures | StreamEnd] = Channel(hub.streaming(engine).max_queue + 2, "block", name="server_results")
        self._resampler = StreamResampler(hello.sample_rate, hello.channels)
        self._windower = Windower(engine.windower_config, stream_id) if engine is not None else None
        self._matching = matching
        # Audio for the matcher waits here (up to ~5 s of blocks) so that matching never holds
        # up the windows on their way to the model; one call per stream at a time.
        self._match_input: Channel[npt.NDArray[np.float32]] = Channel(_MATCH_QUEUE_BLOCKS, "block", name="server_match")
        self._match_lock = asyncio.Lock()
        self._matched = asyncio.Event()
        self._match_future: asyncio.Future[Any] | None = None
        self._in_flight = asyncio.Semaphore(hub.streaming(engine).max_queue)
        self.windows_pending = 0
        self._emitting = False
        self.next_seq = 0
        self.samples_in = 0  # at the pipeline rate
        self.samples_done = 0
        self.frames_out = 0
        self.events_out = 0
        self.level_dbfs = -120.0
        self.dropped: collections.Counter[str] = collections.Counter()
        self.attached = False
        self.detached_at_s = 0.0
        self.finished = asyncio.Event()
        self.ended = False
        self._idle = asyncio.Event()
        self._idle.set()
        self.bye_reason = "end"
        self._failing = False
        self._task: asyncio.Task[None] | None = None
        self._abandoned = False

    @property
    def model_name(self) -> str:
        """Name of the model in use (``""`` for a model-free stream)."""
        return self.model_entry.config.name if self.model_entry is not None else ""

    # -- input side (called by the connection) ------------------------------------------------

    async def feed(self, seq: int, pcm: bytes, start_sample: int | None) -> None:
        """Accept one ``audio`` frame (awaits when the input queue blocks: backpressure).

        Raises:
            InvalidAudioError: Odd byte count, NaN/Inf, or too much audio in one message.
        """
        if seq < self.next_seq:
            self.dropped["duplicate"] += 1  # a resumed client resending what we already have
            return
        samples = decode_pcm(pcm, self.hello.encoding, self.hello.channels)
        max_s = self.hub.limits.max_audio_s_per_message
        if samples.shape[0] > max_s * self.hello.sample_rate:
            raise InvalidAudioError(
                f"audio frame seq={seq} holds {samples.shape[0] / self.hello.sample_rate:.2f} s; the limit is {max_s:g} s per message",
                hint="send smaller blocks (20-200 ms is typical)",
            )
        if seq > self.next_seq:
            self._note_gap(seq, start_sample)
        self.next_seq = seq + 1
        await self._enqueue(samples, start_sample or 0, seq)

    async def _enqueue(self, samples: npt.NDArray[np.float32], start_sample: int, seq: int | None = None) -> None:
        chunk = AudioChunk(self.stream_id, start_sample, samples, self.hello.sample_rate, time.monotonic())
        self._idle.clear()
        self.acks.fed(chunk, seq)
        if self.options.overflow == "block":
            await self.input.put(chunk)
        else:
            self.input.offer(chunk)

    async def _play(self, path: Path) -> None:
        """Feed a server-side file in real time (dashboard file streams)."""
        import soundfile as sf

        loop = asyncio.get_running_loop()
        with sf.SoundFile(str(path)) as f:
            block = max(1, f.samplerate // 10)
            started_s, sent = loop.time(), 0
            while not self.ended:
                data = await asyncio.to_thread(f.read, block, dtype="float32", always_2d=True)
                if not len(data):
                    break
                try:
                    await self._enqueue(np.ascontiguousarray(data), sent)
                except ChannelClosedError:
                    return  # the stream was ended meanwhile
                sent += len(data)
                delay_s = started_s + sent / f.samplerate - loop.time()
                if delay_s > 0:
                    await asyncio.sleep(delay_s)
        if not self.ended:
            self.end()

    def _note_gap(self, seq: int, start_sample: int | None) -> None:
        self.dropped["seq_gap"] += seq - self.next_seq
        if start_sample is None:
            return
        received = round(self.samples_in * self.hello.sample_rate / PIPELINE_SAMPLE_RATE)
        missing = start_sample - received
        if 0 < missing <= _MAX_GAP_FILL_S * self.hello.sample_rate:
            zeros = np.zeros((missing, self.hello.channels), np.float32)
            self.input.offer(AudioChunk(self.stream_id, received, zeros, self.hello.sample_rate, time.monotonic()))
            self.dropped["gap_samples"] += missing

    def end(self) -> None:
        """No more audio: drain, flush and finish (``bye`` follows)."""
        self.ended = True
        self.input.close()

    async def barrier(self) -> None:
        """Wait until everything fed so far was processed (``flush``), then send a status.

        "Processed" means through the resampler, the matcher and every complete window; a
        partial window (and the resampler's few samples of delay) waits for more audio or ``end``.
        """
        while (self.input.depth or not self._idle.is_set() or self.windows_pending or self.results.depth or self._emitting
               or self._match_input.depth or self._match_lock.locked()):
            await asyncio.sleep(0.005)
        self.outbox.put(self.status())

    # -- processing ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the session's tasks (kept by the session; the hub awaits :attr:`finished`)."""
        self._task = asyncio.create_task(self._run(), name=f"stream-{self.stream_id}")

    async def _run(self) -> None:
        try:
            await self._run_tasks()
        except asyncio.CancelledError:
            if not self._failing:
                raise
            self.outbox.put(Bye("error", self.summary()))
        finally:
            self.ended = True
            try:
                self._release_matcher()
            except Exception:  # freeing state must not hide why the stream ended
                logger.exception("stream %s: releasing the matcher failed", self.stream_id)
            self.finished.set()

    async def _run_tasks(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._process())
                ticker = tg.create_task(self._tick())
                tg.create_task(self._emit(ticker))
                tg.create_task(self._match_loop())
                if self.media_path is not None:
                    tg.create_task(self._play(self.media_path))
        except* Exception as group:
            e = group.exceptions[0]
            if isinstance(e, StreamError):
                logger.warning("stream %s failed: %s", self.stream_id, e)
            else:
                logger.error("stream %s failed", self.stream_id, exc_info=e)
            self.send_error(e, fatal=True)
            self.outbox.put(Bye("error", self.summary()))

    def fail(self) -> None:
        """End the stream at once (its engine failed); a ``bye`` with reason ``error`` follows."""
        self._failing = True
        self.ended = True
        if self._task is not None:
            self._task.cancel()

    async def _process(self) -> None:
        ended = False
        try:
            try:
                async for chunk in self.input:
                    await self._process_chunk(chunk)
                    if not self.input.depth:
                        self._idle.set()
            finally:
                self._idle.set()
            tail = self._resampler.flush()
            if tail.size:
                await self._consume(tail, time.monotonic())
            await self._finish_input()
            ended = True
        finally:
            if not ended and self._windower is not None and self.engine is not None:
                self._abandoned = True  # cancelled (failed, aborted): free the stage's state anyway
                self.engine.abandon(self.stream_id, self.samples_in)

    async def _process_chunk(self, chunk: AudioChunk) -> None:
        try:
            x = self._resampler.push(chunk.samples)
        except InvalidAudioError as e:
            self.dropped["invalid_audio"] += 1
            self.send_error(e)
            return
        if chunk.samples.size:
            rms = float(np.sqrt(np.mean(np.square(chunk.samples, dtype=np.float64))))
            self.level_dbfs = max(-120.0, 20 * math.log10(max(rms, 1e-6)))
        await self._consume(x, chunk.received_s)
        self.acks.consumed(chunk, self.samples_in)

    async def _consume(self, x: npt.NDArray[np.float32], received_s: float) -> None:
        self.samples_in += int(x.shape[0])
        if self._matching is not None:
            await self._match_input.put(x)
        if self._windower is not None:
            for window in self._windower.push(x, time.monotonic(), received_s):
                await self._submit(window, wait=self.options.overflow == "block")
        else:
            self.samples_done = self.samples_in
            self.frames_out = num_frames(self.samples_in)  # a model-free stream reports its log-mel frames

    async def _match_loop(self) -> None:
        """Feed the matcher in order, off the window path. Log-mel frames and matching run on
        the matcher thread; with ``match_features: model`` the audio supplies the silence gate."""
        try:
            async for x in self._match_input:
                if self._matching is not None:
                    await self._match_call(self._matching.feed, self.stream_id, x)
                self.acks.matched(int(x.shape[0]))
        finally:
            self._matched.set()

    async def _finish_input(self) -> None:
        self._match_input.close()
        if self._windower is not None:
            for window in self._windower.flush(time.monotonic()):
                await self._submit(window, wait=True)
            await self.engine.submit(StreamEnd(self.stream_id, self.samples_in))
        else:
            await self.results.put(StreamEnd(self.stream_id, self.samples_in))

    async def _submit(self, window: Any, *, wait: bool) -> None:
        """Hand a window to the shared inference stage.

        At most ``max_queue`` windows of this stream are in flight, so its results channel
        (capacity ``max_queue + 2``) never fills and the shared router never waits on one
        stream. A ``block`` stream waits for room (lossless; its socket stops being read); a
        stream with a drop policy is live audio: when inference cannot keep up its window is
        dropped and counted (``window_backlog``) while the audio itself, the timing and the
        log-mel matcher carry on, so lag stays bounded.
        """
        if not wait and (self._in_flight.locked() or self.engine.inbox.depth >= self.engine.inbox.capacity):
            self.dropped["window_backlog"] += 1
            self.hub.metrics.windows_dropped.labels("backlog").inc()
            self.acks.window_submitted()
            self.acks.window_done()
            return
        await self._in_flight.acquire()
        self.windows_pending += 1
        self.acks.window_submitted()
        await self.engine.submit(window)

    def deliver(self, item: StreamFeatures | StreamEnd) -> None:
        """Called by the engine's router (never blocks: in-flight windows are bounded)."""
        if self._abandoned and isinstance(item, StreamEnd):
            return  # the marker :meth:`_process` sent after being cancelled: nobody reads it
        if isinstance(item, StreamFeatures):
            self._in_flight.release()
            self.windows_pending -= 1
        if not self.results.offer(item):  # cannot happen while the semaphore bounds it
            self.dropped["results_overflow"] += 1

    def window_dropped(self, reason: str) -> None:
        """Called by the engine when a window of this stream was not inferred."""
        self._in_flight.release()
        self.windows_pending -= 1
        self.dropped[f"window_{reason}"] += 1
        self.acks.window_done()

    async def _emit(self, ticker: asyncio.Task[None]) -> None:
        async for item in self.results:
            if isinstance(item, StreamEnd):
                break
            self._emitting = True
            await self._on_features(item)
            self.acks.window_done()
            self._emitting = False
        await self._matched.wait()  # every block reached the matcher
        if self._matching is not None:
            await self._match_call(self._matching.end, self.stream_id)
            self._matching = None
        ticker.cancel()
        self.outbox.put(self.status())
        self.outbox.put(Bye(self.bye_reason, self.summary()))
        self.results.close()

    async def _on_features(self, f: StreamFeatures) -> None:
        self.frames_out += f.num_frames
        if f.num_frames:
            self.samples_done = max(self.samples_done, int(f.start_samples[-1]) + 320)
        if "features" in self.options.outputs and f.num_frames:
            k = self.options.features_every
            keep = np.flatnonzero(f.start_samples // 320 % k == 0)
            if keep.size:
                self.outbox.put(FeaturesFrame.from_array(
                    self.stream_id, f.output, int(f.start_samples[keep[0]]), f.frames[keep],
                    dtype=self.options.features_dtype, frame_stride_samples=320 * k))  # type: ignore[arg-type]
        if self._matching is not None and self.options.match_features == "model" and f.num_frames:
            await self._match_call(self._matching.consume_frames, self.stream_id, f.frames, int(f.start_samples[0]) // 320)
        if f.timing.latency_s > 0:
            self.hub.metrics.event_latency.observe(f.timing.latency_s)

    async def _match_call(self, fn: Any, *args: Any) -> None:
        """Run a matcher call on the matcher thread and publish the events it returns."""
        async with self._match_lock:
            future = asyncio.get_running_loop().run_in_executor(self.hub.match_executor, fn, *args)
            self._match_future = future
            try:
                events = await future
            except StreamError as e:  # bad frames, or a library in another feature space
                self.dropped["matcher_error"] += 1
                self.send_error(e)
                return
        self._publish(events)

    def _release_matcher(self) -> None:
        """Free this stream's matcher state when the stream ended without a normal flush."""
        matching, self._matching = self._matching, None
        if matching is None:
            return
        pending = self._match_future
        if pending is not None and not pending.done():
            # A call for this stream is still running on the matcher thread: end it after.
            pending.add_done_callback(lambda _f: matching.end(self.stream_id))
        else:
            matching.end(self.stream_id)

    def publish_late(self, events: list[Any]) -> bool:
        """Send events that arrive out of band (a ``describe`` seconds after its match) as
        ``event`` frames: numbered and kept for replay like the others, counted, ``outputs``
        honoured. Returns ``False`` (nothing sent) once the stream has finished (its ``bye`` is out)."""
        if self.finished.is_set() or self.results.closed:
            return False
        self._publish(events)
        return True

    def _publish(self, events: list[Any]) -> None:
        # Matches were already filed in the library by the MatcherSession (pattern ids are
        # library ids then).
        for ev in events:
            self.events_out += 1
            if "events" in self.options.outputs:
                self.outbox.put(Event(json.loads(event_to_json(ev))))

    async def _tick(self) -> None:
        if "status" not in self.options.outputs:
            return
        while True:  # cancelled by _emit when the stream ends
            await asyncio.sleep(self.options.status_interval_s)
            self.outbox.put(self.status())

    # -- reporting ----------------------------------------------------------------------------

    def lag_s(self) -> float:
        """Audio received but not yet turned into output (includes the window's own latency)."""
        return max(0.0, (self.samples_in - self.samples_done) / PIPELINE_SAMPLE_RATE)

    def status(self) -> Status:
        """A ``status`` frame for this stream."""
        if not self.input.depth and self._idle.is_set():
            self.acks.settle(self.samples_in)  # what is not queued now was dropped by the policy
        dropped = collections.Counter(self.dropped)
        dropped.update({k: v for k, v in self.input.dropped.items() if k != "closed"})
        dropped.update(self.outbox.dropped)
        lag_s = self.lag_s()
        reasons: list[str] = []
        health = "ok"
        if lag_s > 5.0:
            health, reasons = "failing", [f"lag {lag_s:.2f} s > 5 s"]
        elif lag_s > 1.0 + self._structural_latency_s():
            health, reasons = "degraded", [f"lag {lag_s:.2f} s"]
        if self.input.depth >= self.input.capacity:
            health = "degraded" if health == "ok" else health
            reasons.append(f"input queue full ({self.input.depth}/{self.input.capacity})")
        if self.engine is not None and self.engine.breaker_state() != "closed":
            health = "failing" if self.engine.breaker_state() == "open" else "degraded"
            reasons.append(f"inference breaker {self.engine.breaker_state()}")
        return Status(lag_s=round(lag_s, 4), dropped=dict(dropped), health=health, reasons=tuple(reasons),  # type: ignore[arg-type]
                      frames=self.frames_out, audio_s=round(self.samples_in / PIPELINE_SAMPLE_RATE, 4),
                      level_dbfs=round(self.level_dbfs, 1), through_seq=self.acks.through(self._matching is not None))

    def _structural_latency_s(self) -> float:
        if self.engine is None:
            return 0.1
        return float(self.engine.windower_config.window_samples / PIPELINE_SAMPLE_RATE)

    def summary(self) -> dict[str, Any]:
        """Totals sent with ``bye``."""
        return {"stream_id": self.stream_id, "audio_s": round(self.samples_in / PIPELINE_SAMPLE_RATE, 4),
                "frames": self.frames_out, "events": self.events_out, "next_seq": self.next_seq,
                "dropped": dict(self.status().dropped)}

    def send_error(self, e: BaseException, *, fatal: bool = False, code: str | None = None) -> None:
        """Queue an ``error`` frame for ``e`` (message and hint only; never a traceback)."""
        hint = getattr(e, "hint", "") or ""
        message = str(e).removesuffix(f" (hint: {hint})") if hint else str(e)
        klass = classify_error(e).value
        if code is None:
            code = {"InvalidAudioError": "bad_audio", "ProtocolError": "protocol_error"}.get(type(e).__name__, "stream_error")
        if not isinstance(e, StreamError):
            message = "internal error while processing the stream (logged by the server)"
        self.outbox.put(ErrorFrame(code, message, klass, hint, fatal))  # type: ignore[arg-type]

    async def abort(self, bye_reason: str, reason: str) -> None:
        """End the stream now (grace expired, shutdown, model unloaded); output is flushed.

        Args:
            bye_reason: Reason sent in ``bye`` (``shutdown``, ``error``, ``idle``).
            reason: What happened, for the log.
        """
        self.bye_reason = bye_reason
        if not self.ended:
            self.end()
        try:
            async with asyncio.timeout(self.hub.limits.idle_timeout_s):
                await self.finished.wait()
        except TimeoutError:
            if self._task is not None:
                self._task.cancel()
        logger.info("stream %s ended (%s)", self.stream_id, reason)

    async def wait(self) -> None:
        """Wait for the session's tasks to end."""
        if self._task is not None:
            try:
                await self._task
            except (asyncio.CancelledError, EndOfStream):
                pass
