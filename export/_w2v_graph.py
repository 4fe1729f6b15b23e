"""ONNX side of the Wav2Vec2 export: trace to fp32, validation cases, precision conversion."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ostinato.export import quantize, specs
from ostinato.export._w2v_patch import matmul_front_end
from ostinato.export._w2v_posconv import spectral_pos_conv
from ostinato.export._w2v_source import GraphModule, SourceModel
from ostinato.export.errors import ExportError
from ostinato.export.validate import ValidationCase, make_cases, validate_onnx

if TYPE_CHECKING:
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig

__all__ = [
    "check",
    "convert",
    "convert_graph",
    "export_fp32",
    "make_validation_cases",
    "providers_for",
    "quiet_export",
    "recipe_front_end",
    "recipe_pos_conv",
    "trace_input",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]

# One second of audio: long enough for every conv layer, short enough to trace fast.
_TRACE_SAMPLES = 16_000


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Silence the tracer's warnings about legacy export and data-dependent branches.

    The graph is checked against PyTorch on several lengths and batch sizes after
    export, which is what those warnings ask the user to verify.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*The feature will be removed.*")
        # F.pad's reversed pad list (a step -1 Slice) of the spectral positional conv.
        warnings.filterwarnings("ignore", message=".*Only steps=1 can be constant folded.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\..*")
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"(torch|transformers)\..*")
        yield


def export_fp32(
    source: SourceModel,
    module: GraphModule,
    path: Path,
    opset: int,
    use_optimum: bool,
    recipe: quantize.Int8Recipe | None = None,
) -> str:
    """Trace ``module`` into an fp32 ONNX graph at ``path``; return which exporter ran.

    optimum-onnx handles the plain graphs (one output); graphs with hidden layers as extra
    outputs use ``torch.onnx.export`` on :class:`GraphModule` directly, which optimum's
    fixed output sets cannot express. With an int8 ``recipe``, the feature encoder's conv
    layers are rewritten as MatMuls first (exact; validated like the rest).
    """
    with torch.no_grad(), quiet_export(), recipe_front_end(source, recipe):
        if use_optimum:
            _export_optimum(source, path, opset)
            exporter = "optimum-onnx"
        else:
            _export_torch(module, path, opset)
            exporter = "torch.onnx (TorchScript)"
    _check_names(path, module.output_names)
    return exporter


@contextlib.contextmanager
def recipe_front_end(source: SourceModel, recipe: quantize.Int8Recipe | None) -> Iterator[None]:
    """While tracing: the rewrites of an int8 ``recipe`` (none without one).

    The conv layers it names become MatMuls, and the positional convolution DFT products
    (:func:`recipe_pos_conv`).
    """
    num_conv = len(source.hf_config.conv_kernel)
    front_end = tuple(x for x in recipe.front_end_layers if x < num_conv) if recipe else ()
    with matmul_front_end(source.model, front_end, recipe.frame_scaled if recipe else False), recipe_pos_conv(source, recipe):
        yield


@contextlib.contextmanager
def recipe_pos_conv(source: SourceModel, recipe: quantize.Int8Recipe | None) -> Iterator[None]:
    """While tracing: the positional convolution as DFT products if an int8 ``recipe`` asks."""
    with spectral_pos_conv(source.model, bool(recipe and recipe.spectral_pos_conv)):
        yield


def trace_input() -> torch.Tensor:
    """The ``[1, samples]`` audio graphs are traced on (seeded noise)."""
    return torch.zeros(1, _TRACE_SAMPLES).normal_(generator=torch.Generator().manual_seed(0))


def _export_torch(module: GraphModule, path: Path, opset: int) -> None:
    torch.onnx.export(
        module,
        (trace_input(),),
        str(path),
        input_names=[specs.INPUT_NAME],
        output_names=module.output_names,
        dynamic_axes={
            specs.INPUT_NAME: specs.INPUT_AXES,
            **{name: specs.OUTPUT_AXES for name in module.output_names},
        },
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def _export_optimum(source: SourceModel, path: Path, opset: int) -> None:
    from optimum.exporters.onnx import export
    from optimum.exporters.onnx.model_configs import Wav2Vec2OnnxConfig

    task = "automatic-speech-recognition" if source.task == "ctc" else "feature-extraction"
    onnx_config = Wav2Vec2OnnxConfig(source.hf_config, task=task)
    export(source.model, onnx_config, path, opset=opset)


def _check_names(path: Path, expected: list[str]) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [specs.INPUT_NAME] or outputs != expected:
        raise ExportError(
            f"exported graph has inputs {inputs} and outputs {outputs}; expected "
            f"[{specs.INPUT_NAME!r}] and {expected}",
            hint="the installed torch/optimum-onnx version traces differently; report it in an issue",
        )


def make_validation_cases(source: SourceModel, module: GraphModule, seed: int) -> list[ValidationCase]:
    """Build validation inputs and compute PyTorch fp32 reference outputs for them."""
    names = module.output_names

    def reference(x: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
        with torch.inference_mode():
            outs = module(torch.from_numpy(x))
        return {n: o.detach().numpy().astype(np.float32) for n, o in zip(names, outs, strict=True)}

    return make_cases(reference, seed=seed, normalize=source.do_normalize)


def check(
    path: Path, cases: Sequence[ValidationCase], mode: str, config: Wav2Vec2ExportConfig, report: Progress
) -> dict[str, Any]:
    """Validate ``path`` against the PyTorch references (raises ToleranceError on failure)."""
    providers = providers_for(config.precision)
    return validate_onnx(
        path,
        cases,
        mode,
        atol=config.atol,
        min_cosine=config.min_cosine,
        providers=providers,
        progress=report,
    )


def providers_for(precision: str) -> tuple[str, ...]:
    """Execution providers a graph of ``precision`` is validated on."""
    # fp16 targets CUDA: validate there when its libraries load (asking ORT for a provider
    # that cannot load prints its own errors). Elsewhere graphs are validated on CPU.
    if precision != "fp16":
        return ("CPUExecutionProvider",)
    import onnxruntime as ort

    from ostinato.runtime.providers import load_error

    cuda = "CUDAExecutionProvider"
    if cuda in ort.get_available_providers() and load_error(cuda) is None:
        return (cuda, "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def convert(
    src: Path,
    dst: Path,
    precision: str,
    recipe: quantize.Int8Recipe,
    source: SourceModel,
    report: Progress,
) -> dict[str, Any]:
    """Convert the fp32 graph ``src`` to ``precision`` at ``dst``; return what was done."""
    report(f"convert {precision}", 0, 1)
    info = convert_graph(src, dst, precision, recipe, source)
    report(f"convert {precision}", 1, 1)
    return info


def convert_graph(
    src: Path, dst: Path, precision: str, recipe: quantize.Int8Recipe, source: SourceModel
) -> dict[str, Any]:
    """:func:`convert` without progress reports (also used for the split pair)."""
    if precision == "fp16":
        quantize.convert_fp16(src, dst)
        return {"method": "onnxruntime.transformers.float16 (keep_io_types)"}
    info: dict[str, Any] = {"recipe": recipe.describe()}
    quantize_src = src
    if recipe.optimize:
        quantize_src = src.with_suffix(".opt.onnx")
        info["fused"] = quantize.optimize_graph(
            src, quantize_src, int(source.hf_config.num_attention_heads), int(source.hf_config.hidden_size)
        )
    quantize.quantize_int8(quantize_src, dst, recipe)
    if quantize_src != src:
        quantize_src.unlink()
    return info
