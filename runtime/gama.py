"""GamaModel: describe audio in words with an exported GAMA (audio branch + Llama decoder).

A request: 16 kHz mono audio → Kaldi fbank (:mod:`ostinato.runtime.fbank`, 1024 frames =
10.24 s, shorter input padded as upstream, longer input truncated: the caller picks the
window) → audio-branch session → 96 audio embeddings → prepended before the prompt's token
embeddings (BOS included) → decoder session with a KV cache → tokens.

The model object is shared and holds no per-request state; each request's KV cache lives in
its own generator. Sessions are thread-safe; the async API runs them on the model's single
worker thread so the event loop never blocks.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ostinato.runtime._closing import Closing
from ostinato.runtime.audio import resample, to_mono
from ostinato.runtime.errors import InputError, ManifestError, ModelLoadError, ModelNotFoundError
from ostinato.runtime.fbank import SAMPLE_RATE, gama_features
from ostinato.runtime.generate import DecoderSpec, GenerationConfig, generate_tokens
from ostinato.runtime.manifest import Manifest
from ostinato.runtime.session import Session, SessionConfig
from ostinato.runtime.tokenizer import StreamDecoder, Tokenizer

__all__ = ["DEFAULT_INSTRUCTION", "GamaModel"]

logger = logging.getLogger(__name__)

DEFAULT_INSTRUCTION = "Describe the audio."
_REQUIRED_FILES = ("audio", "decoder", "embeddings", "tokenizer")


class GamaModel(Closing):
    """An exported GAMA model directory, ready to describe audio.

    Build with :meth:`from_dir`. Attributes: ``manifest``, ``tokenizer``, ``sample_rate``
    (16000), ``window_samples`` (164080: 1024 fbank frames), ``num_audio_tokens`` (96),
    ``random_init`` (True for random-weight exports: their text is meaningless).
    """

    def __init__(self, directory: Path, manifest: Manifest, config: SessionConfig) -> None:
        self.directory = directory
        self.manifest = manifest
        extra = manifest.extra
        try:
            dec = extra["decoder"]
            self._spec = DecoderSpec(num_layers=int(dec["num_layers"]), kv_heads=int(dec["kv_heads"]),
                                     head_dim=int(dec["head_dim"]), max_positions=int(dec["max_positions"]))
            self._eos_id = int(dec["eos_token_id"])
            self.num_audio_tokens = int(extra["num_audio_tokens"])
            self.window_samples = int(extra["window_samples"])
            self._target_frames = int(extra["target_frames"])
            self._template = str(extra["prompt_template"])
            self._audio_io = (str(extra["audio_input"]), str(extra["audio_output"]))
            defaults = dict(extra.get("generation_defaults", {}))
        except (KeyError, TypeError, ValueError) as e:
            raise ManifestError(f"GAMA manifest in {str(directory)!r} lacks {e}") from e
        missing = [k for k in _REQUIRED_FILES if k not in manifest.files]
        if missing:
            raise ManifestError(f"GAMA manifest lists no file for {missing}")
        self.defaults = GenerationConfig(**{k: v for k, v in defaults.items()
                                            if k in {f.name for f in dataclasses.fields(GenerationConfig)}})
        self.sample_rate = SAMPLE_RATE
        self.random_init = manifest.random_init
        self.tokenizer = Tokenizer.from_file(self._path("tokenizer"))
        self._embeddings = self._load_embeddings()
        self._audio = Session.from_path(self._path("audio"), dataclasses.replace(config, name="gama-audio"))
        try:
            self._decoder = Session.from_path(self._path("decoder"), dataclasses.replace(config, name="gama-decoder"))
        except Exception:
            self._audio.close()
            raise
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        if self.random_init:
            logger.warning("%s: RANDOM WEIGHTS, its descriptions are meaningless", directory)

    @classmethod
    def from_dir(cls, directory: str | Path, provider: str = "auto", intra_op_threads: int | None = None,
                 config: SessionConfig | None = None) -> GamaModel:
        """Load a directory written by ``ostinato export gama``.

        Raises:
            ModelNotFoundError: Directory, manifest or a listed file missing.
            ManifestError: Not a GAMA manifest, or fields missing.
            ModelLoadError: A graph, the embedding table or the tokenizer cannot be loaded.
        """
        directory = Path(directory)
        manifest = Manifest.read(directory)
        if manifest.kind != "gama":
            raise ManifestError(f"{str(directory)!r} holds a {manifest.kind!r} model; expected 'gama'")
        config = config or SessionConfig(provider=provider, intra_op_threads=intra_op_threads or 0)
        return cls(directory, manifest, config)

    def _path(self, key: str) -> Path:
        path = self.directory / self.manifest.files[key]
        if not path.is_file():
            raise ModelNotFoundError(f"{str(path)!r} listed in the manifest does not exist",
                                     hint="the export is incomplete: export it again")
        return path

    def _load_embeddings(self) -> npt.NDArray[np.float32]:
        path = self._path("embeddings")
        try:
            table = np.load(path, mmap_mode="r")
        except (ValueError, OSError) as e:
            raise ModelLoadError(f"cannot read the embedding table {str(path)!r}: {e}") from e
        if table.ndim != 2 or table.shape[1] != self.manifest.hidden_size:
            raise ModelLoadError(f"embedding table {str(path)!r} has shape {table.shape}; "
                                 f"expected [vocab, {self.manifest.hidden_size}]")
        return table  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ pieces
    def features(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int) -> npt.NDArray[np.float32]:
        """Normalised fbank ``[1024, 128]`` of the first 10.24 s (resampled to 16 kHz if needed).

        Raises:
            InputError: Empty, non-finite or wrongly shaped audio, or a bad sample rate.
        """
        x = to_mono(np.asarray(audio))
        if x.size == 0:
            raise InputError("audio is empty; expected at least one sample")
        if not np.isfinite(x).all():
            raise InputError("audio holds NaN/Inf samples")
        if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
            raise InputError(f"sample_rate={sample_rate!r}; expected a positive integer in Hz")
        x = resample(x, int(sample_rate), self.sample_rate)
        if x.size > self.window_samples:
            logger.debug("audio is %d samples; GAMA sees the first %d", x.size, self.window_samples)
        return gama_features(x, self._target_frames)

    def audio_embeds(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int) -> npt.NDArray[np.float32]:
        """Audio embeddings ``[1, 96, H]`` (the audio-branch session)."""
        feats = self.features(audio, sample_rate)[None]
        name_in, name_out = self._audio_io
        out: npt.NDArray[np.float32] = self._audio.run({name_in: feats}, [name_out])[name_out]
        return out

    def prompt_ids(self, instruction: str) -> list[int]:
        """Token ids (with BOS) of GAMA's prompt for ``instruction``."""
        if not isinstance(instruction, str) or not instruction.strip():
            raise InputError(f"prompt={instruction!r}; expected a non-empty instruction")
        return self.tokenizer.encode(self._template.format(instruction=instruction))

    def generation_config(self, overrides: dict[str, Any]) -> GenerationConfig:
        """The model's defaults with the non-``None`` entries of ``overrides`` applied.

        Raises:
            InputError: A setting is out of range.
        """
        try:
            return dataclasses.replace(self.defaults, **{k: v for k, v in overrides.items() if v is not None})
        except ValueError as e:
            raise InputError(str(e), hint="see ostinato describe --help for valid ranges") from e

    def generate_ids(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int,
                     prompt: str = DEFAULT_INSTRUCTION, config: GenerationConfig | None = None) -> Iterator[int]:
        """Yield generated token ids (EOS excluded) for one request."""
        cfg = config or self.defaults
        ids = self.prompt_ids(prompt)
        bad = [i for i in ids if i >= self._embeddings.shape[0]]
        if bad:
            raise InputError(f"prompt ids {bad[:5]} exceed the embedding table ({self._embeddings.shape[0]})")
        audio_embeds = self.audio_embeds(audio, sample_rate)
        prompt_embeds = np.asarray(self._embeddings[np.asarray(ids)], dtype=np.float32)[None]
        prefill = np.concatenate([audio_embeds, prompt_embeds], axis=1)
        return generate_tokens(self._decoder.run, self._spec, prefill, self._embeddings, ids, cfg,
                               stop_ids=(self._eos_id,))

    # ------------------------------------------------------------------ public API
    def describe(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int, prompt: str = DEFAULT_INSTRUCTION,
                 *, max_new_tokens: int | None = None, temperature: float | None = None,
                 top_p: float | None = None, top_k: int | None = None,
                 repetition_penalty: float | None = None, seed: int | None = None) -> str:
        """Describe ``audio`` (the first 10.24 s) in answer to ``prompt``.

        Unset settings take GAMA's defaults (temperature 0.1, top_p 0.95, top_k 50,
        max_new_tokens 400); ``temperature=0`` is greedy.

        Raises:
            InputError: Bad audio, sample rate, prompt or setting.
        """
        cfg = self.generation_config(dict(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                top_k=top_k, repetition_penalty=repetition_penalty, seed=seed))
        return self.tokenizer.decode(list(self.generate_ids(audio, sample_rate, prompt, cfg)))

    async def stream(self, audio: npt.NDArray[np.floating[Any]], sample_rate: int,
                     prompt: str = DEFAULT_INSTRUCTION, **settings: Any) -> AsyncIterator[str]:
        """Async iterator of text pieces as tokens are generated (same settings as :meth:`describe`).

        Every session call runs on the model's worker thread; the loop stays free.
        """
        cfg = self.generation_config(settings)
        loop = asyncio.get_running_loop()
        executor = self._worker()
        tokens = await loop.run_in_executor(executor, self.generate_ids, audio, sample_rate, prompt, cfg)
        decoder = StreamDecoder(self.tokenizer)
        while True:
            token = await loop.run_in_executor(executor, next, tokens, -1)
            if token < 0:  # generated ids are >= 0; -1 marks the end
                break
            if piece := decoder.push(token):
                yield piece
        if tail := decoder.flush():
            yield tail

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="gama")
        return self._executor

    def close(self) -> None:
        """Release sessions and the worker thread. Idempotent."""
        self._audio.close()
        self._decoder.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

