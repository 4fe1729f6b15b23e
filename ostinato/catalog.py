"""The models a running service holds, and their lifecycle.

Each model goes through ``initialize`` (config validated and registered) → ``load`` (ONNX
Runtime session created, off the event loop) → ``unload`` (session released, config kept, can
load again) → ``dispose`` (forgotten). Loading runs in a worker thread, so the service keeps
answering while a large model loads; each loaded model gets one dedicated inference thread
(sessions release the GIL; one thread per session serializes access, as the style guide asks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import enum
import logging
import time
from typing import Any

from ostinato.errors import ModelBusyError, ModelConfigError, ModelUnavailableError
from ostinato.models import ModelConfig

__all__ = ["ModelCatalog", "ModelEntry", "ModelState"]

logger = logging.getLogger(__name__)


class ModelState(enum.StrEnum):
    """Lifecycle state of a catalog entry."""

    INITIALIZED = "initialized"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADED = "unloaded"
    FAILED = "failed"


@dataclasses.dataclass(slots=True, eq=False)
class ModelEntry:
    """One configured model.

    Attributes:
        config: Its validated configuration.
        state: Lifecycle state.
        model: The loaded :class:`~ostinato.runtime.Wav2Vec2Model` (``None`` unless loaded).
        error: Why the last load failed.
        loaded_at_s: Wall-clock time of the last successful load.
        load_s: How long the last load took.
        users: Streams currently using the model.
        executor: The model's dedicated inference thread (while loaded).
    """

    config: ModelConfig
    state: ModelState = ModelState.INITIALIZED
    model: Any = None
    error: str = ""
    loaded_at_s: float = 0.0
    load_s: float = 0.0
    users: int = 0
    executor: concurrent.futures.ThreadPoolExecutor | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    def describe(self) -> dict[str, Any]:
        """JSON description for ``GET /v1/models``."""
        out: dict[str, Any] = {"state": self.state.value, "config": self.config.to_json(), "streams": self.users}
        if self.error:
            out["error"] = self.error
        m = self.model
        if m is not None:
            session = m.session
            out.update(
                providers=list(session.providers),
                provider_fell_back=bool(session.fell_back),
                outputs=list(m.output_names),
                default_output=m.default_output,
                sample_rate=m.sample_rate,
                frame_stride_samples=m.frame_stride_samples,
                random_weights=bool(m.manifest.random_init),
                label=m.manifest.label,
                loaded_at_s=self.loaded_at_s,
                load_s=round(self.load_s, 4),
            )
        return out


class ModelCatalog:
    """Named models of one service.

    Args:
        max_models: Most models configured at once.
    """

    def __init__(self, max_models: int = 4) -> None:
        self.max_models = max_models
        self._entries: dict[str, ModelEntry] = {}
        #: Name of the model streams use when ``hello`` names none.
        self.default_name: str | None = None

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def entries(self) -> list[ModelEntry]:
        """Every entry, in configuration order."""
        return list(self._entries.values())

    def get(self, name: str | None = None) -> ModelEntry:
        """The entry called ``name`` (the default model when ``None``).

        Raises:
            ModelUnavailableError: If there is no such model.
        """
        key = name if name else self.default_name
        entry = self._entries.get(key) if key else None
        if entry is None:
            raise ModelUnavailableError(f"no model named {key!r}; configured: {sorted(self._entries)}")
        return entry

    def loaded(self, name: str | None = None) -> ModelEntry:
        """Like :meth:`get`, but the model must be loaded.

        Raises:
            ModelUnavailableError: If it is missing or not loaded.
        """
        entry = self.get(name)
        if entry.state is not ModelState.LOADED:
            raise ModelUnavailableError(
                f"model {entry.config.name!r} is {entry.state.value}" + (f": {entry.error}" if entry.error else ""),
                hint=f"POST /v1/models/{entry.config.name}/load loads it",
            )
        return entry

    def initialize(self, config: ModelConfig, *, replace: bool = False) -> ModelEntry:
        """Register a config (lifecycle step 1).

        Args:
            config: Validated config.
            replace: Allow replacing an entry of the same name that is not loaded.

        Raises:
            ModelBusyError: If the name is taken by a loaded model, or the catalog is full.
        """
        existing = self._entries.get(config.name)
        if existing is not None:
            if not replace or existing.state in (ModelState.LOADED, ModelState.LOADING):
                raise ModelBusyError(
                    f"model {config.name!r} already exists ({existing.state.value})",
                    hint=f"DELETE /v1/models/{config.name} first, or choose another name",
                )
        elif len(self._entries) >= self.max_models:
            raise ModelBusyError(
                f"{len(self._entries)} models configured; the limit is {self.max_models}",
                hint="DELETE an unused model first",
            )
        entry = ModelEntry(config)
        self._entries[config.name] = entry
        if self.default_name is None:
            self.default_name = config.name
        return entry

    async def load(self, name: str) -> ModelEntry:
        """Create the model's session in a worker thread (lifecycle step 2; idempotent).

        Raises:
            ModelUnavailableError: Unknown name.
            ModelConfigError: The streaming output is not one of the model's outputs.
            SessionError: The model cannot be loaded (missing file, bad provider…); the entry
                is left ``failed`` with the reason.
        """
        entry = self.get(name)
        async with entry.lock:
            if entry.state is ModelState.LOADED:
                return entry
            entry.state, entry.error = ModelState.LOADING, ""
            started = time.perf_counter()
            try:
                model = await asyncio.to_thread(_load_model, entry.config)
            except Exception as e:
                entry.state, entry.error = ModelState.FAILED, str(e)
                raise
            output = entry.config.streaming.output
            if output and output not in model.output_names:
                await asyncio.to_thread(model.close)
                entry.state = ModelState.FAILED
                entry.error = f"streaming.output={output!r} is not an output of this model"
                raise ModelConfigError("streaming.output", f"{output!r}; this model has {list(model.output_names)}")
            entry.model = model
            entry.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"infer-{name}")
            entry.load_s = time.perf_counter() - started
            entry.loaded_at_s = time.time()
            entry.state = ModelState.LOADED
            logger.info("model %s loaded in %.2f s on %s", name, entry.load_s, model.session.providers[0])
            return entry

    async def unload(self, name: str, *, force: bool = False) -> ModelEntry:
        """Release the session, keep the config (lifecycle step 3).

        Raises:
            ModelUnavailableError: Unknown name.
            ModelBusyError: Streams still use it and ``force`` is false.
        """
        entry = self.get(name)
        async with entry.lock:
            if entry.users and not force:
                raise ModelBusyError(f"model {name!r} is used by {entry.users} stream(s)")
            model, executor = entry.model, entry.executor
            entry.model, entry.executor = None, None
            if entry.state is not ModelState.FAILED:
                entry.state = ModelState.UNLOADED
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)
            if model is not None:
                await asyncio.to_thread(model.close)
            return entry

    async def dispose(self, name: str, *, force: bool = False) -> None:
        """Unload and forget the model (lifecycle step 4).

        Raises:
            ModelUnavailableError: Unknown name.
            ModelBusyError: Streams still use it and ``force`` is false.
        """
        await self.unload(name, force=force)
        del self._entries[name]
        if self.default_name == name:
            self.default_name = next(iter(self._entries), None)

    async def close(self) -> None:
        """Unload every model (service shutdown)."""
        for name in list(self._entries):
            await self.unload(name, force=True)


def _load_model(config: ModelConfig) -> Any:
    from ostinato.runtime.registry import load_model

    return load_model(config.model_dir, provider=config.provider, intra_op_threads=config.intra_op_threads or None)
