"""DescribeWorker: describe audio clips in the background without ever stalling the caller.

The stream (matcher: "new pattern"; server: "describe this") hands over a
:class:`DescribeJob` with :meth:`DescribeWorker.submit`, which never blocks: when the bounded
queue is full (or the worker is closed) the job is dropped and counted. One job runs at a
time on a dedicated thread (GAMA on CPU takes seconds per clip), and each result — text or
error — goes to the job's callback on the event loop thread.

Wiring into the pipeline and the pattern library is separate; this module depends only on a
``describe(audio, sample_rate, prompt) -> str`` callable, e.g. :meth:`GamaModel.describe`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DescribeJob",
    "DescribeResult",
    "DescribeStats",
    "DescribeWorker",
    "DescribeWorkerConfig",
    "describer_for",
]

logger = logging.getLogger(__name__)

DescribeFn = Callable[[npt.NDArray[np.float32], int, "str | None"], str]


@dataclasses.dataclass(frozen=True, slots=True)
class DescribeResult:
    """Outcome of one job: ``text`` on success, ``error`` (type: message) otherwise."""

    job_id: str
    text: str | None
    error: str | None
    elapsed_s: float


@dataclasses.dataclass(frozen=True, slots=True)
class DescribeJob:
    """A clip to describe and where the answer goes.

    Args:
        audio: Mono float32 samples (GAMA looks at the first 10.24 s at 16 kHz).
        sample_rate: Sample rate of ``audio`` in Hz.
        callback: Called on the event loop thread with the :class:`DescribeResult`.
        prompt: Instruction; ``None`` uses the describer's default.
        job_id: Caller's label (e.g. a pattern id), echoed in the result.
    """

    audio: npt.NDArray[np.float32]
    sample_rate: int
    callback: Callable[[DescribeResult], None]
    prompt: str | None = None
    job_id: str = ""

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate={self.sample_rate}; expected a positive integer in Hz")


@dataclasses.dataclass(frozen=True, slots=True)
class DescribeWorkerConfig:
    """Args: queue_size: jobs waiting at most (beyond the running one); timeout_s: per job."""

    queue_size: int = 4
    timeout_s: float = 300.0

    def __post_init__(self) -> None:
        if self.queue_size < 1:
            raise ValueError(f"queue_size={self.queue_size}; expected >= 1")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s={self.timeout_s}; expected > 0")


@dataclasses.dataclass(slots=True)
class DescribeStats:
    """Counters (also exported as ``ostinato_describe_*`` metrics when the worker has a
    :class:`~ostinato.stream.metrics.StreamMetrics`): every job ends in exactly one of
    ``dropped``, ``completed`` or ``failed``; ``dropped_by`` splits the drops by reason
    (``queue_full``, ``closed``: submitted after close, ``shutdown``: queued or running at close)."""

    submitted: int = 0
    dropped: int = 0
    completed: int = 0
    failed: int = 0
    callback_errors: int = 0
    dropped_by: dict[str, int] = dataclasses.field(default_factory=dict)
    total_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready counters."""
        return {"submitted": self.submitted, "completed": self.completed, "failed": self.failed,
                "dropped": self.dropped, "dropped_by": dict(self.dropped_by), "callback_errors": self.callback_errors,
                "mean_s": round(self.total_s / max(1, self.completed + self.failed), 4)}


