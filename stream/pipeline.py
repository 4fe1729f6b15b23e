"""Pipeline: sources → windows → batched inference → feature consumers, with ordered shutdown.

::

    source ─▶ Channel[AudioChunk] ─▶ window task ─┐   (one pair per stream)
    source ─▶ Channel[AudioChunk] ─▶ window task ─┤
                                                  ▼
                                Channel[Window] (shared, block) ─▶ InferenceStage
                                                  ▼
                       Channel[StreamFeatures] (block) ─▶ consumers (sinks, matcher, ...)

Every edge is a bounded :class:`~ostinato.stream.channel.Channel`. Live sources get a
``drop_oldest`` edge (the audio callback never waits; gaps are filled with silence and
counted); the other edges block, so inference sets the pace. End-of-stream markers travel
in order behind each stream's data and are never dropped.

:meth:`Pipeline.run` owns every task in one ``asyncio.TaskGroup``: a stage that fails
permanently fails the run. :meth:`Pipeline.stop` (also SIGINT/SIGTERM with
``handle_signals=True``) shuts down in order: stop the sources, let end-of-stream flow
through and drain for up to ``shutdown_timeout_s``, cancel what is left (waiting at most
``cancel_timeout_s``), then close sources, consumers and the model sessions. A second
signal skips the drain.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import signal
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ostinato.stream.channel import Channel
from ostinato.stream.errors import (
    ChannelClosedError,
    ConfigError,
    ErrorClass,
    StageError,
    StreamError,
    classify_error,
)
from ostinato.stream.frames import AudioChunk, StreamEnd, StreamFeatures, Window
from ostinato.stream.health import HealthMonitor
from ostinato.stream.infer import InferenceStage
from ostinato.stream.metrics import StreamMetrics, process_rss_bytes
from ostinato.stream.pipeline_config import FeatureConsumer, PipelineConfig, PipelineStatus
from ostinato.stream.retry import retry_call
from ostinato.stream.sources import Source
from ostinato.stream.summary import RunSummary, StreamStats, TimingBreakdown, merge_counts
from ostinato.stream.windowing import Windower, num_frames

__all__ = ["FeatureConsumer", "Pipeline", "PipelineConfig", "PipelineStatus"]

logger = logging.getLogger(__name__)

_GAP_PIECE_SAMPLES = 16000  # silence for lost audio is pushed one second at a time
_FINISHED_STREAMS_KEPT = 1000


class Pipeline:
    """Runs sources through windowing and inference into consumers.

    Args:
        sources: Initial sources (more can be added with :meth:`add_source`).
        stage: The inference stage (its models must match ``config.windower``'s geometry).
        consumers: Feature consumers, called in order for every item.
        config: Queue sizes, policies, timeouts.
        metrics: Metrics (default: a fresh registry, see :attr:`metrics`).
        health: Health monitor (default: a new one).
        clock: Monotonic clock.
    """

    def __init__(
        self,
        sources: Sequence[Source],
        stage: InferenceStage,
        consumers: Sequence[FeatureConsumer] = (),
        config: PipelineConfig = PipelineConfig(),
        *,
        metrics: StreamMetrics | None = None,
        health: HealthMonitor | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        wc = config.windower
        if (wc.frame_stride_samples, wc.receptive_field_samples, wc.sample_rate) != (
            stage.stride, stage.receptive_field, stage.sample_rate
        ):
            raise ConfigError(
                f"window geometry (stride {wc.frame_stride_samples}, field {wc.receptive_field_samples}, "
                f"{wc.sample_rate} Hz) differs from the model's ({stage.stride}, {stage.receptive_field}, "
                f"{stage.sample_rate} Hz)"
            )
        self.config = config
        self.stage = stage
        self._windower_config = stage.windower_config(config.windower)
        self.consumers = list(consumers)
        self.metrics = metrics if metrics is not None else StreamMetrics()
        self.health = health if health is not None else HealthMonitor(metrics=self.metrics)
        self._clock = clock
        stage.on_drop = self._on_window_drop
        if stage.health is None:
            stage.health = self.health
        self._sources: dict[str, Source] = {}
        self._pending: list[Source] = []
        self._streams: dict[str, StreamStats] = {}
        self._finished: collections.deque[StreamStats] = collections.deque(maxlen=_FINISHED_STREAMS_KEPT)
        self._windows: Channel[Window | StreamEnd] = Channel(
            config.window_queue_windows, config.window_policy, name="windows", metrics=self.metrics,
            on_drop=self._on_channel_drop,
        )
        self._features: Channel[StreamFeatures | StreamEnd] = Channel(
            config.features_queue, config.features_policy, name="features", metrics=self.metrics,
            on_drop=self._on_channel_drop,
        )
        self._chunk_channels: list[Channel[AudioChunk]] = []
        self._tg: asyncio.TaskGroup | None = None
        self._work: list[asyncio.Task[None]] = []
        self._window_tasks = 0
        self._stop = asyncio.Event()
        self._drained = asyncio.Event()
        self._stopping = False
        self.stopped = False
        self.forced = False
        self._started_s = 0.0
        self._ended_s = 0.0
        self._level_dbfs = -math.inf
        self._peak_rss = 0.0
        self._errors: collections.Counter[str] = collections.Counter()
        self._ran = False
        for source in sources:
            self.add_source(source)

    # -- public API --------------------------------------------------------------------------

    def add_source(self, source: Source) -> None:
        """Add a stream, before or during :meth:`run`.

        Raises:
            ConfigError: If the stream id is already in use.
            RuntimeError: If the pipeline is shutting down.
        """
        if source.stream_id in self._sources or source.stream_id in self._streams:
            raise ConfigError(f"stream_id={source.stream_id!r} is already in use; give each source its own id")
        if self._stopping:
            raise RuntimeError("pipeline is shutting down; no new sources")
        self._sources[source.stream_id] = source
        self._streams[source.stream_id] = StreamStats(source.stream_id)
        self._window_tasks += 1
        if self._tg is None:
            self._pending.append(source)
        else:
            self._start_stream(self._tg, source)

    def stop(self) -> None:
        """Request a graceful shutdown (idempotent; a second call skips the drain)."""
        if self._stop.is_set() and not self._drained.is_set():
            logger.warning("second stop request: cancelling without draining")
            self.forced = True
            self._cancel_work()
        self.stopped = True
        self._stop.set()

    async def run(self, *, handle_signals: bool = False) -> RunSummary:
        """Run until every stream ends (or :meth:`stop`), then shut down in order.

        Args:
            handle_signals: Install SIGINT/SIGTERM handlers that call :meth:`stop`.

        Returns:
            The run summary.

        Raises:
            StreamError: The first permanent failure of a stage (others are logged).
        """
        if self._ran:
            raise RuntimeError("a Pipeline runs once; build a new one")
        self._ran = True
        loop = asyncio.get_running_loop()
        installed = self._install_signals(loop) if handle_signals else []
        self._started_s = self._clock()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for source in self._pending:
                    self._start_stream(tg, source)
                self._pending.clear()
                if self._window_tasks == 0 and not self.config.serve:
                    self._windows.close()
                self._work.append(tg.create_task(self.stage.run(self._windows, self._features)))
                self._work.append(tg.create_task(self._consume()))
                tg.create_task(self._supervise())
        except BaseExceptionGroup as eg:
            raise _first_error(eg)  # noqa: B904 - implicit chaining keeps the group as __context__
        finally:
            self._ended_s = self._clock()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close_all()
        return self.summary()

    def status(self) -> PipelineStatus:
        """A cheap live snapshot (for a status line every ~0.5 s)."""
        st = self.stage.stats
        elapsed_s = (self._ended_s or self._clock()) - self._started_s if self._started_s else 0.0
        audio_s = sum(s.samples_in for s in self._all_streams()) / self.stage.sample_rate
        if self._chunk_channels:
            fullest = max(self._chunk_channels, key=lambda c: c.depth / c.capacity)
            self.health.set_queue("source", fullest.depth, fullest.capacity)
        self.health.set_queue("sink", self._features.depth, self._features.capacity)
        overall = self.health.overall()
        self._peak_rss = max(self._peak_rss, process_rss_bytes())
        return PipelineStatus(
            elapsed_s=elapsed_s,
            audio_s=audio_s,
            frames=sum(s.frames_out for s in self._all_streams()),
            rtf=elapsed_s / audio_s * max(1, len(self._all_streams())) if audio_s else 0.0,
            inference_rtf=st.busy_s / st.audio_s if st.audio_s else 0.0,
            lag_s=self.metrics.value("ostinato_pipeline_lag_seconds"),
            level_dbfs=self._level_dbfs,
            dropped=sum(merge_counts(*self._drop_counts()).values()),
            health=overall.state.value,
            reasons=overall.reasons,
            active_streams=sum(1 for s in self._streams.values() if not s.ended),
        )

    def summary(self) -> RunSummary:
        """The run summary (complete after :meth:`run` returns)."""
        st = self.stage.stats
        status = self.status()
        streams = tuple(self._all_streams())
        return RunSummary(
            streams=streams,
            elapsed_s=status.elapsed_s,
            audio_s=status.audio_s,
            frames=status.frames,
            rtf=status.rtf,
            inference_rtf=status.inference_rtf,
            timing=TimingBreakdown.of(st.timing),
            dropped=merge_counts(*self._drop_counts()),
            errors=merge_counts(self._errors, st.errors),
            batches=st.batches,
            mean_batch_size=st.windows_run / st.batches if st.batches else 0.0,
            stopped=self.stopped,
            forced=self.forced,
            health={k: [v.state.value, *v.reasons] for k, v in self.health.snapshot().items()},
            peak_rss_bytes=self._peak_rss,
        )

    # -- tasks -------------------------------------------------------------------------------

    def _start_stream(self, tg: asyncio.TaskGroup, source: Source) -> None:
        policy = self.config.source_policy or ("drop_oldest" if source.live else "block")
        chunks: Channel[AudioChunk] = Channel(
            self.config.source_queue_chunks, policy, name="source_drop" if policy != "block" else "source",
            metrics=self.metrics,
        )
        self._chunk_channels.append(chunks)
        self.metrics.active_streams.inc()
        self._work.append(tg.create_task(self._pump(source, chunks)))
        self._work.append(tg.create_task(self._window(source, chunks)))

    async def _pump(self, source: Source, out: Channel[AudioChunk]) -> None:
        """Source → chunk channel. Ends the stream (not the run) on a source error."""
        try:
            async for chunk in source.chunks():
                await out.put(chunk)
        except ChannelClosedError:
            pass  # the window task rejected this stream
        except Exception as e:  # sources are independent: a failing source ends only its stream
            self._fail_stream(source.stream_id, e, "source")
        finally:
            out.close()
            try:
                await source.close()
            except Exception:
                logger.exception("closing source %s failed", source.stream_id)

    async def _window(self, source: Source, chunks: Channel[AudioChunk]) -> None:
        """The async shell around :class:`Windower` for one stream."""
        stats = self._streams[source.stream_id]
        windower = Windower(self._windower_config, source.stream_id)
        try:
            async for chunk in chunks:
                for window in self._push_chunk(windower, stats, chunk):
                    await self._windows.put(window)
            for window in windower.flush(self._clock()):
                await self._windows.put(window)
        except ChannelClosedError:
            pass  # forced shutdown
        except Exception as e:
            if self._fail_stream(source.stream_id, e, "window") is not ErrorClass.INPUT:
                raise StageError(f"windowing stream {source.stream_id!r} failed: {e}") from e
            chunks.close()  # reject the stream: stop its source, forget its queued audio
            source.stop()
            chunks.discard()
        finally:
            stats.frames_expected = num_frames(
                windower.samples_pushed, self.config.windower.frame_stride_samples,
                self.config.windower.receptive_field_samples,
            )
            if not self._windows.closed:
                self._windows.put_control(StreamEnd(source.stream_id, windower.samples_pushed, stats.error, stats.error_class))
            self._window_tasks -= 1
            if self._window_tasks == 0 and (self._stopping or not self.config.serve):
                self._windows.close()

    def _push_chunk(self, windower: Windower, stats: StreamStats, chunk: AudioChunk) -> list[Window]:
        now = self._clock()
        samples = chunk.samples
        expected = windower.samples_pushed
        out: list[Window] = []
        if chunk.start_sample > expected:  # audio was lost upstream: keep the timeline exact
            gap = chunk.start_sample - expected
            stats.gap_samples += gap
            self.metrics.source_gap_samples.labels("pipeline").inc(gap)
            for done in range(0, gap, _GAP_PIECE_SAMPLES):
                out += windower.push(np.zeros(min(_GAP_PIECE_SAMPLES, gap - done), np.float32), now, chunk.received_s)
        elif chunk.start_sample < expected:
            samples = samples[expected - chunk.start_sample :]
        out += windower.push(samples, now, chunk.received_s)
        stats.samples_in = windower.samples_pushed
        stats.windows += len(out)
        self.metrics.audio_in.inc(samples.shape[0] / chunk.sample_rate)
        if samples.shape[0]:
            rms = float(np.sqrt(np.mean(np.square(samples[-4096:], dtype=np.float32))))
            self._level_dbfs = 20 * math.log10(max(rms, 1e-9))
        return out

    async def _consume(self) -> None:
        """Features → consumers, in order; records per-stream accounting."""
        try:
            async for item in self._features:
                if isinstance(item, StreamEnd):
                    await self._end_stream(item)
                    continue
                stats = self._streams.get(item.stream_id)
                if stats is not None:
                    stats.frames_out += item.num_frames
                for consumer in self.consumers:
                    await self._call_consumer(consumer, consumer.consume, item)
        finally:
            self._drained.set()
            self._stop.set()  # wakes the supervisor when the run ends by itself

    async def _end_stream(self, end: StreamEnd) -> None:
        stats = self._streams.pop(end.stream_id, None)
        self._sources.pop(end.stream_id, None)
        if stats is not None:
            stats.ended = True
            self._finished.append(stats)
        self.metrics.active_streams.dec()
        for consumer in self.consumers:
            await self._call_consumer(consumer, consumer.end_stream, end)

    async def _call_consumer(self, consumer: FeatureConsumer, method: Callable[..., object], item: object) -> None:
        async def call() -> None:
            await method(item)  # type: ignore[misc]

        started = time.perf_counter()
        try:
            await retry_call(call, self.config.consumer_retry, operation=f"consumer {type(consumer).__name__}")
        except Exception as e:
            error_class = self._count_error(e, "sink")
            if error_class is not ErrorClass.INPUT:
                raise StageError(f"consumer {type(consumer).__name__} failed: {e}") from e
            logger.warning("consumer %s rejected an item: %s", type(consumer).__name__, e)
        finally:
            elapsed_s = time.perf_counter() - started
            self.metrics.stage_latency.labels("sink").observe(elapsed_s)
            self.health.observe_latency("sink", elapsed_s)

    async def _supervise(self) -> None:
        """Waits for a stop request (or the natural end) and enforces the drain timeout."""
        await self._stop.wait()
        if self._drained.is_set():
            return
        self._stopping = True
        logger.info("stopping: sources first, then draining (up to %.1f s)", self.config.shutdown_timeout_s)
        for source in list(self._sources.values()):
            source.stop()
        if self._window_tasks == 0:
            self._windows.close()
        try:
            async with asyncio.timeout(self.config.shutdown_timeout_s):
                await self._drained.wait()
        except TimeoutError:
            logger.warning("drain exceeded %.1f s: cancelling remaining work", self.config.shutdown_timeout_s)
            self.forced = True
            self._cancel_work()
        pending = [t for t in self._work if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=self.config.cancel_timeout_s)
            if still:
                logger.error("%d task(s) ignored cancellation for %.1f s", len(still), self.config.cancel_timeout_s)

    def _channels(self) -> list[Channel[Any]]:
        return [*self._chunk_channels, self._windows, self._features]

    def _cancel_work(self) -> None:
        for channel in self._channels():
            channel.close()
            channel.discard()
        for task in self._work:
            task.cancel()

    async def _close_all(self) -> None:
        """Close sources, then consumers, then the model sessions; log (never raise) failures."""
        closers: list[tuple[str, Callable[[], object]]] = [
            *((f"source {s.stream_id}", s.close) for s in self._all_sources()),
            *((f"consumer {type(c).__name__}", c.close) for c in self.consumers),
            ("inference stage", self.stage.close),
        ]
        for what, close in closers:
            try:
                await close()  # type: ignore[misc]
            except Exception:
                logger.exception("closing %s failed", what)

    # -- accounting --------------------------------------------------------------------------

    def _fail_stream(self, stream_id: str, e: Exception, stage: str) -> ErrorClass:
        error_class = self._count_error(e, stage)
        stats = self._streams.get(stream_id)
        if stats is not None and not stats.error:
            hint = getattr(e, "hint", "")
            stats.error = str(e).removesuffix(f" (hint: {hint})") if hint else str(e)
            stats.error_class = error_class.value
            stats.hint = hint
        level = logging.WARNING if error_class is ErrorClass.INPUT else logging.ERROR
        logger.log(level, "stream %s ended by a %s error in %s: %s", stream_id, error_class.value, stage, e)
        return error_class

    def _count_error(self, e: BaseException, stage: str) -> ErrorClass:
        error_class = classify_error(e)
        self._errors[error_class.value] += 1
        self.metrics.stage_errors.labels(stage, error_class.value).inc()
        return error_class

    def _on_window_drop(self, window: Window, _reason: str) -> None:
        stats = self._streams.get(window.stream_id)
        if stats is not None:
            stats.frames_dropped += window.core_frames

    def _on_channel_drop(self, item: object, _reason: str) -> None:
        if isinstance(item, Window):
            self._on_window_drop(item, _reason)
        elif isinstance(item, StreamFeatures):
            stats = self._streams.get(item.stream_id)
            if stats is not None:
                stats.frames_dropped += item.num_frames

    def _drop_counts(self) -> list[dict[str, int]]:
        counts: list[dict[str, int]] = [dict(self.stage.stats.dropped)]
        for channel in self._channels():
            counts.append({f"{channel.name}:{reason}": n for reason, n in channel.dropped.items()})
        return counts

    def _all_streams(self) -> list[StreamStats]:
        return [*self._finished, *self._streams.values()]

    def _all_sources(self) -> list[Source]:
        return list(self._sources.values())

    def _install_signals(self, loop: asyncio.AbstractEventLoop) -> list[int]:
        installed: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, self.stop)
                installed.append(sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not the main thread / Windows
                logger.debug("cannot install a handler for %s here", sig)
        return installed


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception to show for a failed TaskGroup: a StreamError/SessionError if any."""
    leaves: list[BaseException] = []

    def walk(eg: BaseExceptionGroup[BaseException]) -> None:
        for e in eg.exceptions:
            walk(e) if isinstance(e, BaseExceptionGroup) else leaves.append(e)

    walk(group)
    for e in leaves[1:]:
        logger.error("also failed: %r", e)
    for e in leaves:
        if isinstance(e, StreamError):
            return e
    return leaves[0]
