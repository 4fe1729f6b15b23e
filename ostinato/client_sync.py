"""Blocking wrapper of :class:`ostinato.client.StreamClient` (its own event loop in a thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import numpy.typing as npt

from ostinato.client import StreamClient
from ostinato.stream.wire import Bye, Frame, Ready, Status

__all__ = ["SyncStreamClient"]


class SyncStreamClient:
    """Blocking wrapper of :class:`StreamClient`: runs its own event loop in a thread.

    Same arguments as :class:`StreamClient`. Use as a context manager.
    """

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ostinato-client", daemon=True)
        self._thread.start()
        self._client: StreamClient = self._call(_make_client(url, kwargs))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncStreamClient:
        self.connect()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def client(self) -> StreamClient:
        """The wrapped async client."""
        return self._client

    def connect(self) -> Ready:
        """See :meth:`StreamClient.connect`."""
        return self._call(self._client.connect())  # type: ignore[no-any-return]

    def send_audio(self, samples: npt.ArrayLike) -> None:
        """See :meth:`StreamClient.send_audio`."""
        self._call(self._client.send_audio(samples))

    def flush(self) -> Status:
        """See :meth:`StreamClient.flush`."""
        return self._call(self._client.flush())  # type: ignore[no-any-return]

    def end(self, timeout_s: float = 60.0) -> Bye:
        """See :meth:`StreamClient.end`."""
        return self._call(self._client.end(timeout_s))  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        """See :meth:`StreamClient.events`."""
        return self._client.events()

    def frames(self) -> Iterator[Frame]:
        """Received frames, oldest first, until ``bye``."""
        iterator = self._client.__aiter__()
        while True:
            try:
                yield self._call(iterator.__anext__())
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if self._loop.is_closed():
            return
        self._call(self._client.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()


async def _make_client(url: str, kwargs: dict[str, Any]) -> StreamClient:
    return StreamClient(url, **kwargs)  # created inside the loop thread (asyncio objects bind lazily)
