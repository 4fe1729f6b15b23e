"""The split Wav2Vec2 export: ``frontend.onnx`` (audio → conv frames) + ``encoder.onnx``.

The convolutional front end is local (frame ``i`` sees samples ``[320 i, 320 i + 400)``)
except for two statistics over the whole input: the input normalisation and, for
``feat_extract_norm="group"`` models, the GroupNorm after conv layer 0. ``frontend.onnx``
takes both as inputs (``input_mean``/``input_std`` per row; ``patch_mean``/``patch_cov`` of
the raw conv-0 input patches, from which the graph derives GroupNorm's per-channel
mean/variance exactly: see :mod:`ostinato.runtime.w2v_frontend`), so a stream can compute
each conv frame once and feed the transformer from a cache. ``encoder.onnx`` is the rest of
the model (feature projection, positional convolution, transformer, CTC head) on
``conv_features [B, T, C]``.

Both graphs are traced from the same (patched) PyTorch model as ``model.onnx`` and converted
with the same recipe; the pair is validated against the same PyTorch references with
statistics measured over each whole input.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ostinato.export import quantize
from ostinato.export._w2v_graph import (
    convert_graph, providers_for, quiet_export, recipe_front_end, recipe_pos_conv, trace_input,
)
from ostinato.export._w2v_source import GraphModule, SourceModel
from ostinato.export.validate import ValidationCase, validate_runner
from ostinato.runtime.w2v_frontend import window_stats

if TYPE_CHECKING:
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig

__all__ = ["CONV_FEATURES", "ENCODER_FILE", "FRONTEND_FILE", "FrontEndModule", "conv_runner", "export_split", "ort_session", "patch_geometry", "split_info"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]

FRONTEND_FILE = "frontend.onnx"
ENCODER_FILE = "encoder.onnx"
CONV_FEATURES = "conv_features"
_STAT_AXES = {0: "batch_size"}


def patch_geometry(source: SourceModel) -> tuple[int, int] | None:
    """``(kernel, stride)`` of conv layer 0 for group models, else ``None``."""
    if str(source.hf_config.feat_extract_norm) != "group":
        return None
    return int(source.hf_config.conv_kernel[0]), int(source.hf_config.conv_stride[0])


class FrontEndModule(torch.nn.Module):
    """The feature encoder with its normalisation statistics as inputs; returns ``[B, T, C]``."""

    def __init__(self, feature_extractor: Any, group: bool) -> None:
        super().__init__()
        self.layers = feature_extractor.conv_layers
        self.rewritten = tuple(getattr(feature_extractor, "rewritten", ()))
        self.group = group

    def forward(self, input_values: torch.Tensor, input_mean: torch.Tensor, input_std: torch.Tensor, *patch: torch.Tensor) -> torch.Tensor:
        x = ((input_values - input_mean) / input_std)[:, None]
        first = self.layers[0]
        x = self._group_layer0(first, x, input_mean, input_std, *patch) if self.group else first(x)
        channels_last = False
        for i, layer in enumerate(self.layers):
            if i == 0:
                continue
            want_last = i in self.rewritten
            if want_last != channels_last:
                x = x.transpose(1, 2)
                channels_last = want_last
            x = layer(x)
        return x if channels_last else x.transpose(1, 2)

    @staticmethod
    def _group_layer0(
        layer: Any, x: torch.Tensor, input_mean: torch.Tensor, input_std: torch.Tensor,
        patch_mean: torch.Tensor, patch_cov: torch.Tensor,
    ) -> torch.Tensor:
        conv, norm = layer.conv, layer.layer_norm
        w = conv.weight[:, 0, :]  # [C, K]
        # Patch statistics of the normalised input, from those of the raw audio.
        mean = (patch_mean - input_mean) / input_std  # [B, K]
        cov = patch_cov / (input_std * input_std)[:, :, None]  # [B, K, K]
        # Mul + ReduceSum instead of MatMul: the int8 quantizer leaves these in fp32.
        # In float64: speech patches are strongly correlated, so w'Cw cancels a lot.
        w64 = w.double()
        mu = (mean.double()[:, None, :] * w64[None]).sum(-1).float()  # [B, C]
        if conv.bias is not None:
            mu = mu + conv.bias
        ww = w64[:, :, None] * w64[:, None, :]  # [C, K, K]
        var = (cov.double()[:, None] * ww[None]).sum((-1, -2)).clamp_min(0.0).float()  # [B, C]
        y = conv(x)
        y = (y - mu[..., None]) * torch.rsqrt(var[..., None] + norm.eps)
        y = y * norm.weight[:, None] + norm.bias[:, None]
        out: torch.Tensor = layer.activation(y)
        return out


class _ConvFeaturesIn(torch.nn.Module):
    """Stands in for the feature encoder: the input already is the conv frames."""

    def forward(self, conv_features: torch.Tensor) -> torch.Tensor:
        return conv_features.transpose(1, 2)  # HF code transposes back to [B, T, C]


@contextlib.contextmanager
def _encoder_only(model: Any) -> Iterator[None]:
    owner = getattr(model, "wav2vec2", model)
    original = owner.feature_extractor
    owner.feature_extractor = _ConvFeaturesIn()
    try:
        yield
    finally:
        owner.feature_extractor = original


def _frontend_inputs(source: SourceModel) -> tuple[list[str], tuple[torch.Tensor, ...]]:
    x = trace_input()
    stats = window_stats(x.numpy(), source.do_normalize, patch_geometry(source))
    feeds = stats.feeds()
    return ["input_values", *feeds], (x, *(torch.from_numpy(v) for v in feeds.values()))


def _trace(
    source: SourceModel, module: GraphModule, frontend_path: Path, encoder_path: Path, opset: int,
    recipe: quantize.Int8Recipe | None,
) -> None:
    owner = getattr(source.model, "wav2vec2", source.model)
    with torch.no_grad(), quiet_export(), recipe_front_end(source, recipe):
        front = FrontEndModule(owner.feature_extractor, patch_geometry(source) is not None).eval()
        names, args = _frontend_inputs(source)
        axes: dict[str, dict[int, str]] = {n: _STAT_AXES for n in names[1:]}
        torch.onnx.export(
            front, args, str(frontend_path), input_names=names, output_names=[CONV_FEATURES],
            dynamic_axes={"input_values": {0: "batch_size", 1: "num_samples"}, **axes,
                          CONV_FEATURES: {0: "batch_size", 1: "num_frames"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
        conv = front(*args)
    with torch.no_grad(), quiet_export(), _encoder_only(source.model), recipe_pos_conv(source, recipe):
        torch.onnx.export(
            module, (conv,), str(encoder_path), input_names=[CONV_FEATURES], output_names=module.output_names,
            dynamic_axes={CONV_FEATURES: {0: "batch_size", 1: "num_frames"},
                          **{n: {0: "batch_size", 1: "num_frames"} for n in module.output_names}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )


def export_split(
    tmp: Path,
    config: Wav2Vec2ExportConfig,
    source: SourceModel,
    module: GraphModule,
    cases: Sequence[ValidationCase],
    report: Progress,
) -> dict[str, Any]:
    """Trace, convert and validate the split pair into ``tmp``; return its validation figures.

    Raises:
        ToleranceError: The pair does not match the PyTorch references (nothing is kept).
    """
    recipe = config.int8_recipe if config.precision == "int8" else None
    final = {"frontend": tmp / FRONTEND_FILE, "encoder": tmp / ENCODER_FILE}
    traced = final if config.precision == "fp32" else {k: v.with_suffix(".fp32.onnx") for k, v in final.items()}
    report("export split", 0, 1)
    _trace(source, module, traced["frontend"], traced["encoder"], config.opset, recipe)
    if config.precision != "fp32":
        for role, path in traced.items():
            # The transformer optimizer's fusions are for the encoder; the front end has none.
            role_recipe = config.int8_recipe if role == "encoder" else dataclasses.replace(config.int8_recipe, optimize=False)
            convert_graph(path, final[role], config.precision, role_recipe, source)
            path.unlink()
    report("export split", 1, 1)
    if not config.validate:
        return {"skipped": True}
    providers = providers_for(config.precision)
    runner = _split_runner(final["frontend"], final["encoder"], source, providers)
    mode = "exact" if config.precision == "fp32" else "cosine"
    return validate_runner(
        runner, cases, mode, atol=config.atol, min_cosine=config.min_cosine, provider=providers[0],
        where=f"{FRONTEND_FILE} + {ENCODER_FILE}", progress=report,
    )


def _split_runner(
    frontend: Path, encoder: Path, source: SourceModel, providers: Sequence[str]
) -> Callable[[npt.NDArray[np.float32], list[str]], dict[str, npt.NDArray[np.float32]]]:
    conv, enc = conv_runner(frontend, source, providers), ort_session(encoder, providers)

    def run(x: npt.NDArray[np.float32], names: list[str]) -> dict[str, npt.NDArray[np.float32]]:
        return dict(zip(names, enc.run(names, {CONV_FEATURES: conv(x)}), strict=True))

    return run


def conv_runner(
    frontend: Path, source: SourceModel, providers: Sequence[str]
) -> Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]:
    """``frontend.onnx`` for validation: audio rows → conv frames, each row with its own statistics."""
    front = ort_session(frontend, providers)
    patch = patch_geometry(source)

    def conv(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        # Validation inputs are already normalised (as the runtime feeds model.onnx);
        # measuring them again gives mean 0 / std 1, so both graphs see the same audio.
        stats = window_stats(x, source.do_normalize, patch)
        (frames,) = front.run([CONV_FEATURES], {"input_values": x, **stats.feeds()})
        return np.asarray(frames, np.float32)

    return conv


def ort_session(path: Path, providers: Sequence[str]) -> Any:
    """An ONNX Runtime session for validation, its warnings silenced."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=list(providers))


def split_info(source: SourceModel) -> dict[str, Any]:
    """Manifest ``extra["split"]``: what the two graphs take and give."""
    patch = patch_geometry(source)
    inputs = ["input_values", "input_mean", "input_std"] + (["patch_mean", "patch_cov"] if patch else [])
    return {
        "frontend": FRONTEND_FILE,
        "encoder": ENCODER_FILE,
        "frontend_inputs": inputs,
        "conv_features": CONV_FEATURES,
        "conv_dim": int(source.hf_config.conv_dim[-1]),
        "patch_kernel": patch[0] if patch else None,
        "patch_stride": patch[1] if patch else None,
        "stats": "input_mean/input_std: mean and sqrt(var + 1e-7) of the raw audio per row "
        "(0/1 when normalize_input is false); patch_mean/patch_cov (group models): mean and "
        "covariance of the raw conv-0 input patches, from which the graph derives GroupNorm's "
        "per-channel statistics",
    }
