"""Front end ahead of the K/V gate: each window's conv frames are computed as it arrives.

On the K/V path a stream's window waits until its previous window has been encoded
(:class:`~ostinato.stream.batching.StreamGate`). If the front end ran inside that wait, every
window's chain would be front end + transformer, and near capacity a stream could not keep one
window per hop. The front end does not need the previous window's keys/values, only the
stream's conv cache and statistics, which advance in stream order: :class:`FrontEndPrefetch`
reads the stage's inbox as windows come, submits each one's front end to the conv cache's
ordered thread at once, and passes the window on through a bounded channel; the batch then
only waits for results that are usually ready. Measured in ``bench/RESULTS.md``
("Left-context K/V cache").
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.stream.channel import Channel
from ostinato.stream.errors import EndOfStream
from ostinato.stream.frames import StreamEnd, Window
from ostinato.stream.frontend_cache import ConvFrameCache

__all__ = ["FrontEndPrefetch"]

FrontResult = tuple[npt.NDArray[np.float32], float]


class FrontEndPrefetch:
    """Runs each window's front end on arrival; :meth:`conv` collects a batch's results.

    Args:
        cache: The stage's conv-frame cache (its thread runs the front ends in arrival order).
        model: The model whose ``frontend`` runs (any worker's: the front end is stateless).
        capacity: Windows passed on but not yet batched (a bounded channel; when it is full,
            the inbox is not read: backpressure as before).
    """

    def __init__(self, cache: ConvFrameCache, model: Any, capacity: int) -> None:
        self._cache = cache
        self._model = model
        self._pending: dict[int, tuple[Window, asyncio.Future[FrontResult]]] = {}
        self.out: Channel[Window | StreamEnd] = Channel(capacity, name="inference_prefetched")

    @property
    def pending(self) -> int:
        """Windows whose front end was submitted and that are not batched or dropped yet."""
        return len(self._pending)

    async def run(self, inbox: Channel[Window | StreamEnd]) -> None:
        """Read ``inbox`` to its end, submitting front ends in order; then close :attr:`out`."""
        try:
            while True:
                try:
                    item = await inbox.get()
                except EndOfStream:
                    return
                if isinstance(item, StreamEnd):
                    self.out.put_control(item)
                    continue
                future = self._cache.submit(self._model, [item])
                future.add_done_callback(_retrieve)
                self._pending[id(item)] = (item, future)
                await self.out.put(item)
        finally:
            self.out.close()

    async def conv(self, batch: Sequence[Window]) -> FrontResult:
        """The batch's encoder input ``[B, T, C]`` and the front-end seconds it took."""
        parts = [await self._pending[id(w)][1] for w in batch]
        conv = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        return conv, sum(p[1] for p in parts)

    def forget(self, windows: Sequence[Window]) -> None:
        """Release the results of windows that were encoded or dropped."""
        for w in windows:
            self._pending.pop(id(w), None)


def _retrieve(future: asyncio.Future[FrontResult]) -> None:
    # A dropped window's failed front end must not be logged as "never retrieved"; a batch
    # that awaits it still gets the exception.
    if not future.cancelled():
        future.exception()
