"""Left-context K/V caches of every live stream, and the gate that keeps their windows in order.

With a model that has ``encoder_cached.onnx`` (``docs/streaming.md``, "Left-context K/V
cache") a window runs only its *new* frames (hop + right context) through the transformer;
their attention reads the per-layer keys/values of the window's left context from the
stream's :class:`~ostinato.runtime.w2v_kv.KVState`, which earlier windows filled with their
core frames. Window ``k + 1`` of a stream needs window ``k``'s keys/values, so
:class:`~ostinato.stream.batching.StreamGate` lets at most one window per stream be in flight (later ones wait, other
streams still batch together).

A window whose past is missing right before its core (the previous window was dropped or
failed) runs with a *shortened* past: none at first (the stream's K/V restarts at its core,
counted in :attr:`KVCache.restarts`), then what the following windows have stored, until the
left context is full again (:attr:`KVCache.windows_short`). It never recomputes its left
context: that would cost 2-6x a normal window exactly when the stage is overloaded (the usual
reason for a drop) and turn one drop into a cascade.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime.w2v_kv import KVConfig, KVState, cached_feeds
from ostinato.stream.batching import StreamGate, collect_gated  # re-exported: the gate is the K/V path's
from ostinato.stream.frames import Window

__all__ = ["KVCache", "StreamGate", "collect_gated", "supports_kv"]


def supports_kv(models: Sequence[Any]) -> bool:
    """Whether every model has the cached encoder (``Wav2Vec2Model.has_cached_encoder``)."""
    return bool(models) and all(getattr(m, "has_cached_encoder", False) for m in models)


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    """One window's part of a cached-encoder run."""

    window: Window  # its core's first frame is the first one run through the transformer
    state: KVState  # the stream's K/V (looked up once per run)
    past_first: int  # first past frame attended to (== window.core_start_frame: none)
    gap: bool  # the stream's K/V do not reach the core: restart them there
    short: bool  # less past than the window's left context (after a gap)


@dataclasses.dataclass(frozen=True, slots=True)
class _Shared:
    """A stream's last run over a window that starts at sample 0 (its left context clipped).

    A stream's first windows all start at sample 0 and see the same samples, so they become ready
    together and, gated, would run one after another. The first one's run covers every later
    one's core (frames ``[first, first + N)``) with exactly the inputs and past that their own
    runs would have, so they take their outputs and keys/values from it and run nothing.
    """

    start_sample: int
    num_samples: int
    output: str
    first: int
    out: npt.NDArray[np.float32]  # [N, H]
    present: npt.NDArray[np.float32]  # [layers, 2, heads, N, head_dim]

    def covers(self, w: Window, output: str) -> bool:
        return (self.start_sample, self.num_samples, self.output) == (w.start_sample, w.num_samples, output) and \
            self.first <= w.core_start_frame and w.core_start_frame + w.core_frames <= self.first + self.out.shape[0]


