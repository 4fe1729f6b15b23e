"""``ostinato export gama``: GAMA → audio-branch ONNX + decoder ONNX + embeddings + tokenizer.

Steps: estimate peak memory and refuse early (:class:`MemoryBudgetError`); build the PyTorch
reference (a release via :func:`~ostinato.export.gama_loader.load_gama`, or random weights
for tests/benchmarks, labelled random everywhere); export both graphs; quantize; validate
every unit against PyTorch (:mod:`ostinato.export.gama_check`); write ``ostinato.json``.
The directory appears only when everything passed (written next to it, then renamed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gc
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ostinato.export.errors import CheckpointMismatchError, ExportOptionError, MemoryBudgetError
from ostinato.export.gama_loader import load_gama, read_llama_config
from ostinato.export.gama_model import PROMPT_TEMPLATE, GamaConfig, GamaReference, preset_config
from ostinato.export.gama_onnx import (
    AUDIO_INPUT,
    AUDIO_OUTPUT,
    export_audio_branch,
    export_decoder,
    optimize_audio_graph,
    quantize_audio_int8,
    quantize_decoder_nbits,
)
from ostinato.export.gama_tokenizer import TOKENIZER_FILE, write_tokenizer
from ostinato.runtime import fbank as _fbank
from ostinato.runtime.manifest import Manifest, sha256_file

__all__ = [
    "DEFAULT_INSTRUCTION",
    "GamaExportConfig",
    "MemoryEstimate",
    "estimate_export_memory",
    "export_gama",
    "random_reference",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]
DEFAULT_INSTRUCTION = "Describe the audio."
PRECISIONS = {"fp32": ("fp32", "fp32"), "int8": ("int8", "int8"), "int4": ("int8", "int4")}
_RANDOM_VOCAB = {"tiny": 400, "1b": 32000, "full": 32000}
_OVERHEAD_BYTES = 1_500_000_000


@dataclasses.dataclass(frozen=True, slots=True)
class GamaExportConfig:
    """What to export.

    Args:
        out_dir: Directory to create (refused if it exists and is not empty, unless ``overwrite``).
        base_dir: Release base folder (``Llama-2-7b-chat-hf-qformer``); with ``checkpoint``.
        checkpoint: Stage checkpoint ``pytorch_model.bin``.
        random_init: Random weights instead of a release (tests, benchmarks).
        config: Random-init size: ``tiny``, ``1b`` or ``full``.
        precision: ``fp32`` (both graphs), ``int8`` (audio int8, decoder 8-bit weights) or
            ``int4`` (audio int8, decoder 4-bit weights, the CPU default for 7B).
        seed: Seed of random weights and validation inputs.
        validate: Compare every unit with PyTorch (on by default).
        greedy_tokens: Tokens of the greedy-generation equality check.
        opset: ONNX opset.
        overwrite: Replace an existing ``out_dir``.
        check_memory: Refuse when the estimated peak exceeds available memory.
    """

    out_dir: Path
    base_dir: Path | None = None
    checkpoint: Path | None = None
    random_init: bool = False
    config: str = "full"
    precision: str = "int4"
    seed: int = 0
    validate: bool = True
    greedy_tokens: int = 12
    opset: int = 17
    overwrite: bool = False
    check_memory: bool = True

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ExportOptionError(f"precision={self.precision!r}; expected one of {tuple(PRECISIONS)}")
        if self.config not in _RANDOM_VOCAB:
            raise ExportOptionError(f"config={self.config!r}; expected one of {tuple(_RANDOM_VOCAB)}")
        if self.random_init == (self.base_dir is not None or self.checkpoint is not None):
            raise ExportOptionError(
                "pass either --random-init or both --base and --checkpoint",
                hint="ostinato export gama --base DIR --checkpoint FILE --out DIR, or --random-init --config tiny")
        if not self.random_init and (self.base_dir is None or self.checkpoint is None):
            raise ExportOptionError("--base and --checkpoint go together")
        if self.greedy_tokens < 1:
            raise ExportOptionError(f"greedy_tokens={self.greedy_tokens}; expected >= 1")

    @property
    def source(self) -> str:
        """Label of the weights' origin."""
        return f"random:{self.config}" if self.random_init else f"{self.base_dir} + {self.checkpoint}"


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Peak memory of an export, and what the machine has."""

    parameters: int
    peak_bytes: int
    available_bytes: int | None

    @property
    def fits(self) -> bool:
        """Whether the export should fit (unknown availability counts as fitting)."""
        return self.available_bytes is None or self.peak_bytes <= self.available_bytes

    def describe(self) -> str:
        """One line for users."""
        avail = "unknown" if self.available_bytes is None else f"{self.available_bytes / 2**30:.1f} GiB"
        count = f"{self.parameters / 1e9:.2f}B" if self.parameters >= 1e9 else f"{self.parameters / 1e6:.1f}M"
        return (f"{count} parameters; estimated peak memory "
                f"{self.peak_bytes / 2**30:.1f} GiB, available {avail}")


def _count_parameters(cfg: GamaConfig) -> tuple[int, int]:
    with torch.device("meta"):
        ref = GamaReference(cfg)
    audio = sum(p.numel() for p in ref.model.parameters())
    llm = sum(p.numel() for p in ref.llm.parameters())
    return audio, llm


def _mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def estimate_export_memory(config: GamaExportConfig, cfg: GamaConfig | None = None) -> MemoryEstimate:
    """Estimate the export's peak resident memory.

    The fp32 PyTorch model stays resident; while one graph is exported the TorchScript
    exporter holds a second fp32 copy in its protobuf and re-saving it as external data reads
    it once more; ONNX Runtime validation and quantization hold about one more copy.
    """
    cfg = cfg or _model_config(config)
    audio, llm = _count_parameters(cfg)
    peak = 4 * (audio + llm) + 4 * 2 * max(audio, llm) + _OVERHEAD_BYTES
    return MemoryEstimate(parameters=audio + llm, peak_bytes=peak, available_bytes=_mem_available_bytes())


def _model_config(config: GamaExportConfig) -> GamaConfig:
    if config.random_init:
        return preset_config(config.config, vocab_size=_RANDOM_VOCAB[config.config])
    return GamaConfig(audio=preset_config("full").audio, llama=read_llama_config(Path(str(config.base_dir))))


def random_reference(cfg: GamaConfig, seed: int) -> GamaReference:
    """A GAMA reference with random weights (the zero-initialised embeddings drawn too)."""
    torch.manual_seed(seed)
    ref = GamaReference(cfg)
    with torch.no_grad():
        for p in (ref.model.audio_encoder.pos_embed_a, ref.model.audio_encoder.modality_a,
                  ref.model.query_tokens):
            p.normal_(0.0, 0.02)
    return ref.eval()


def export_gama(config: GamaExportConfig, progress: Progress | None = None) -> Manifest:
    """Export GAMA and return the manifest written beside the files.

    Raises:
        MemoryBudgetError: The estimated peak exceeds available memory.
        ExportOptionError: ``out_dir`` exists and is not empty (without ``overwrite``).
        SourceModelError, CheckpointMismatchError: The release cannot be loaded.
        ToleranceError, ShapeMismatchError: ONNX Runtime disagrees with PyTorch.
    """
    report = progress or (lambda step, done, total: None)
    out_dir = Path(config.out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not config.overwrite:
        raise ExportOptionError(f"{str(out_dir)!r} exists and is not empty", hint="pass --overwrite or another --out")
    estimate = estimate_export_memory(config)
    logger.info("GAMA export: %s", estimate.describe())
    if config.check_memory and not estimate.fits:
        raise MemoryBudgetError(
            f"this export needs about {estimate.peak_bytes / 2**30:.1f} GiB but "
            f"{(estimate.available_bytes or 0) / 2**30:.1f} GiB are available ({estimate.describe()})",
            hint="export on a machine with more memory (docs/gama.md: 7B needs ~80 GiB for an fp32 "
                 "export), or close other programs; --no-memory-check overrides at your own risk")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        manifest = _export_into(tmp, config, estimate, report)
        _apply_umask(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.replace(out_dir)
        return manifest
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _apply_umask(directory: Path) -> None:
    """mkdtemp (and ORT's external-data writer) create private modes; give the export the
    modes a plain ``mkdir``/``open`` would have, so other users can read the model."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for path in directory.iterdir():
        path.chmod(0o666 & ~umask)


def _build_reference(config: GamaExportConfig, report: Progress) -> tuple[GamaReference, dict[str, Any]]:
    report("build model", 0, 1)
    if config.random_init:
        ref = random_reference(preset_config(config.config, vocab_size=_RANDOM_VOCAB[config.config]), config.seed)
        info: dict[str, Any] = {"random_init": True}
    else:
        ref, load_report = load_gama(Path(config.base_dir), Path(config.checkpoint), progress=report)
        info = {"random_init": False, "load_report": load_report.summary().splitlines()}
    report("build model", 1, 1)
    return ref, info


def _export_into(tmp: Path, config: GamaExportConfig, estimate: MemoryEstimate, report: Progress) -> Manifest:
    from ostinato.export import gama_check

    ref, info = _build_reference(config, report)
    audio_precision, decoder_precision = PRECISIONS[config.precision]
    fp32_dir = tmp / "_fp32"
    fp32_dir.mkdir()
    steps = ("audio branch", "decoder", "quantize", "validate")
    report("export", 0, len(steps))
    export_audio_branch(ref.model, fp32_dir / "audio_branch.onnx", config.opset)
    report("export", 1, len(steps))
    export_decoder(ref.llm, fp32_dir / "decoder.onnx", config.opset)
    report("export", 2, len(steps))
    _place_graphs(fp32_dir, tmp, audio_precision, decoder_precision)
    report("export", 3, len(steps))
    embeddings = ref.llm.get_input_embeddings().weight.detach().numpy().astype(np.float32)
    np.save(tmp / "embed_tokens.npy", embeddings)
    source_dir = None if config.random_init else Path(config.base_dir)
    tokenizer = write_tokenizer(tmp, source_dir=source_dir,
                                vocab_size=embeddings.shape[0] if config.random_init else None)
    _check_tokenizer(tokenizer, embeddings.shape[0])
    validation: dict[str, Any] = {"validated": False}
    if config.validate:
        validation = gama_check.validate_export(ref, tmp, fp32_dir, audio_precision, decoder_precision,
                                                config.seed, config.greedy_tokens)
    shutil.rmtree(fp32_dir)
    report("export", 4, len(steps))
    manifest = _build_manifest(tmp, config, ref.cfg, estimate, validation, info)
    manifest.write(tmp)
    del ref
    gc.collect()
    return manifest


def _check_tokenizer(path: Path, vocab_size: int) -> None:
    from ostinato.runtime.tokenizer import Tokenizer

    pieces = Tokenizer.from_file(path).vocab_size
    if pieces > vocab_size:
        raise CheckpointMismatchError(
            f"the tokenizer has {pieces} pieces but the model's vocabulary is {vocab_size}",
            hint="the base folder's tokenizer does not belong to its weights")


def _place_graphs(fp32_dir: Path, tmp: Path, audio_precision: str, decoder_precision: str) -> None:
    quant_logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    if audio_precision == "int8":
        quantize_audio_int8(fp32_dir / "audio_branch.onnx", tmp / "audio_branch.onnx")
    else:
        optimize_audio_graph(fp32_dir / "audio_branch.onnx", tmp / "audio_branch.onnx")
    if decoder_precision == "fp32":
        _copy_graph(fp32_dir / "decoder.onnx", tmp / "decoder.onnx")
        return
    level = quant_logger.level
    quant_logger.setLevel(logging.WARNING)  # it logs every node at INFO
    try:
        quantize_decoder_nbits(fp32_dir / "decoder.onnx", tmp / "decoder.onnx", bits=int(decoder_precision[3:]))
    finally:
        quant_logger.setLevel(level)


def _copy_graph(src: Path, dst: Path) -> None:
    shutil.copyfile(src, dst)
    data = src.with_name(src.name + ".data")
    if data.is_file():
        shutil.copyfile(data, dst.with_name(dst.name + ".data"))


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for pkg in ("ostinato", "torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            continue
    return out


def _build_manifest(tmp: Path, config: GamaExportConfig, cfg: GamaConfig, estimate: MemoryEstimate,
                    validation: dict[str, Any], info: dict[str, Any]) -> Manifest:
    files = {"audio": "audio_branch.onnx", "decoder": "decoder.onnx", "embeddings": "embed_tokens.npy",
             "tokenizer": TOKENIZER_FILE}
    for key, name in (("audio_data", "audio_branch.onnx.data"), ("decoder_data", "decoder.onnx.data")):
        if (tmp / name).is_file():
            files[key] = name
    llama = cfg.llama
    head_dim = int(llama.get("head_dim") or llama["hidden_size"] // llama["num_attention_heads"])
    audio_precision, decoder_precision = PRECISIONS[config.precision]
    extra = {
        "audio_input": AUDIO_INPUT, "audio_output": AUDIO_OUTPUT,
        "num_audio_tokens": cfg.audio.num_audio_tokens, "target_frames": cfg.audio.target_frames,
        "num_mel_bins": cfg.audio.num_mel_bins, "fbank_mean": _fbank.FBANK_MEAN, "fbank_std": _fbank.FBANK_STD,
        # Samples that fill exactly target_frames Kaldi frames (10.255 s for 1024 frames).
        "window_samples": (cfg.audio.target_frames - 1) * _fbank.FRAME_SHIFT_SAMPLES + _fbank.FRAME_LENGTH_SAMPLES,
        "prompt_template": PROMPT_TEMPLATE, "default_instruction": DEFAULT_INSTRUCTION,
        "generation_defaults": {"max_new_tokens": 400, "temperature": 0.1, "top_p": 0.95, "top_k": 50,
                                "repetition_penalty": 1.0},
        "decoder": {"num_layers": int(llama["num_hidden_layers"]),
                    "kv_heads": int(llama.get("num_key_value_heads") or llama["num_attention_heads"]),
                    "head_dim": head_dim, "vocab_size": int(llama["vocab_size"]),
                    "max_positions": int(llama.get("max_position_embeddings", 4096)),
                    "bos_token_id": int(llama.get("bos_token_id", 1)), "eos_token_id": int(llama.get("eos_token_id", 2)),
                    "pad_token_id": int(llama.get("pad_token_id") or 0)},
        "audio_precision": audio_precision, "decoder_precision": decoder_precision,
        "memory_estimate_bytes": estimate.peak_bytes, "parameters": estimate.parameters,
        "model_config": cfg.to_dict(), **{k: v for k, v in info.items() if k != "random_init"},
    }
    return Manifest(
        kind="gama", task="describe", source=config.source, random_init=config.random_init,
        precision=config.precision, opset=config.opset, files=files, sample_rate=_fbank.SAMPLE_RATE,
        frame_stride_samples=_fbank.FRAME_SHIFT_SAMPLES, receptive_field_samples=_fbank.FRAME_LENGTH_SAMPLES,
        hidden_size=cfg.hidden_size, num_layers=int(llama["num_hidden_layers"]), normalize_input=False,
        validation=validation, sha256={k: sha256_file(tmp / v) for k, v in files.items()},
        versions=_versions(), extra=extra, created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    )
