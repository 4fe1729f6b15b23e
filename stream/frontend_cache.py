"""Per-stream conv-frame caches for models exported with the split graph.

With ``frontend.onnx`` + ``encoder.onnx`` (``docs/manifest.md``) a stream runs the conv
front end once per hop: each stream's :class:`~ostinato.runtime.w2v_frontend.FrontEndState`
keeps the conv frames already computed (a bounded ring) and the running normalisation
statistics, so a window only sends its *new* frames' audio (hop + 80-sample receptive
overlap) through the front end, and the transformer reads ``[left | hop | right]`` conv
frames from the cache, batched across streams. See ``docs/streaming.md``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime.w2v_frontend import FrontEndConfig, FrontEndState
from ostinato.stream.frames import Window

__all__ = ["ConvFrameCache", "supports_cache"]


def supports_cache(models: Sequence[Any]) -> bool:
    """Whether every model has the split graph (``Wav2Vec2Model.has_split``)."""
    return bool(models) and all(getattr(m, "has_split", False) for m in models)


@dataclasses.dataclass(slots=True)
class _Counts:
    computed: int = 0
    reused: int = 0


class ConvFrameCache:
    """The conv-frame caches of every live stream (thread-safe; one lock per stream).

    Args:
        config: Cache size and statistics settings of each stream.
        stride: Samples per frame (320).
    """

    def __init__(self, config: FrontEndConfig, stride: int) -> None:
        self.config = config
        # One thread: batches are submitted in dispatch order, so each stream's windows run
        # the front end in stream order (see conv_batch).
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ostinato-frontend")
        self.stride = stride
        self._states: dict[str, FrontEndState] = {}
        self._lock = threading.Lock()
        self._counts = _Counts()

    @property
    def frames_computed(self) -> int:
        """Conv frames computed by the front end (streams that ended included)."""
        return self._counts.computed

    @property
    def frames_reused(self) -> int:
        """Conv frames taken from a cache instead of being computed again."""
        return self._counts.reused

    @property
    def streams(self) -> int:
        """Streams with a live cache."""
        return len(self._states)

    def conv_batch(self, model: Any, batch: Sequence[Window]) -> npt.NDArray[np.float32]:
        """Encoder input ``[B, T, C]`` for equal-length windows; front end only for new frames.

        Call it for a stream's windows in stream order (the stage runs it on one thread, in
        dispatch order), so the statistics each frame is normalised with do not depend on
        how windows were batched or which worker encodes them.
        """
        conv = []
        for w in batch:
            state = self._state(model, w.stream_id)
            before = (state.frames_computed, state.frames_reused)
            conv.append(state.conv_frames(model.frontend, w.samples, w.start_sample // self.stride))
            with self._lock:
                self._counts.computed += state.frames_computed - before[0]
                self._counts.reused += state.frames_reused - before[1]
        return np.stack(conv) if len(conv) > 1 else conv[0][None]

    @staticmethod
    def encode(model: Any, conv: npt.NDArray[np.float32], output: str) -> npt.NDArray[np.float32]:
        """Run ``encoder.onnx`` on conv frames ``[B, T, C]``; return ``output`` ``[B, T, H]``."""
        out: npt.NDArray[np.float32] = model.encode(conv, [output])[output]
        return out

    def timed_conv_batch(self, model: Any, batch: Sequence[Window]) -> tuple[npt.NDArray[np.float32], float]:
        """:meth:`conv_batch` and the seconds it took."""
        started = time.perf_counter()
        return self.conv_batch(model, batch), time.perf_counter() - started

    async def run_in_order(self, model: Any, batch: Sequence[Window]) -> tuple[npt.NDArray[np.float32], float]:
        """:meth:`timed_conv_batch` on the cache's own thread (call in dispatch order)."""
        return await self.submit(model, batch)

    def submit(self, model: Any, batch: Sequence[Window]) -> asyncio.Future[tuple[npt.NDArray[np.float32], float]]:
        """Queue :meth:`timed_conv_batch` on the cache's thread now (so calls run in call order)."""
        return asyncio.get_running_loop().run_in_executor(self._executor, self.timed_conv_batch, model, list(batch))

    async def close(self) -> None:
        """Stop the front-end thread after its current batch."""
        await asyncio.to_thread(self._executor.shutdown, True, cancel_futures=True)

    def available(self, stream_id: str, first: int, end: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """A stream's cached conv frames ``[first, end)`` where present, and a 1/0 mask."""
        with self._lock:
            state = self._states.get(stream_id)
        if state is None:
            return np.zeros((end - first, 0), np.float32), np.zeros(end - first, np.float32)
        return state.available(first, end)

    def end_stream(self, stream_id: str) -> None:
        """Forget a stream (call once all of its windows were processed)."""
        with self._lock:
            self._states.pop(stream_id, None)

    def _state(self, model: Any, stream_id: str) -> FrontEndState:
        with self._lock:
            state = self._states.get(stream_id)
            if state is None:
                state = model.new_frontend_state(self.config)
                self._states[stream_id] = state
            return state
