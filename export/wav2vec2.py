"""Wav2Vec2 → ONNX export, validated against PyTorch, with manifest.

The graph takes raw 16 kHz audio ``input_values`` ``[batch, samples]`` (float32) and
returns ``last_hidden_state`` (task ``features``) or ``logits`` (task ``ctc``) plus
``hidden_state_<L>`` for every requested layer, all ``[batch, frames, dim]`` float32 with
frames = floor((samples - 400) / 320) + 1. Input normalisation (zero mean, unit variance per
input) is *not* in the graph: the manifest records ``normalize_input`` and the runtime
applies it. Layer numbering: see :mod:`ostinato.export.specs`.

Everything is written into a temporary directory beside ``out_dir`` and moved into place
only after validation passed, so a failed export never leaves a model behind.
"""

from __future__ import annotations

import dataclasses
import datetime
import errno
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from ostinato.export import specs
from ostinato.export.errors import ExportError, ExportOptionError
from ostinato.export.quantize import DEFAULT_INT8_RECIPE, Int8Recipe
from ostinato.runtime.manifest import MANIFEST_NAME, Manifest, OutputSpec, sha256_file

if TYPE_CHECKING:  # torch is imported only when an export runs
    from ostinato.export._w2v_source import SourceModel

__all__ = ["Wav2Vec2ExportConfig", "export_wav2vec2"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]

_MODEL_FILE = "model.onnx"


@dataclasses.dataclass(frozen=True, slots=True)
class Wav2Vec2ExportConfig:
    """What to export and how.

    Args:
        model: A Hugging Face Wav2Vec2 directory (``config.json`` + weights, as
            ``save_pretrained`` writes), or ``random:base`` / ``random:large`` /
            ``random:tiny`` (the same architectures with seeded random weights).
        task: ``features`` (encoder hidden states) or ``ctc`` (character logits + vocab).
        precision: ``fp32``, ``fp16`` (for the CUDA provider) or ``int8`` (dynamic, CPU).
        layers: Hidden layers to expose as extra outputs ``hidden_state_<L>``; 0 is the
            input to the first transformer layer, ``num_layers`` the last. Empty: only
            ``last_hidden_state`` / ``logits``.
        out_dir: Directory that receives ``model.onnx`` and ``ostinato.json``.
        opset: ONNX opset of the graph.
        validate: Check the graph against PyTorch and refuse it when outside tolerance.
        seed: Seed for random weights and validation inputs.
        atol: Largest absolute difference allowed for fp32 graphs.
        min_cosine: Smallest per-frame cosine vs fp32 PyTorch allowed for int8/fp16.
        int8_recipe: How int8 graphs are quantized.
        split: Also write ``frontend.onnx`` + ``encoder.onnx`` (the model split at the conv
            frames, normalisation statistics as inputs) for streaming with a conv-frame
            cache, and ``encoder_cached.onnx`` (the transformer over new frames with a
            per-layer K/V past: ``ostinato.export._w2v_cached``); validated like ``model.onnx``.
    """

    model: str
    out_dir: Path
    task: str = "features"
    precision: str = "fp32"
    layers: tuple[int, ...] = ()
    opset: int = specs.DEFAULT_OPSET
    validate: bool = True
    seed: int = 0
    atol: float = specs.FP32_ATOL
    min_cosine: float = specs.MIN_COSINE
    int8_recipe: Int8Recipe = DEFAULT_INT8_RECIPE
    split: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ExportOptionError(f"model={self.model!r}; expected a directory or one of {specs.RANDOM_MODELS}")
        if self.model.startswith("random:") and self.model not in specs.RANDOM_MODELS:
            raise ExportOptionError(f"model={self.model!r}; expected a directory or one of {specs.RANDOM_MODELS}")
        if self.task not in specs.TASKS:
            raise ExportOptionError(f"task={self.task!r}; expected one of {specs.TASKS}")
        if self.precision not in specs.PRECISIONS:
            raise ExportOptionError(f"precision={self.precision!r}; expected one of {specs.PRECISIONS}")
        if not specs.MIN_OPSET <= self.opset <= specs.MAX_OPSET:
            raise ExportOptionError(f"opset={self.opset}; expected {specs.MIN_OPSET}..{specs.MAX_OPSET}")
        layers = tuple(self.layers)
        if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in layers):
            raise ExportOptionError(f"layers={self.layers!r}; expected non-negative layer indices")
        object.__setattr__(self, "layers", tuple(sorted(set(layers))))
        object.__setattr__(self, "out_dir", Path(self.out_dir))
        if not self.atol > 0:
            raise ExportOptionError(f"atol={self.atol}; expected > 0")
        if not 0 < self.min_cosine <= 1:
            raise ExportOptionError(f"min_cosine={self.min_cosine}; expected in (0, 1]")

    @property
    def is_random(self) -> bool:
        """True for ``random:*`` models."""
        return self.model.startswith("random:")


