"""stream/describe.py: bounded background describer (one job at a time, drops counted)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ostinato.stream.describe import (
    DescribeJob,
    DescribeResult,
    DescribeWorker,
    DescribeWorkerConfig,
    describer_for,
)

AUDIO = np.zeros(1600, np.float32)


class _Gate:
    """A describe function that blocks until released and records concurrency."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = 0
        self.max_running = 0
        self.lock = threading.Lock()

    def __call__(self, audio: np.ndarray, sample_rate: int, prompt: str | None) -> str:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        try:
            if not self.release.wait(5.0):
                raise TimeoutError("gate never released")
            if prompt == "boom":
                raise ValueError("bad clip")
            return f"{audio.size}@{sample_rate}:{prompt}"
        finally:
            with self.lock:
                self.running -= 1


async def _wait_for(cond: object, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def test_one_at_a_time_drops_when_full_never_blocks() -> None:
    gate = _Gate()
    results: list[DescribeResult] = []
    async with DescribeWorker(gate, DescribeWorkerConfig(queue_size=2)) as worker:
        accepted = [worker.submit(DescribeJob(AUDIO, 16000, results.append, prompt="0", job_id="0"))]
        await _wait_for(lambda: worker.busy)  # job 0 running (blocked in the describer), queue empty
        started = time.perf_counter()
        accepted += [worker.submit(DescribeJob(AUDIO, 16000, results.append, prompt=str(i), job_id=str(i)))
                     for i in range(1, 6)]
        assert time.perf_counter() - started < 0.5  # submit never waited for the describer
        assert accepted == [True, True, True, False, False, False]
        assert worker.stats.dropped == 3 and worker.pending == 2
        gate.release.set()
        await _wait_for(lambda: len(results) == 3)
    assert [r.job_id for r in results] == ["0", "1", "2"]
    assert results[0].text == "1600@16000:0" and results[0].error is None
    assert gate.max_running == 1
    assert (worker.stats.submitted, worker.stats.completed, worker.stats.failed) == (6, 3, 0)


async def test_failures_and_callback_errors_do_not_stop_the_worker() -> None:
    gate = _Gate()
    gate.release.set()
    results: list[DescribeResult] = []

    def bad_callback(result: DescribeResult) -> None:
        raise RuntimeError("caller bug")

    async with DescribeWorker(gate) as worker:
        worker.submit(DescribeJob(AUDIO, 16000, results.append, prompt="boom", job_id="a"))
        worker.submit(DescribeJob(AUDIO, 16000, bad_callback, prompt="x", job_id="b"))
        worker.submit(DescribeJob(AUDIO, 16000, results.append, prompt="y", job_id="c"))
        await _wait_for(lambda: len(results) == 2)
    assert results[0].error == "ValueError: bad clip" and results[0].text is None
    assert results[1].text == "1600@16000:y"
    assert (worker.stats.failed, worker.stats.completed, worker.stats.callback_errors) == (1, 2, 1)


async def test_timeout_and_close_counts_leftovers() -> None:
    gate = _Gate()
    results: list[DescribeResult] = []
    worker = DescribeWorker(gate, DescribeWorkerConfig(queue_size=3, timeout_s=0.05))
    worker.start()
    for i in range(3):
        worker.submit(DescribeJob(AUDIO, 16000, results.append, job_id=str(i)))
    await _wait_for(lambda: len(results) >= 1)
    assert results[0].error is not None and "TimeoutError" in results[0].error
    await worker.close()
    gate.release.set()
    assert worker.submit(DescribeJob(AUDIO, 16000, results.append)) is False
    s = worker.stats
    assert s.submitted == s.dropped + s.completed + s.failed + worker.pending
    assert s.dropped >= 1


def test_job_validation() -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        DescribeJob(AUDIO, 0, print)
    with pytest.raises(ValueError, match="queue_size"):
        DescribeWorkerConfig(queue_size=0)


async def test_with_a_real_gama_model(tiny_gama_dir: Path) -> None:
    from ostinato.runtime.gama import GamaModel

    results: list[DescribeResult] = []
    with GamaModel.from_dir(tiny_gama_dir, provider="cpu") as model:
        fn = describer_for(model, temperature=0.0, max_new_tokens=6)
        async with DescribeWorker(fn) as worker:
            tone = (0.2 * np.sin(np.arange(32000) / 10)).astype(np.float32)
            assert worker.submit(DescribeJob(tone, 16000, results.append, job_id="pattern-1"))
            await _wait_for(lambda: len(results) == 1, timeout_s=30)
        expected = model.describe(tone, 16000, temperature=0.0, max_new_tokens=6)
    assert results[0].job_id == "pattern-1" and results[0].text == expected
