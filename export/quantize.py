"""Precision conversion of an exported fp32 graph: dynamic int8 and fp16.

Both take an fp32 ONNX file and write a new one; the caller validates the result against
PyTorch. Inputs and outputs stay float32 in every precision, so the runtime feeds and reads
the same dtypes whatever the file holds.

int8 findings (``bench/RESULTS.md`` has the numbers): the positional convolution of
Wav2Vec2 uses weight norm, whose weight is computed in the graph and is not an
initializer, which crashes ``quantize_dynamic`` with its default op types. The exporter
removes weight norm before export (exact), so every weight is an initializer. The default
recipe also rewrites the positional convolution as DFT products
(:mod:`ostinato.export._w2v_posconv`); those MatMuls stay fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "DEFAULT_INT8_RECIPE",
    "SPECTRAL_SCOPE",
    "Int8Recipe",
    "convert_fp16",
    "fp32_nodes",
    "optimize_graph",
    "quantize_int8",
]

logger = logging.getLogger(__name__)

# Module name of the spectral positional convolution (ostinato.export._w2v_posconv): ONNX
# node names of its DFT products contain "/<scope>/", and int8 quantization skips them.
SPECTRAL_SCOPE = "spectral_fp32"

_OP_TYPES = ("MatMul", "Gemm", "Conv", "Attention", "Gather")


@dataclasses.dataclass(frozen=True, slots=True)
class Int8Recipe:
    """How to quantize a graph to int8 with ``onnxruntime.quantization.quantize_dynamic``.

    Args:
        op_types: Operator types to quantize (weights int8, activations quantized on the fly).
        per_channel: One scale per output channel instead of one per tensor.
        reduce_range: 7-bit weights (helps accuracy on CPUs without VNNI, costs on VNNI).
        optimize: Run ONNX Runtime's transformer optimizer (LayerNorm/GELU/attention
            fusions) on the fp32 graph before quantizing.
        front_end_layers: Feature-encoder conv layers rewritten as slices + MatMul before
            export so that they are quantized too (see :mod:`ostinato.export._w2v_patch`).
        frame_scaled: Scale each frame to its own peak around those MatMuls, so one
            per-tensor activation scale does not drown quiet frames.
        spectral_pos_conv: Rewrite the transformer's positional convolution (fp32 grouped
            ``Conv``, 12-13 % of base's int8 encoder time on 1 s windows) as block-wise DFT
            products (exact; MatMuls the quantizer leaves in fp32; see
            :mod:`ostinato.export._w2v_posconv`). Models exported before this field existed
            have the plain ``Conv`` and keep working.
    """

    op_types: tuple[str, ...] = ("MatMul", "Gemm")
    per_channel: bool = False
    reduce_range: bool = False
    optimize: bool = False
    front_end_layers: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    frame_scaled: bool = True
    spectral_pos_conv: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.op_types) - set(_OP_TYPES))
        if unknown or not self.op_types:
            raise ValueError(f"op_types={self.op_types!r}; expected a non-empty subset of {_OP_TYPES}")
        if any(x < 1 for x in self.front_end_layers):
            raise ValueError(f"front_end_layers={self.front_end_layers!r}; expected conv layer numbers >= 1")

    def describe(self) -> dict[str, object]:
        """Return the recipe as a JSON-ready dictionary (recorded in the manifest)."""
        out = dataclasses.asdict(self)
        out["op_types"] = list(self.op_types)
        out["front_end_layers"] = list(self.front_end_layers)
        out["method"] = "onnxruntime.quantization.quantize_dynamic (QOperator, int8 weights)"
        return out


DEFAULT_INT8_RECIPE = Int8Recipe()


def optimize_graph(src: Path, dst: Path, num_heads: int, hidden_size: int) -> dict[str, int]:
    """Apply ONNX Runtime's offline transformer fusions (model type ``bert``) to ``src``.

    Args:
        src: fp32 ONNX graph.
        dst: Where to write the fused graph.
        num_heads: Attention heads of the encoder.
        hidden_size: Width of the encoder.

    Returns:
        Count of each fused operator type (e.g. ``{"SkipLayerNormalization": 24}``).
    """
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(
        str(src), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0
    )
    fused = {k: int(v) for k, v in model.get_fused_operator_statistics().items() if v}
    model.save_model_to_file(str(dst))
    logger.info("transformer optimizer fused %s", fused)
    return fused


def quantize_int8(src: Path, dst: Path, recipe: Int8Recipe = DEFAULT_INT8_RECIPE) -> None:
    """Quantize ``src`` to int8 weights with dynamic activation quantization.

    Nodes of a spectral positional convolution (named under
    :data:`SPECTRAL_SCOPE`) stay fp32 whatever the recipe.

    Args:
        src: fp32 ONNX graph whose weights are initializers (weight norm removed).
        dst: Where to write the int8 graph.
        recipe: Which operators and scales.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_onnxruntime_logging():
        quantize_dynamic(
            src,
            dst,
            op_types_to_quantize=list(recipe.op_types),
            nodes_to_exclude=fp32_nodes(src),
            per_channel=recipe.per_channel,
            reduce_range=recipe.reduce_range,
            weight_type=QuantType.QInt8,
            # Fused contrib ops (after optimize_graph) defeat ONNX shape inference; their
            # outputs are float32 here.
            extra_options={"DefaultTensorType": 1},
        )


def fp32_nodes(path: Path) -> list[str]:
    """Names of the nodes in ``path`` that int8 quantization must leave alone (DFT products)."""
    import onnx

    scope = f"/{SPECTRAL_SCOPE}/"
    graph = onnx.load(str(path), load_external_data=False).graph
    return [node.name for node in graph.node if scope in node.name]


class _DropOnnxRuntimeChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_onnxruntime_logging() -> Iterator[None]:
    """Drop the quantizer's per-tensor INFO lines and its generic pre-processing advice.

    onnxruntime.quantization logs through the *root* logger, so a filter on the root
    logger is the only way to keep it out of the user's terminal.
    """
    root = logging.getLogger()
    chatter = _DropOnnxRuntimeChatter()
    root.addFilter(chatter)
    try:
        yield
    finally:
        root.removeFilter(chatter)


def convert_fp16(src: Path, dst: Path) -> None:
    """Convert ``src`` to float16 weights and compute, keeping float32 inputs and outputs.

    Args:
        src: fp32 ONNX graph.
        dst: Where to write the fp16 graph.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.save(converted, str(dst))