class DescribeWorker:
    """Bounded background describer; use as ``async with DescribeWorker(fn) as w: w.submit(job)``."""

    def __init__(self, describe: DescribeFn, config: DescribeWorkerConfig | None = None, metrics: Any = None) -> None:
        self._describe = describe
        self.config = config or DescribeWorkerConfig()
        self.stats = DescribeStats()
        self._metrics = metrics  # a StreamMetrics, or None
        if metrics is not None:  # every drop reason is exported from the start, at 0
            for reason in ("queue_full", "closed", "shutdown"):
                metrics.describe_dropped.labels(reason)
        self._queue: asyncio.Queue[DescribeJob] = asyncio.Queue(maxsize=self.config.queue_size)
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="describe")
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.busy = False

    @property
    def pending(self) -> int:
        """Jobs waiting (not counting the running one)."""
        return self._queue.qsize()

    def submit(self, job: DescribeJob) -> bool:
        """Queue ``job`` without blocking; returns False (and counts a drop) if full or closed."""
        self.stats.submitted += 1
        if self._metrics is not None:
            self._metrics.describe_submitted.inc()
        if self._closed:
            self._drop("closed")
            return False
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._drop("queue_full")
            logger.info("describe queue full (%d): dropped job %r", self.config.queue_size, job.job_id)
            return False
        return True

    def _drop(self, reason: str, count: int = 1) -> None:
        self.stats.dropped += count
        self.stats.dropped_by[reason] = self.stats.dropped_by.get(reason, 0) + count
        if self._metrics is not None:
            self._metrics.describe_dropped.labels(reason).inc(count)

    def _finished(self, ok: bool, elapsed_s: float) -> None:
        self.stats.total_s += elapsed_s
        if ok:
            self.stats.completed += 1
        else:
            self.stats.failed += 1
        if self._metrics is not None:
            (self._metrics.describe_completed if ok else self._metrics.describe_failed).inc()
            self._metrics.describe_latency.observe(elapsed_s)

    def start(self) -> None:
        """Start the worker task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="describe-worker")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            job = await self._queue.get()
            self.busy = True
            started = time.perf_counter()
            try:
                async with asyncio.timeout(self.config.timeout_s):
                    text = await loop.run_in_executor(self._executor, self._describe, job.audio,
                                                      job.sample_rate, job.prompt)
                result = DescribeResult(job.job_id, text, None, time.perf_counter() - started)
                self._finished(True, result.elapsed_s)
            except asyncio.CancelledError:
                self._drop("shutdown")  # closed while this job was running
                raise
            except Exception as e:  # a bad clip must not stop the worker; reported to the caller
                reason = str(e) or (f"no answer within {self.config.timeout_s:g} s"
                                    if isinstance(e, TimeoutError) else "")
                result = DescribeResult(job.job_id, None, f"{type(e).__name__}: {reason}",
                                        time.perf_counter() - started)
                self._finished(False, result.elapsed_s)
                logger.warning("describe job %r failed: %s", job.job_id, result.error)
            finally:
                self.busy = False
                self._queue.task_done()
            self._deliver(job, result)

    def _deliver(self, job: DescribeJob, result: DescribeResult) -> None:
        try:
            job.callback(result)
        except Exception:  # the caller's bug; keep describing
            self.stats.callback_errors += 1
            logger.exception("describe callback for job %r raised", job.job_id)

    async def close(self, drain_timeout_s: float = 0.0) -> None:
        """Stop accepting jobs, optionally wait for queued ones, then stop. Idempotent.

        Jobs still queued when the drain times out are counted as dropped.
        """
        self._closed = True
        if self._task is not None and drain_timeout_s > 0:
            try:
                async with asyncio.timeout(drain_timeout_s):
                    await self._queue.join()
            except TimeoutError:
                logger.warning("describe worker: drain timed out with %d jobs queued", self.pending)
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                if asyncio.current_task() is not None and asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise
            self._task = None
        while not self._queue.empty():
            self._queue.get_nowait()
            self._drop("shutdown")
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def __aenter__(self) -> DescribeWorker:
        self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


def describer_for(model: Any, **settings: Any) -> DescribeFn:
    """Adapt a :class:`~ostinato.runtime.gama.GamaModel` (``describe`` method) to a DescribeFn."""

    def describe(audio: npt.NDArray[np.float32], sample_rate: int, prompt: str | None) -> str:
        if prompt is None:
            return str(model.describe(audio, sample_rate, **settings))
        return str(model.describe(audio, sample_rate, prompt, **settings))

    return describe
