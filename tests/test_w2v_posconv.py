"""The positional convolution as block-wise DFT products (``ostinato.export._w2v_posconv``).

Checked against the Hugging Face module itself in PyTorch, and in real int8 exports of
``random:tiny``: the rewrite is in the graphs, stays fp32, and the int8 encoder still
matches the fp32 one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from transformers import Wav2Vec2Config
from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2PositionalConvEmbedding

from conftest import TINY_INT8_MIN_COSINE

from ostinato.export._w2v_posconv import SpectralPosConv
from ostinato.export.quantize import SPECTRAL_SCOPE, Int8Recipe
from ostinato.export.validate import frame_cosine
from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig, export_wav2vec2
from ostinato.runtime.manifest import Manifest
from ostinato.runtime.w2v_frontend import window_stats

Audio = Callable[..., np.ndarray]

_QUANTIZED_OPS = {"DynamicQuantizeLinear", "MatMulInteger", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def _hf_pos_conv(hidden: int, kernel: int, groups: int) -> Wav2Vec2PositionalConvEmbedding:
    config = Wav2Vec2Config(hidden_size=hidden, num_conv_pos_embeddings=kernel, num_conv_pos_embedding_groups=groups)
    torch.manual_seed(kernel + groups)
    module = Wav2Vec2PositionalConvEmbedding(config).eval()
    torch.nn.utils.parametrize.remove_parametrizations(module.conv, "weight", leave_parametrized=True)
    with torch.no_grad():
        module.conv.bias.normal_()
    return module


@pytest.mark.parametrize(("hidden", "kernel", "groups"), [(32, 16, 2), (64, 128, 16), (24, 15, 3)])
@pytest.mark.parametrize("frames", [1, 7, 49, 63, 64, 65, 99, 150])
def test_matches_the_hf_convolution(hidden: int, kernel: int, groups: int, frames: int) -> None:
    hf = _hf_pos_conv(hidden, kernel, groups)
    spectral = SpectralPosConv(hf).eval()
    x = torch.randn(2, frames, hidden, generator=torch.Generator().manual_seed(frames))
    with torch.no_grad():
        want, got = hf(x), spectral(x)
    assert got.shape == want.shape == (2, frames, hidden)
    assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))


def test_refuses_what_it_cannot_rewrite() -> None:
    hf = _hf_pos_conv(32, 16, 2)
    hf.conv.stride = (2,)
    with pytest.raises(ValueError, match="stride 1"):
        SpectralPosConv(hf)
    hf = _hf_pos_conv(32, 16, 2)
    hf.conv.padding = (3,)
    with pytest.raises(ValueError, match="'same' padding"):
        SpectralPosConv(hf)


def _graph_ops(path: Path) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """``(grouped Conv nodes, nodes of the spectral rewrite)`` of an ONNX file."""
    nodes = list(onnx.load(str(path), load_external_data=False).graph.node)
    grouped = [n for n in nodes if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    return grouped, [n for n in nodes if f"/{SPECTRAL_SCOPE}/" in n.name]


def test_int8_export_rewrites_and_keeps_it_fp32(tiny_w2v_int8_dir: Path) -> None:
    recipe = Manifest.read(tiny_w2v_int8_dir).extra["conversion"]["recipe"]
    assert recipe["spectral_pos_conv"] is True
    for name in ("model.onnx", "encoder.onnx"):
        grouped, spectral = _graph_ops(tiny_w2v_int8_dir / name)
        assert not grouped, f"{name}: the grouped positional Conv is still there"
        assert sum(n.op_type == "MatMul" for n in spectral) == 3  # DFT, per-bin mix, inverse DFT
        assert not {n.op_type for n in spectral} & _QUANTIZED_OPS
        ops = {n.op_type for n in onnx.load(str(tiny_w2v_int8_dir / name), load_external_data=False).graph.node}
        assert ops & _QUANTIZED_OPS  # the transformer itself is quantized


def _encoder_outputs(model_dir: Path, conv: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_dir / "encoder.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {"conv_features": conv}), strict=True))


@pytest.mark.parametrize("seconds", [0.985, 1.985])
def test_int8_encoder_matches_fp32(tiny_w2v_int8_dir: Path, tiny_w2v_dir: Path, speech_like: Audio, seconds: float) -> None:
    # Same conv frames (the fp32 front end) into the fp32 encoder (plain Conv) and the int8
    # one (spectral positional conv, quantized transformer), at the stream's light and
    # default window lengths (49 and 99 frames).
    x = np.stack([speech_like(seconds, seed=s) for s in (5, 6)]).astype(np.float32)
    split = Manifest.read(tiny_w2v_dir).extra["split"]
    stats = window_stats(x, True, (split["patch_kernel"], split["patch_stride"]))
    front = ort.InferenceSession(str(tiny_w2v_dir / "frontend.onnx"), providers=["CPUExecutionProvider"])
    (conv,) = front.run(["conv_features"], {"input_values": x, **stats.feeds()})
    want, got = _encoder_outputs(tiny_w2v_dir, conv), _encoder_outputs(tiny_w2v_int8_dir, conv)
    assert conv.shape[1] == (x.shape[1] - 400) // 320 + 1
    for name, ref in want.items():
        cos = frame_cosine(got[name], ref)
        assert cos.mean() > 0.99 and cos.min() > TINY_INT8_MIN_COSINE, name


def test_recipe_without_it_keeps_the_conv(tmp_path: Path) -> None:
    config = Wav2Vec2ExportConfig(
        model="random:tiny", out_dir=tmp_path / "o", precision="int8", min_cosine=TINY_INT8_MIN_COSINE,
        int8_recipe=Int8Recipe(spectral_pos_conv=False),
    )
    manifest = export_wav2vec2(config)
    assert manifest.extra["conversion"]["recipe"]["spectral_pos_conv"] is False
    for name in ("model.onnx", "encoder.onnx"):
        grouped, spectral = _graph_ops(tmp_path / "o" / name)
        assert len(grouped) == 1 and not spectral
