"""InferenceStage: batches windows across streams and runs the model off the event loop.

Windows from every stream share one inbox. The stage collects up to ``batch_size`` windows
of equal length (waiting at most ``max_wait_ms`` for more), drops windows whose age exceeds
``max_lag_s`` (counted, reason ``deadline``) instead of building up lag, and hands the batch
to a free worker: each worker is one model (ONNX Runtime session) with one dedicated thread,
so session access is serialized and the loop stays free (``session.run`` releases the GIL).
Results are emitted in batch order, so every stream's features stay in order, trimmed to the
windows' core frames with exact sample times.

Models exported with the split graph run each stream's conv front end once per hop, on one
ordered thread, and batch only the transformer (:mod:`ostinato.stream.frontend_cache`);
older model directories run whole windows through ``model.onnx``. Exports with
``encoder_cached.onnx`` also keep each stream's left-context keys/values, so the transformer
runs only each window's hop + right context (:mod:`ostinato.stream.kv_cache`); then at most
one window per stream is in flight (later ones are held back, other streams still batch).

Failures are classified: transient errors are retried with backoff, then counted and the
batch dropped (``inference_error``); a circuit breaker fails fast after repeated failures
(``breaker_open``); input errors drop the batch (``input``); permanent errors stop the run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.stream.batching import StreamGate, collect_gated, collect_plain
from ostinato.stream.breaker import CircuitBreaker
from ostinato.stream.channel import Channel
from ostinato.stream.errors import ConfigError, ErrorClass, StageError, classify_error
from ostinato.stream.frames import StreamEnd, StreamFeatures, Window, WindowTiming
from ostinato.stream.frontend_cache import ConvFrameCache, supports_cache
from ostinato.stream.health import HealthMonitor
from ostinato.stream.infer_config import BatchModel, InferenceConfig, InferenceStats
from ostinato.stream.kv_cache import KVCache, supports_kv
from ostinato.stream.metrics import StreamMetrics, process_rss_bytes
from ostinato.stream.prefetch import FrontEndPrefetch
from ostinato.stream.retry import retry_call
from ostinato.stream.windowing import WindowerConfig

__all__ = ["BatchModel", "InferenceConfig", "InferenceStage", "InferenceStats"]

logger = logging.getLogger(__name__)

STAGE = "inference"


@dataclasses.dataclass(slots=True)
class _Worker:
    index: int
    model: BatchModel
    executor: ThreadPoolExecutor


@dataclasses.dataclass(slots=True)
class _Result:
    windows: list[Window]
    frames: list[npt.NDArray[np.float32]]
    started_s: float
    inference_s: float
    post_s: float
    transformer_frames: int = 0


class InferenceStage:
    """Runs windows through a pool of model workers, in order, with deadlines and a breaker.

    Args:
        models: One model per worker (each gets its own thread). The same object may appear
            several times to share one thread-safe session between threads.
        config: Batching/deadline/resilience settings.
        metrics: Metrics to update (optional).
        health: Health monitor to feed (optional; a pipeline attaches its own when unset).
        on_drop: Called as ``(window, reason)`` for every window not inferred (settable
            later through the ``on_drop`` attribute; the pipeline sets it).
        own_models: Close the models in :meth:`close` (set by :meth:`from_dir`).
        clock: Monotonic clock, the same one that stamped ``Window.ready_s``.
    """

    name = STAGE

    def __init__(
        self,
        models: Sequence[BatchModel],
        config: InferenceConfig = InferenceConfig(),
        *,
        metrics: StreamMetrics | None = None,
        health: HealthMonitor | None = None,
        on_drop: Callable[[Window, str], None] | None = None,
        own_models: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not models:
            raise ConfigError("InferenceStage needs at least one model (workers >= 1)")
        first = models[0]
        self.output = config.output or first.default_output
        if self.output not in first.output_names:
            raise ConfigError(f"output={self.output!r}; this model has {list(first.output_names)}")
        self.config = config
        self.sample_rate = first.sample_rate
        self.stride = first.frame_stride_samples
        self.receptive_field = first.receptive_field_samples
        self.stats = InferenceStats()
        self.breaker = CircuitBreaker(STAGE, config.breaker, clock=clock, metrics=metrics)
        self._models = list(models)
        self._own_models = own_models
        self._metrics = metrics
        self.health = health
        self.on_drop = on_drop
        self._clock = clock
        self._workers = [
            _Worker(i, m, ThreadPoolExecutor(1, thread_name_prefix=f"ostinato-infer-{i}")) for i, m in enumerate(models)
        ]
        self._held: Window | StreamEnd | None = None
        self._queue: Channel[Any] | None = None  # the stage's own inbox (health reports its depth)
        self._kv_counted = (0, 0)  # K/V restarts and short windows already in the metrics
        self._closed = False
        self.frontend_cache: ConvFrameCache | None = None
        if config.frontend is not None and supports_cache(models):
            self.frontend_cache = ConvFrameCache(config.frontend, self.stride)
        self.kv_cache: KVCache | None = None
        self.gate: StreamGate | None = None
        if self.frontend_cache is not None and config.kv is not None and supports_kv(models):
            self.kv_cache = KVCache(config.kv, self.stride)
            self.gate = StreamGate(config.max_held_windows)
        self.prefetch: FrontEndPrefetch | None = None
        if self.kv_cache is not None and self.frontend_cache is not None:
            self.prefetch = FrontEndPrefetch(self.frontend_cache, models[0], config.batch_size * len(self._workers))
        path = "K/V + conv-frame cache" if self.kv_cache else "conv-frame cache" if self.frontend_cache else "whole windows"
        logger.info("inference path: %s", path)

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        *,
        workers: int = 1,
        provider: str = "auto",
        intra_op_threads: int | None = None,
        config: InferenceConfig = InferenceConfig(),
        metrics: StreamMetrics | None = None,
        health: HealthMonitor | None = None,
        on_drop: Callable[[Window, str], None] | None = None,
    ) -> InferenceStage:
        """Load ``workers`` sessions of an exported Wav2Vec2 model and build the stage.

        Args:
            directory: Model directory (``ostinato.json`` + ONNX).
            workers: Sessions (each with one dedicated thread).
            provider: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.
            intra_op_threads: Threads per session operator (default: 1 when several
                workers share the CPU, else ONNX Runtime's choice).
            config: Stage settings.
            metrics: Metrics (model memory, provider fallback are recorded here).
            health: Health monitor (provider fallback is recorded here).
            on_drop: See the constructor.

        Returns:
            A stage that owns (and closes) its models.
        """
        from ostinato.runtime import Wav2Vec2Model

        if not isinstance(workers, int) or not 1 <= workers <= 64:
            raise ConfigError(f"workers={workers!r}; expected an integer in [1, 64]")
        threads = intra_op_threads if intra_op_threads is not None else (1 if workers > 1 else None)
        rss_before = process_rss_bytes()
        models: list[Wav2Vec2Model] = []
        try:
            for _ in range(workers):
                models.append(Wav2Vec2Model.from_dir(directory, provider=provider, intra_op_threads=threads))
        except BaseException:
            for m in models:
                m.close()
            raise
        session = models[0].session
        if metrics is not None:
            metrics.model_memory.labels(Path(directory).name).set(max(0.0, process_rss_bytes() - rss_before))
            metrics.provider_fallback.set(1 if session.fell_back else 0)
        if session.fell_back and provider != "auto" and health is not None:  # "auto" falling back is by design
            health.set_fallback(STAGE, f"{provider} requested, running on {session.providers[0]}")
        return cls(models, config, metrics=metrics, health=health, on_drop=on_drop, own_models=True)

    @property
    def models(self) -> list[BatchModel]:
        """The worker models."""
        return list(self._models)

    def windower_config(self, config: WindowerConfig) -> WindowerConfig:
        """``config`` as this stage wants windows cut: on the K/V path a stream's first windows
        run as soon as their core and right context arrived (``WindowerConfig.short_start``);
        they cost a normal window there, and streams starting together send no burst."""
        return dataclasses.replace(config, short_start=True) if self.kv_cache is not None else config

    async def run(self, inbox: Channel[Window | StreamEnd], outbox: Channel[StreamFeatures | StreamEnd]) -> None:
        """Consume windows until the inbox ends; emit features (and end markers) in order.

        Closes ``outbox`` when done.

        Raises:
            StageError: On a permanent inference failure.
        """
        idle: Channel[_Worker] = Channel(len(self._workers), name="inference_workers")
        for w in self._workers:
            idle.offer(w)
        inflight: Channel[asyncio.Future[list[StreamFeatures | StreamEnd]]] = Channel(
            len(self._workers), name="inference_inflight"
        )
        loop = asyncio.get_running_loop()
        self._queue = inbox
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._emit(inflight, outbox))
                if self.prefetch is not None:  # K/V path: front ends run as windows arrive
                    tg.create_task(self.prefetch.run(inbox))
                    inbox = self.prefetch.out
                try:
                    while True:
                        # A batch is formed only once a worker is free, from every window ready by
                        # then: under load batches grow instead of queueing small ones, and (K/V path)
                        # a stream whose previous window just finished can still join.
                        worker = await idle.get()
                        batch, marker = await self._next_batch(inbox)
                        if not batch and marker is None:
                            break
                        batch = self._apply_deadline(batch)
                        if batch:
                            if self.gate is not None:
                                self.gate.start(batch)
                            await inflight.put(tg.create_task(self._process(worker, batch, idle)))
                        else:
                            idle.offer(worker)
                        if marker is not None:
                            done: asyncio.Future[list[StreamFeatures | StreamEnd]] = loop.create_future()
                            done.set_result([marker])
                            await inflight.put(done)
                finally:
                    inflight.close()
        finally:
            outbox.close()

    async def close(self) -> None:
        """Stop the worker threads (after their current batch) and close owned models."""
        if self._closed:
            return
        self._closed = True
        for w in self._workers:
            await asyncio.to_thread(w.executor.shutdown, True, cancel_futures=True)
        if self.frontend_cache is not None:
            await self.frontend_cache.close()
        if self._own_models:
            for m in {id(m): m for m in self._models}.values():
                close = getattr(m, "close", None)
                if close is not None:
                    close()

    # -- batching ----------------------------------------------------------------------------

    async def _next_batch(self, inbox: Channel[Window | StreamEnd]) -> tuple[list[Window], StreamEnd | None]:
        """Next batch of equal-length windows, or an end marker (which closes a batch)."""
        max_wait_s = self.config.max_wait_ms / 1000
        if self.gate is None:
            batch, marker, self._held = await collect_plain(
                inbox, self._held, self.config.batch_size, max_wait_s, lambda: self._set_queue(inbox)
            )
            return batch, marker
        self._set_queue(self._queue)
        collected = await collect_gated(self.gate, inbox, self._gated_batch_size, max_wait_s)
        self._note_kv()
        return collected

    def _gated_batch_size(self) -> int:
        """K/V path: a batch holds at most its share of the live streams per worker. A stream
        waits for its previous window, so one batch holding every stream would leave the other
        workers nothing to run until it finished (measured: 8 streams, batch 8, 2 workers
        dropped windows at the deadline; batch 4 did not)."""
        streams = self.kv_cache.streams if self.kv_cache is not None else 0
        if streams == 0:
            return self.config.batch_size
        return min(self.config.batch_size, -(-streams // len(self._workers)))

    def _apply_deadline(self, batch: list[Window]) -> list[Window]:
        self.stats.windows_in += len(batch)
        now = self._clock()
        ages = [now - t for t in map(_arrival_s, batch) if t > 0]
        lag_s = max(ages, default=0.0)
        if self._metrics is not None:
            self._metrics.lag.set(lag_s)
        if self.health is not None:
            self.health.set_lag(STAGE, lag_s)
        if math.isinf(self.config.max_lag_s) or lag_s <= self.config.max_lag_s:
            return batch
        kept = []
        for w in batch:
            arrival_s = _arrival_s(w)
            if arrival_s > 0 and now - arrival_s > self.config.max_lag_s:
                self._drop(w, "deadline")
            else:
                kept.append(w)
        return kept

    # -- running -----------------------------------------------------------------------------

    async def _process(self, worker: _Worker, batch: list[Window], idle: Channel[_Worker]) -> list[StreamFeatures | StreamEnd]:
        try:
            result = await self._guarded_run(worker, batch)
        finally:
            idle.offer(worker)
            if self.prefetch is not None:
                self.prefetch.forget(batch)
            if self.gate is not None:
                self.gate.finish(batch)
            self._note_kv()
        return [] if result is None else self._package(result)

    async def _guarded_run(self, worker: _Worker, batch: list[Window]) -> _Result | None:
        if not self.breaker.allow():
            self._note_breaker()
            for w in batch:
                self._drop(w, "breaker_open")
            return None
        started_s = self._clock()
        loop = asyncio.get_running_loop()

        async def attempt() -> _Result:
            cache = self.frontend_cache  # submitted before any await: in dispatch order
            if self.prefetch is not None:
                front: tuple[npt.NDArray[np.float32], float] | None = await self.prefetch.conv(batch)
            else:
                front = await cache.run_in_order(worker.model, batch) if cache is not None else None
            return await loop.run_in_executor(worker.executor, self._infer_sync, worker.model, batch, started_s, front)

        def count_retry(_attempt: int, e: BaseException, _delay_s: float) -> None:
            self._count_error(e)
            if self._metrics is not None:
                self._metrics.retries.labels(STAGE).inc()

        try:
            result = await retry_call(attempt, self.config.retry, operation="inference", on_retry=count_retry)
        except Exception as e:
            self._on_failure(e, batch)
            return None
        self.breaker.record_success()
        self._note_breaker()
        if self.health is not None:
            self.health.observe_outcome(STAGE, True)
            self.health.observe_latency(STAGE, result.inference_s)
        return result

    def _on_failure(self, e: Exception, batch: list[Window]) -> None:
        error_class = self._count_error(e)
        if self.health is not None:
            self.health.observe_outcome(STAGE, False)
        if error_class is ErrorClass.PERMANENT:
            raise StageError(f"inference failed permanently: {e}") from e
        if error_class is ErrorClass.TRANSIENT:
            self.breaker.record_failure()
            self._note_breaker()
        logger.warning("inference batch of %d window(s) dropped (%s): %s", len(batch), error_class.value, e)
        reason = "input" if error_class is ErrorClass.INPUT else "inference_error"
        for w in batch:
            self._drop(w, reason)

    def _infer_sync(
        self, model: BatchModel, batch: list[Window], started_s: float, front: tuple[npt.NDArray[np.float32], float] | None = None
    ) -> _Result:
        """Runs on the worker thread: stack (or take the cached conv frames), run, trim."""
        conv = front[0] if front is not None else None
        t0 = time.perf_counter() - (front[1] if front is not None else 0.0)
        if conv is not None and self.kv_cache is not None:
            frames, encoded = self.kv_cache.encode(model, batch, conv, self.output, self.frontend_cache)
            t1 = time.perf_counter()
            return _Result(batch, frames, started_s, t1 - t0, time.perf_counter() - t1, encoded)
        if conv is not None:
            out = ConvFrameCache.encode(model, conv, self.output)
        else:
            x = np.stack([w.samples for w in batch]) if len(batch) > 1 else batch[0].samples[None, :]
            out = model.run_batch(x, [self.output])[self.output]
        t1 = time.perf_counter()
        n_samples = batch[0].samples.shape[0]
        expected = _num_frames(n_samples, self.stride, self.receptive_field)
        if out.ndim != 3 or out.shape[0] != len(batch) or out.shape[1] != expected:
            raise StageError(
                f"model output {self.output!r} has shape {out.shape}; expected [{len(batch)}, {expected}, H] "
                f"for windows of {n_samples} samples",
                hint="the model's frame geometry differs from its manifest; re-export it",
            )
        frames = []
        for b, w in enumerate(batch):
            offset = w.core_start_frame - w.start_sample // self.stride
            frames.append(np.ascontiguousarray(out[b, offset : offset + w.core_frames], dtype=np.float32))
        return _Result(batch, frames, started_s, t1 - t0, time.perf_counter() - t1, len(batch) * expected)

    def _package(self, r: _Result) -> list[StreamFeatures | StreamEnd]:
        st = self.stats
        st.batches += 1
        st.windows_run += len(r.windows)
        st.transformer_frames += r.transformer_frames
        st.busy_s += r.inference_s + r.post_s
        now = self._clock()
        out: list[StreamFeatures] = []
        for w, frames in zip(r.windows, r.frames, strict=True):
            queue_wait_s = max(0.0, r.started_s - w.ready_s) if w.ready_s > 0 else 0.0
            latency_s = max(0.0, now - w.ready_s) if w.ready_s > 0 else 0.0
            since_received_s = max(0.0, now - w.received_s) if w.received_s > 0 else 0.0
            timing = WindowTiming(queue_wait_s, r.inference_s, r.post_s, len(r.windows), latency_s, since_received_s)
            for name, value in (("queue_wait", queue_wait_s), ("inference", r.inference_s), ("post", r.post_s), ("latency", latency_s)):
                st.timing[name].add(value)
            starts = (np.arange(w.core_frames, dtype=np.int64) + w.core_start_frame) * self.stride
            out.append(
                StreamFeatures(w.stream_id, w.index, frames, starts, self.sample_rate, self.output, timing, w.last, self.stride)
            )
            st.frames_out += w.core_frames
            st.audio_s += w.core_frames * self.stride / self.sample_rate
        if self._metrics is not None:
            m = self._metrics
            m.batch_size.observe(len(r.windows))
            m.stage_latency.labels(STAGE).observe(r.inference_s)
            m.stage_latency.labels("post").observe(r.post_s)
            for f in out:
                m.queue_wait.observe(f.timing.queue_wait_s)
                m.window_latency.observe(f.timing.latency_s)
            m.frames_out.inc(sum(w.core_frames for w in r.windows))
            if st.audio_s > 0:
                m.rtf.set(st.busy_s / st.audio_s)
        return list(out)

    async def _emit(
        self, inflight: Channel[asyncio.Future[list[StreamFeatures | StreamEnd]]], outbox: Channel[StreamFeatures | StreamEnd]
    ) -> None:
        async for fut in inflight:
            for item in await fut:
                if isinstance(item, StreamEnd):
                    if self.frontend_cache is not None:
                        self.frontend_cache.end_stream(item.stream_id)
                    if self.kv_cache is not None:
                        self.kv_cache.end_stream(item.stream_id)
                    outbox.put_control(item)  # end markers are never dropped
                else:
                    await outbox.put(item)

    # -- accounting --------------------------------------------------------------------------

    def _drop(self, window: Window, reason: str) -> None:
        if self.prefetch is not None:
            self.prefetch.forget([window])
        self.stats.dropped[reason] += 1
        if self._metrics is not None:
            self._metrics.windows_dropped.labels(reason).inc()
        if self.on_drop is not None:
            self.on_drop(window, reason)

    def _count_error(self, e: BaseException) -> ErrorClass:
        error_class = classify_error(e)
        self.stats.errors[error_class.value] += 1
        if self._metrics is not None:
            self._metrics.stage_errors.labels(STAGE, error_class.value).inc()
        return error_class

    def _note_breaker(self) -> None:
        if self.health is not None:
            self.health.set_breaker(STAGE, self.breaker.state.value)

    def _note_kv(self) -> None:
        """K/V path counters and gauges into the metrics (after each batch)."""
        kv, m = self.kv_cache, self._metrics
        if kv is None or m is None:
            return
        restarts, short = kv.restarts, kv.windows_short
        m.kv_restarts.inc(restarts - self._kv_counted[0])
        m.kv_short_windows.inc(short - self._kv_counted[1])
        self._kv_counted = (restarts, short)
        m.cache_bytes.labels("kv").set(kv.nbytes)
        if self.gate is not None:
            m.held_windows.set(self.gate.held)

    def _set_queue(self, inbox: Channel[Any] | None) -> None:
        if self.health is not None and inbox is not None:
            self.health.set_queue(STAGE, inbox.depth, inbox.capacity)


def _arrival_s(window: Window) -> float:
    # Age counts from when the newest audio in the window reached the source (time spent in
    # the source queue is lag too); windows without that stamp count from when they were cut.
    return window.received_s if window.received_s > 0 else window.ready_s


def _num_frames(n: int, stride: int, field: int) -> int:
    return 0 if n < field else (n - field) // stride + 1