class KVCache:
    """Per-stream K/V rings and the cached-encoder runs of batches (thread-safe per stream).

    Args:
        config: Ring bound of each stream.
        stride: Samples per frame (320).
    """

    def __init__(self, config: KVConfig, stride: int) -> None:
        self.config = config
        self.stride = stride
        self._states: dict[str, KVState] = {}
        self._shared: dict[str, _Shared] = {}
        self._lock = threading.Lock()
        self.frames_encoded = 0  # frames run through the transformer
        self.windows_short = 0  # windows that attended to less past than their left context
        self.restarts = 0  # pasts restarted after a gap (dropped / failed windows)

    @property
    def streams(self) -> int:
        """Streams with a live K/V ring."""
        return len(self._states)

    @property
    def nbytes(self) -> int:
        """Bytes held by every stream's ring."""
        with self._lock:
            return sum(s.nbytes for s in self._states.values())

    def end_stream(self, stream_id: str) -> None:
        """Forget a stream (call once all of its windows were processed)."""
        with self._lock:
            self._states.pop(stream_id, None)
            self._shared.pop(stream_id, None)

    def encode(
        self, model: Any, batch: Sequence[Window], conv: npt.NDArray[np.float32], output: str, frontend: Any
    ) -> tuple[list[npt.NDArray[np.float32]], int]:
        """Core frames of each window through the cached encoder; store their K/V.

        Args:
            model: A ``Wav2Vec2Model`` with the cached encoder.
            batch: Equal-length windows, at most one per stream.
            conv: The windows' conv frames ``[B, T, C]``.
            output: Output to return.
            frontend: The ``ConvFrameCache`` (context frames before the windows).

        Returns:
            Per window its ``[core_frames, H]`` output, and the frames run through the
            transformer (hop + right context per window; none for a window whose core an
            earlier run over the same samples covered, see :class:`_Shared`).
        """
        layout = model.kv_layout
        rows = [self._plan(model, w) for w in batch]
        out: list[npt.NDArray[np.float32] | None] = [None] * len(batch)
        presents: list[npt.NDArray[np.float32] | None] = [None] * len(batch)
        groups: dict[int, list[int]] = collections.defaultdict(list)
        shared: dict[int, _Shared] = {}
        for i, row in enumerate(rows):
            with self._lock:
                prior = self._shared.get(row.window.stream_id)
            w = row.window
            if prior is not None and not row.gap and prior.covers(w, output):
                a = w.core_start_frame - prior.first
                out[i], presents[i] = prior.out[a : a + w.core_frames], prior.present[:, :, :, a : a + w.core_frames]
                continue
            groups[self._new_frames(w, conv.shape[1])].append(i)
        for idx in groups.values():  # every group runs before anything is stored (retries stay clean)
            ctx = [self._context(layout.context_frames, rows[i], conv[i], frontend) for i in idx]
            pasts = [self._past(rows[i]) for i in idx]
            result = model.encode_cached(cached_feeds(layout, [c for c, _ in ctx], [m for _, m in ctx], pasts), [output])
            for j, i in enumerate(idx):
                w = rows[i].window
                out[i] = np.ascontiguousarray(result[output][j, : w.core_frames], dtype=np.float32)
                presents[i] = result["present_key_values"][:, :, j, :, : w.core_frames]
                if w.start_sample == 0:  # the stream's next windows may see these same samples
                    n = self._new_frames(w, conv.shape[1])
                    shared[i] = _Shared(w.start_sample, w.num_samples, output, w.core_start_frame,
                                        np.array(result[output][j, :n], np.float32),
                                        np.array(result["present_key_values"][:, :, j, :, :n], np.float32))
        for row, present in zip(rows, presents, strict=True):
            self._store(row, present, conv.shape[1])
        with self._lock:
            for i, row in enumerate(rows):
                if i in shared:
                    self._shared[row.window.stream_id] = shared[i]
                elif row.window.start_sample != 0:
                    self._shared.pop(row.window.stream_id, None)  # past the stream's start: nothing to share
        encoded = sum(self._new_frames(rows[i].window, conv.shape[1]) for idx in groups.values() for i in idx)
        with self._lock:
            self.frames_encoded += encoded
        return [o for o in out if o is not None], encoded

    def _plan(self, model: Any, w: Window) -> _Row:
        core = w.core_start_frame
        state = self._state(model, w.stream_id)
        wanted = max(w.start_sample // self.stride, core - self.config.max_past_frames)
        gap = state.next_frame != core
        past_first = core if gap else max(wanted, state.first_frame)
        return _Row(w, state, past_first, gap, past_first > wanted)

    def _new_frames(self, w: Window, total: int) -> int:
        """Frames of ``w`` run through the transformer: its core and right context."""
        return total - (w.core_start_frame - w.start_sample // self.stride)

    def _past(self, row: _Row) -> tuple[npt.NDArray[np.float32], ...]:
        core = row.window.core_start_frame
        return () if row.past_first == core else row.state.past_parts(row.past_first, core)

    def _context(
        self, p: int, row: _Row, conv: npt.NDArray[np.float32], frontend: Any
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """``[P + N, C]`` conv frames (context, then new) and the context's 1/0 mask."""
        first, core = row.window.start_sample // self.stride, row.window.core_start_frame
        lo = core - p
        ctx, mask = frontend.available(row.window.stream_id, lo, core)
        if ctx.shape[1] != conv.shape[1]:
            ctx = np.zeros((p, conv.shape[1]), np.float32)
        inside = max(lo, first)  # context frames inside the window: take the window's own
        ctx[inside - lo :] = conv[inside - first : core - first]
        mask[inside - lo :] = 1.0
        return np.concatenate([ctx, conv[core - first :]]), mask

    def _store(self, row: _Row, present: npt.NDArray[np.float32] | None, total: int) -> None:
        if present is None:
            return
        state = row.state
        restarted = state.restart(row.window.core_start_frame) if row.gap else False
        with self._lock:  # counted once the batch ran (a retried batch plans again)
            self.windows_short += row.short
            self.restarts += restarted
        # Room for a whole window: the end-of-stream window reaches further back than the others.
        state.store(row.window.core_start_frame, present, total)

    def _state(self, model: Any, stream_id: str) -> KVState:
        with self._lock:
            state = self._states.get(stream_id)
            if state is None:
                state = model.new_kv_state(self.config)
                self._states[stream_id] = state
            return state
