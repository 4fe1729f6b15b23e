"""Wav2Vec2 on ONNX Runtime: features with exact frame times, batched windows, CTC decoding.

The exported graph takes raw 16 kHz float32 audio ``input_values [B, N]``. Models whose
feature extractor normalises each input (``do_normalize``) expect zero-mean, unit-variance
audio; the graph does not contain that step, so :class:`Wav2Vec2Model` applies it per row,
as ``Wav2Vec2FeatureExtractor`` does per utterance.

Exports that also hold the split pair (``frontend.onnx`` + ``encoder.onnx``) offer
:meth:`Wav2Vec2Model.frontend` (audio → conv frames, with the normalisation statistics given
by the caller, :mod:`ostinato.runtime.w2v_frontend`) and :meth:`Wav2Vec2Model.encode` (conv
frames → outputs): ``encode(frontend(x))`` equals ``run_batch(x)`` when the statistics are
measured over ``x``. Older model directories have no split; :attr:`has_split` says which.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime._closing import Closing
from ostinato.runtime.errors import InputError, ManifestError, SessionError
from ostinato.runtime.features import Features, frame_starts, num_frames
from ostinato.runtime.manifest import Manifest
from ostinato.runtime.session import Session, SessionConfig
from ostinato.runtime.w2v_ctc import ctc_greedy_decode as ctc_greedy_decode  # re-exported
from ostinato.runtime.w2v_ctc import read_vocab
from ostinato.runtime.w2v_frontend import NORM_EPS, FrontEndConfig, FrontEndState, FrontEndStats, window_stats
from ostinato.runtime.w2v_kv import KVConfig, KVLayout, KVState

__all__ = ["Wav2Vec2Model", "DEFAULT_MAX_WINDOW_S", "DEFAULT_CONTEXT_S"]

logger = logging.getLogger(__name__)

# One pass over at most 30 s keeps attention memory modest (1,500 frames); longer inputs are
# cut into windows with this much context each side (ANCHORS.md: 2–3 s of context gives a
# per-frame cosine ≥ 0.999 against whole-input processing).
DEFAULT_MAX_WINDOW_S = 30.0
DEFAULT_CONTEXT_S = 2.0


class Wav2Vec2Model(Closing):
    """An exported Wav2Vec2 encoder (features or CTC). Stateless and shareable across streams.

    Build with :meth:`from_dir`. ``run_batch`` and ``features`` are thread-safe.
    """

    def __init__(self, directory: Path, manifest: Manifest, config: SessionConfig) -> None:
        if manifest.kind != "wav2vec2":
            raise ManifestError(f"{str(directory)!r} holds a {manifest.kind!r} model, not wav2vec2")
        self.directory = directory
        self.manifest = manifest
        self.config = config
        self.sample_rate = manifest.sample_rate
        self.frame_stride_samples = manifest.frame_stride_samples
        self.receptive_field_samples = manifest.receptive_field_samples
        self.output_names: tuple[str, ...] = tuple(o.name for o in manifest.outputs)
        if not self.output_names:
            raise ManifestError(f"manifest in {str(directory)!r} lists no outputs")
        self.default_output = next(
            (n for n in ("last_hidden_state", "logits") if n in self.output_names), self.output_names[0]
        )
        self._session: Session | None = None
        self._roles: dict[str, Session] = {}  # frontend / encoder / encoder_cached, loaded on demand
        self._unloaded = False
        self._lock = threading.Lock()
        self._vocab: list[str] | None = None
        self.load()

    @classmethod
    def from_dir(
        cls,
        directory: str | Path,
        provider: str = "auto",
        intra_op_threads: int | None = None,
        config: SessionConfig | None = None,
    ) -> Wav2Vec2Model:
        """Load an exported model directory (``ostinato.json`` + ``model.onnx``).

        Args:
            directory: Directory written by ``ostinato export wav2vec2``.
            provider: ``auto``, ``cpu``, ``cuda`` or ``tensorrt``.
            intra_op_threads: Threads per operator (default: ONNX Runtime's choice).
            config: Full session config; overrides ``provider``/``intra_op_threads``.

        Raises:
            ModelNotFoundError, ManifestError, ModelLoadError, ProviderUnavailableError.
        """
        directory = Path(directory)
        manifest = Manifest.read(directory)
        if config is None:
            config = SessionConfig(
                provider=provider,
                intra_op_threads=intra_op_threads or 0,
                name=f"wav2vec2-{manifest.precision}",
            )
        return cls(directory, manifest, config)

    # -- lifecycle -------------------------------------------------------------------------
    def load(self) -> None:
        """Create the ONNX Runtime sessions (done by the constructor; idempotent).

        Split exports load ``frontend.onnx`` and the encoder the live pipeline runs
        (``encoder_cached.onnx`` where the export has it, else ``encoder.onnx``); the other
        graphs load on first use (``model.onnx`` on the first :meth:`run_batch`, ``encoder.onnx``
        on the first :meth:`encode`), so a streaming process holds the weights once. Older
        exports load ``model.onnx``.
        """
        with self._lock:
            self._unloaded = False
            if self._session is not None or self._roles:
                return
            if self.manifest.random_init:
                logger.info("%s uses RANDOM weights (not trained)", self.directory)
        if self.has_split:
            try:
                self._role("frontend")
                self._role(self._main_role)
            except BaseException:  # the front end loaded, the encoder did not
                self.unload()
                raise
        else:
            self._whole_session()

    def unload(self) -> None:
        """Release the sessions; :meth:`load` brings them back."""
        with self._lock:
            self._unloaded = True
            if self._session is not None:
                self._session.close()
                self._session = None
            for session in self._roles.values():
                session.close()
            self._roles = {}

    close = unload

    @property
    def loaded(self) -> bool:
        """Whether the model is loaded (not :meth:`unload`-ed)."""
        return not self._unloaded and (self._session is not None or bool(self._roles))

    @property
    def loaded_graphs(self) -> tuple[str, ...]:
        """Roles (``files`` keys) whose sessions are loaded now, e.g. ``("frontend", "encoder_cached")``."""
        return (*(("model",) if self._session is not None else ()), *sorted(self._roles))

    @property
    def session(self) -> Session:
        """The main loaded session (``model.onnx``'s, or the streaming encoder's for a split export
        that has not run :meth:`run_batch`): its providers and fallback are the model's.

        Raises:
            SessionError: After :meth:`unload`.
        """
        self._check_loaded()
        session = self._session or self._roles.get(self._main_role)
        return session if session is not None else self._whole_session()

    def _check_loaded(self) -> None:
        if self._unloaded:
            raise SessionError(f"model {str(self.directory)!r} is unloaded", hint="call load() before running it")

    def _whole_session(self) -> Session:
        """``model.onnx``'s session, created on first use."""
        self._check_loaded()
        with self._lock:
            if self._session is None:
                self._session = Session.from_path(self.directory / self.manifest.files["model"], self.config)
            return self._session


    def __del__(self) -> None:
        if getattr(self, "_session", None) is not None or getattr(self, "_roles", None):
            warnings.warn(
                f"Wav2Vec2Model {str(self.directory)!r} was not closed",
                ResourceWarning,
                stacklevel=2,
            )
            self.unload()

    # -- inference -------------------------------------------------------------------------
    def num_frames(self, n_samples: int) -> int:
        """Frames produced for ``n_samples`` of audio: ``floor((n-400)/320)+1`` (0 if short)."""
        return num_frames(n_samples, self.receptive_field_samples, self.frame_stride_samples)

    def run_batch(
        self, windows: npt.NDArray[np.float32], outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Run equal-length windows through the encoder.

        Args:
            windows: ``[B, N]`` float32 audio at :attr:`sample_rate`, ``N >= 400``.
            outputs: Output names to compute (default: all).

        Returns:
            Output name → ``[B, T, H]`` float32 with ``T = num_frames(N)``.

        Raises:
            InputError: Wrong dtype, rank, too short, or non-finite samples.
        """
        x = self._check_windows(windows)
        if self.manifest.normalize_input:
            x = _normalize_rows(x)
        return self._whole_session().run({"input_values": x}, self._output_list(outputs))

    def features(
        self,
        audio: npt.NDArray[np.floating[Any]],
        sample_rate: int,
        output: str | None = None,
        max_window_s: float = DEFAULT_MAX_WINDOW_S,
        context_s: float = DEFAULT_CONTEXT_S,
        progress: Callable[[str, float, float], None] | None = None,
    ) -> Features:
        """Frame features of a whole input, with exact frame start samples.

        Inputs up to ``max_window_s`` run in one pass; longer ones in windows with
        ``context_s`` of context on each side, stitched so that frame ``i`` always covers
        samples ``[320 i, 320 i + 400)``. ``progress(step, done, total)`` is called per window.

        Raises:
            InputError: Wrong sample rate, not 1-D, non-finite, or shorter than 400 samples.
        """
        x = self._check_audio(audio, sample_rate)
        name = output or self.default_output
        if name not in self.output_names:
            raise InputError(f"output={name!r}; this model has {list(self.output_names)}")
        total = self.num_frames(len(x))
        max_samples = int(max_window_s * self.sample_rate)
        if len(x) <= max_samples:
            frames = self.run_batch(x[None, :], [name])[name][0, :total]
        else:
            frames = self._features_windowed(x, name, max_samples, context_s, progress)
        return Features(
            frames=np.ascontiguousarray(frames, dtype=np.float32),
            start_samples=frame_starts(0, total, self.frame_stride_samples),
            sample_rate=self.sample_rate,
            output=name,
        )

    def features_batch(
        self, audios: Sequence[npt.NDArray[np.floating[Any]]], sample_rate: int, output: str | None = None
    ) -> list[Features]:
        """Features of several inputs; inputs of equal length share one batched run.

        Unequal inputs are not zero-padded together, because padding changes the
        normalisation statistics of Wav2Vec2 models and so the features.
        """
        checked = [self._check_audio(a, sample_rate) for a in audios]
        name = output or self.default_output
        results: list[Features | None] = [None] * len(checked)
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(checked):
            by_length.setdefault(len(x), []).append(i)
        for length, idx in by_length.items():
            out = self.run_batch(np.stack([checked[i] for i in idx]), [name])[name]
            total = self.num_frames(length)
            for row, i in enumerate(idx):
                results[i] = Features(
                    np.ascontiguousarray(out[row, :total]),
                    frame_starts(0, total, self.frame_stride_samples),
                    self.sample_rate,
                    name,
                )
        return [r for r in results if r is not None]

    def _features_windowed(
        self,
        x: npt.NDArray[np.float32],
        name: str,
        max_samples: int,
        context_s: float,
        progress: Callable[[str, float, float], None] | None,
    ) -> npt.NDArray[np.float32]:
        stride, field = self.frame_stride_samples, self.receptive_field_samples
        total = self.num_frames(len(x))
        context = int(round(context_s * self.sample_rate / stride))
        core = self.num_frames(max_samples) - 2 * context
        if core < 1:
            raise ValueError(f"context_s={context_s} leaves no core frames in max_window_s")
        pieces = []
        for c0 in range(0, total, core):
            c1 = min(c0 + core, total)
            a = max(0, c0 - context)
            end = min(len(x), stride * (c1 + context - 1) + field)
            out = self.run_batch(x[None, stride * a : end], [name])[name][0]
            pieces.append(out[c0 - a : c1 - a])
            if progress is not None:
                progress("encoding", c1, total)
        return np.concatenate(pieces, axis=0)

    # -- split graph (front end + encoder) -------------------------------------------------
    @property
    def has_split(self) -> bool:
        """Whether the directory holds ``frontend.onnx`` + ``encoder.onnx`` (newer exports)."""
        return "frontend" in self.manifest.files and "encoder" in self.manifest.files

    @property
    def patch_geometry(self) -> tuple[int, int] | None:
        """``(kernel, stride)`` of conv layer 0 whose patch statistics the front end takes (group models)."""
        split = self.manifest.extra.get("split") or {}
        kernel, stride = split.get("patch_kernel"), split.get("patch_stride")
        return (int(kernel), int(stride)) if kernel and stride else None

    @property
    def conv_dim(self) -> int:
        """Width of a conv frame (``frontend`` output, ``encode`` input)."""
        return int((self.manifest.extra.get("split") or {}).get("conv_dim", 512))

    def frontend_stats(self, windows: npt.NDArray[np.float32]) -> FrontEndStats:
        """Normalisation statistics of each row on its own (what ``run_batch`` uses)."""
        x = self._check_windows(windows)
        return window_stats(x, self.manifest.normalize_input, self.patch_geometry)

    def new_frontend_state(self, config: FrontEndConfig | None = None) -> FrontEndState:
        """Per-stream running statistics + conv-frame cache for :meth:`frontend`/:meth:`encode`."""
        return FrontEndState(
            config or FrontEndConfig(),
            self.manifest.normalize_input,
            self.patch_geometry,
            self.conv_dim,
            self.frame_stride_samples,
            self.sample_rate,
            self.receptive_field_samples,
        )

    def frontend(
        self, windows: npt.NDArray[np.float32], stats: FrontEndStats | None = None
    ) -> npt.NDArray[np.float32]:
        """Raw audio → conv frames ``[B, T, conv_dim]`` (``T = num_frames(N)``).

        Args:
            windows: ``[B, N]`` float32 raw audio (not normalised), ``N >= 400``.
            stats: Normalisation statistics, one row per window (``None``: each row's own,
                which reproduces :meth:`run_batch`).

        Raises:
            ManifestError: The model directory has no split (re-export it).
            InputError: Bad audio, or ``stats`` rows differ from the batch.
        """
        x = self._check_windows(windows)
        stats = stats if stats is not None else window_stats(x, self.manifest.normalize_input, self.patch_geometry)
        if stats.rows != x.shape[0]:
            raise InputError(f"stats have {stats.rows} row(s) for a batch of {x.shape[0]}")
        front = self._role("frontend")
        conv: npt.NDArray[np.float32] = front.run({"input_values": x, **stats.feeds()}, ["conv_features"])["conv_features"]
        return conv

    def encode(
        self, conv_features: npt.NDArray[np.float32], outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Conv frames ``[B, T, conv_dim]`` → outputs ``[B, T, H]`` (as :meth:`run_batch`).

        Raises:
            ManifestError: The model directory has no split.
            InputError: Wrong shape/dtype or unknown output names.
        """
        if conv_features.dtype != np.float32 or conv_features.ndim != 3 or conv_features.shape[2] != self.conv_dim:
            raise InputError(
                f"conv_features {conv_features.dtype} {conv_features.shape}; expected float32 [B, T, {self.conv_dim}]"
            )
        names = self._output_list(outputs)
        enc = self._role("encoder")
        out: dict[str, npt.NDArray[np.float32]] = enc.run({"conv_features": conv_features}, names)
        return out

    # -- cached encoder (transformer over new frames with a K/V past) ---------------------
    @property
    def has_cached_encoder(self) -> bool:
        """Whether the directory holds ``encoder_cached.onnx`` (with the split pair)."""
        return self.has_split and "encoder_cached" in self.manifest.files

    @property
    def kv_layout(self) -> KVLayout:
        """Shape of the cached encoder's K/V past (``ostinato.runtime.w2v_kv``)."""
        info = self.manifest.extra.get("cached_encoder") or {}
        keys = ("num_layers", "num_heads", "head_dim", "context_frames")
        if not self.has_cached_encoder or any(k not in info for k in keys):
            raise ManifestError(
                f"{str(self.directory)!r} has no cached encoder", hint="re-export the model with this ostinato"
            )
        return KVLayout(*(int(info[k]) for k in keys))

    def new_kv_state(self, config: KVConfig | None = None) -> KVState:
        """Per-stream K/V ring for :meth:`encode_cached`."""
        return KVState(self.kv_layout, config or KVConfig())

    def encode_cached(
        self, feeds: dict[str, npt.NDArray[np.float32]], outputs: Sequence[str] | None = None
    ) -> dict[str, npt.NDArray[np.float32]]:
        """Run ``encoder_cached.onnx`` (feeds from :func:`ostinato.runtime.w2v_kv.cached_feeds`).

        Returns:
            The requested outputs ``[B, N, H]`` for the new frames and ``present_key_values``.
        """
        names = [*self._output_list(outputs), "present_key_values"]
        if not self.has_cached_encoder:
            raise ManifestError(f"{str(self.directory)!r} has no cached encoder", hint="re-export the model with this ostinato")
        out: dict[str, npt.NDArray[np.float32]] = self._role("encoder_cached").run(feeds, names)
        return out

    @property
    def _main_role(self) -> str:
        return "encoder_cached" if self.has_cached_encoder else "encoder"

    def _role(self, role: str) -> Session:
        """The session of one split graph, created on first use."""
        session = self._roles.get(role)
        if session is not None:
            return session
        if not self.has_split:
            raise ManifestError(
                f"{str(self.directory)!r} has no frontend.onnx/encoder.onnx (exported before the split)",
                hint="re-export the model with this ostinato (ostinato export wav2vec2 ...) or use run_batch",
            )
        self._check_loaded()
        with self._lock:
            if role not in self._roles:
                config = dataclasses.replace(self.config, name=f"{self.config.name}-{role}")
                self._roles[role] = Session.from_path(self.directory / self.manifest.files[role], config)
            return self._roles[role]

    def transcribe(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int) -> str:
        """Greedy CTC transcription (``task = ctc`` models only)."""
        if self.manifest.task != "ctc":
            raise InputError(
                f"{str(self.directory)!r} is a {self.manifest.task!r} model; transcribe needs ctc",
                hint="export with ostinato export wav2vec2 --task ctc",
            )
        logits = self.features(audio, sample_rate, output="logits").frames
        return ctc_greedy_decode(
            logits.argmax(axis=-1),
            self._load_vocab(),
            blank_id=int(self.manifest.extra.get("blank_id", 0)),
            word_delimiter=str(self.manifest.extra.get("word_delimiter_token", "|")),
        )

    def _load_vocab(self) -> list[str]:
        if self._vocab is None:
            self._vocab = read_vocab(self.directory, self.manifest.files.get("vocab"))
        return self._vocab

    # -- validation ------------------------------------------------------------------------
    def _check_audio(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int) -> npt.NDArray[np.float32]:
        if sample_rate != self.sample_rate:
            raise InputError(
                f"sample_rate={sample_rate}; this model takes {self.sample_rate} Hz",
                hint="resample first (ostinato features resamples files automatically)",
            )
        x = np.asarray(audio)
        if x.ndim != 1:
            raise InputError(f"audio has shape {x.shape}; expected 1-D mono samples")
        row: npt.NDArray[np.float32] = self._check_windows(x.astype(np.float32, copy=False)[None, :])[0]
        return row

    def _output_list(self, outputs: Sequence[str] | None) -> list[str]:
        """``outputs`` as a list (default: all); raises :class:`InputError` for unknown names."""
        names = list(outputs) if outputs is not None else list(self.output_names)
        unknown = sorted(set(names) - set(self.output_names))
        if unknown:
            raise InputError(f"outputs {unknown} not in this model; it has {list(self.output_names)}")
        return names

    def _check_windows(self, windows: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
        if not isinstance(windows, np.ndarray) or windows.dtype != np.float32:
            dtype = getattr(windows, "dtype", type(windows).__name__)
            raise InputError(f"windows have dtype {dtype}; expected float32")
        if windows.ndim != 2:
            raise InputError(f"windows have shape {windows.shape}; expected [batch, samples]")
        if windows.shape[1] < self.receptive_field_samples:
            raise InputError(
                f"{windows.shape[1]} samples is shorter than one frame "
                f"({self.receptive_field_samples} samples)"
            )
        if not np.isfinite(windows).all():
            bad = int((~np.isfinite(windows)).sum())
            raise InputError(f"audio holds {bad} NaN/Inf samples", hint="drop or repair them")
        return windows


def _normalize_rows(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    normed: npt.NDArray[np.float32] = ((x - mean) / np.sqrt(var + NORM_EPS)).astype(np.float32)
    return normed