def export_wav2vec2(config: Wav2Vec2ExportConfig, progress: Progress | None = None) -> Manifest:
    """Export, convert, validate and write a Wav2Vec2 model.

    Args:
        config: What to export.
        progress: Optional ``(step, done, total)`` callback for long steps.

    Returns:
        The manifest written to ``config.out_dir / "ostinato.json"``.

    Raises:
        SourceModelError: The model directory or its weights are missing or unreadable.
        UnsupportedArchitectureError: The directory holds another architecture.
        ExportOptionError: A requested layer does not exist (also a ValueError).
        ToleranceError: The graph does not match PyTorch (nothing is written).
        ExportError: ``out_dir`` holds something else, or the disk is full.
    """
    from ostinato.export._w2v_source import load_source

    _check_out_dir(config.out_dir)
    report = progress if progress is not None else _no_progress
    report("load model", 0, 1)
    source = load_source(config.model, config.task, config.seed)
    report("load model", 1, 1)
    _check_layers(config.layers, source.num_layers)
    needed_bytes = _needed_bytes(source.num_parameters, config.precision, config.split)
    try:
        config.out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{config.out_dir.name}.", dir=config.out_dir.parent))
    except OSError as e:
        _raise_write_error(e, config.out_dir, needed_bytes)
    try:
        _check_free_space(tmp, needed_bytes)
        manifest = _export_into(tmp, config, source, report)
        _move_into_place(tmp, config.out_dir)
    except OSError as e:
        _raise_write_error(e, config.out_dir, needed_bytes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("exported %s into %s", manifest.label, config.out_dir)
    return manifest


def _no_progress(step: str, done: float, total: float) -> None:
    del step, done, total


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ExportError(f"out_dir {str(out_dir)!r} is a file", hint="pass a directory path to --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ExportError(
            f"out_dir {str(out_dir)!r} is not empty and holds no {MANIFEST_NAME}; refusing to overwrite it",
            hint="pass an empty or new directory, or a previous ostinato export to replace",
        )


def _check_layers(layers: tuple[int, ...], num_layers: int) -> None:
    bad = [x for x in layers if x > num_layers]
    if bad:
        raise ExportOptionError(f"layers={list(layers)}; this model has layers 0..{num_layers} (got {bad})")


def _needed_bytes(num_parameters: int, precision: str, split: bool = False) -> int:
    # fp32 graph always; plus the converted copy (int8 ≈ 1/4, fp16 ≈ 1/2) while both exist;
    # the split pair holds the weights once more, the cached encoder the transformer's again.
    extra = {"fp32": 0.0, "fp16": 0.5, "int8": 0.3}[precision]
    if split:
        extra += 2 * {"fp32": 1.0, "fp16": 0.5, "int8": 0.3}[precision]
    return int(num_parameters * 4 * (1.0 + extra) * 1.1) + (16 << 20)


def _check_free_space(directory: Path, needed_bytes: int) -> None:
    free = shutil.disk_usage(directory).free
    if free < needed_bytes:
        raise ExportError(
            f"not enough disk space in {str(directory.parent)!r}: {free >> 20} MiB free, "
            f"the export needs about {needed_bytes >> 20} MiB",
            hint="free some space or pass --out on another disk",
        )


def _raise_write_error(error: OSError, out_dir: Path, needed_bytes: int) -> NoReturn:
    """Re-raise disk-full and permission failures as ExportErrors with a hint; others as they are."""
    if error.errno == errno.ENOSPC:
        raise ExportError(
            f"no space left on the device while writing {str(out_dir)!r}",
            hint=f"free at least {needed_bytes >> 20} MiB or pass --out on another disk",
        ) from error
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        raise ExportError(
            f"cannot write into {str(out_dir.parent)!r}: {error.strerror}",
            hint="pass an --out directory you can write to",
        ) from error
    raise error


def _export_into(tmp: Path, config: Wav2Vec2ExportConfig, source: SourceModel, report: Progress) -> Manifest:
    from ostinato.export import _w2v_graph as graph
    from ostinato.export._w2v_source import onnx_graph_module

    module = onnx_graph_module(source, config.layers)
    fp32_path = tmp / (_MODEL_FILE if config.precision == "fp32" else "model.fp32.onnx")
    # References come from the unpatched model, so the fp32 check also covers the rewrites.
    report("reference outputs", 0, 1)
    cases = graph.make_validation_cases(source, module, config.seed) if config.validate else []
    report("reference outputs", 1, 1)
    report("export onnx", 0, 1)
    recipe = config.int8_recipe if config.precision == "int8" else None
    exporter = graph.export_fp32(source, module, fp32_path, config.opset, not config.layers, recipe)
    report("export onnx", 1, 1)
    validation: dict[str, Any] = {"skipped": not config.validate}
    if config.validate:
        validation["fp32"] = graph.check(fp32_path, cases, "exact", config, report)
    conversion: dict[str, Any] = {}
    if config.precision != "fp32":
        final = tmp / _MODEL_FILE
        conversion = graph.convert(fp32_path, final, config.precision, config.int8_recipe, source, report)
        fp32_path.unlink()
        if config.validate:
            validation[config.precision] = graph.check(final, cases, "cosine", config, report)
    files = {"model": _MODEL_FILE, **source.write_vocab(tmp)}
    extra: dict[str, Any] = {"exporter": exporter, "conversion": conversion}
    if config.split:
        from ostinato.export import _w2v_split as split

        figures = split.export_split(tmp, config, source, module, cases, report)
        if config.validate:
            validation["split"] = figures
        files.update(frontend=split.FRONTEND_FILE, encoder=split.ENCODER_FILE)
        extra["split"] = split.split_info(source)
        cached = _export_cached(tmp, config, source, module, cases, report)
        if cached is not None:
            files["encoder_cached"] = cached["file"]
            extra["cached_encoder"] = cached["info"]
            if config.validate:
                validation["cached_encoder"] = cached["figures"]
    manifest = _build_manifest(config, source, module.output_specs, files, tmp, validation)
    manifest = dataclasses.replace(manifest, extra={**manifest.extra, **extra})
    report("write", 0, 1)
    manifest.write(tmp)
    report("write", 1, 1)
    return manifest


def _export_cached(
    tmp: Path, config: Wav2Vec2ExportConfig, source: SourceModel, module: Any, cases: Any, report: Progress
) -> dict[str, Any] | None:
    """``encoder_cached.onnx`` (transformer with a K/V past) beside the split pair, or ``None``."""
    from ostinato.export import _w2v_cached as cached
    from ostinato.export.errors import UnsupportedArchitectureError

    try:
        figures = cached.export_cached(tmp, config, source, module, cases, report)
    except UnsupportedArchitectureError as e:  # streaming falls back to whole windows over the split
        logger.warning("no cached encoder for this model: %s", e)
        return None
    return {"file": cached.CACHED_FILE, "info": cached.cached_info(source), "figures": figures}


def _build_manifest(
    config: Wav2Vec2ExportConfig,
    source: SourceModel,
    outputs: tuple[OutputSpec, ...],
    files: dict[str, str],
    tmp: Path,
    validation: dict[str, Any],
) -> Manifest:
    extra: dict[str, Any] = {
        "io_dtype": "float32",
        "input_name": specs.INPUT_NAME,
        "layer_numbering": "hugging face hidden_states: 0 = input to the first transformer layer, "
        "L = output of layer L, num_layers = last_hidden_state",
        "num_attention_heads": source.hf_config.num_attention_heads,
        "do_stable_layer_norm": bool(source.hf_config.do_stable_layer_norm),
        "seed": config.seed if config.is_random else None,
        **source.ctc_info,
    }
    return Manifest(
        kind="wav2vec2",
        task=config.task,
        source=source.description,
        random_init=source.random_init,
        precision=config.precision,
        opset=config.opset,
        files=files,
        outputs=outputs,
        sample_rate=specs.SAMPLE_RATE,
        frame_stride_samples=specs.FRAME_STRIDE_SAMPLES,
        receptive_field_samples=specs.RECEPTIVE_FIELD_SAMPLES,
        hidden_size=int(source.hf_config.hidden_size),
        num_layers=source.num_layers,
        normalize_input=source.do_normalize,
        feat_extract_norm=str(source.hf_config.feat_extract_norm),
        validation=validation,
        sha256={name: sha256_file(tmp / name) for name in files.values()},
        versions=_versions(),
        extra=extra,
        created_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _versions() -> dict[str, str]:
    from importlib import metadata

    import ostinato

    out = {"ostinato": ostinato.__version__}
    for dist in ("torch", "transformers", "onnx", "onnxruntime", "onnxruntime-gpu", "optimum-onnx"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Replace ``out_dir`` by ``tmp`` (same filesystem, so each rename is atomic)."""
    tmp.chmod(0o755)  # mkdtemp makes it private; an exported model is not a secret
    if not out_dir.exists():
        tmp.rename(out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old.", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    try:
        tmp.rename(out_dir)
    except OSError:
        old.rename(out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
