"""Graph-shape patches applied to a Wav2Vec2 model before tracing (exact rewrites).

:func:`matmul_front_end` rewrites convolution layers 1..6 of the feature encoder as
``im2col`` (three or two strided slices, concatenated along channels) followed by one
``MatMul``, working in ``[batch, frames, channels]`` layout. The arithmetic is the same as
the ``Conv1d`` it replaces (sums in another order: the fp32 check against the unpatched
PyTorch model covers it), but ONNX Runtime's dynamic int8 quantizer turns a MatMul into a
fast ``DynamicQuantizeMatMul``, whereas a quantized ``Conv`` becomes ``ConvInteger``, which
runs slower than fp32. Those six layers carry about a third of wav2vec2-base's
multiply-adds, so leaving them in fp32 caps the int8 speedup (``bench/RESULTS.md``).

Layer 0 (one input channel, kernel 10) stays a ``Conv1d``: it is 1 % of the work and a
K = 10 product gains nothing from int8.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["MatMulConvLayer", "MatMulFeatureEncoder", "matmul_front_end"]


class MatMulConvLayer(torch.nn.Module):
    """One ``Conv1d`` (+ optional LayerNorm over channels) + activation, as slices + MatMul.

    Works on ``[batch, frames, channels]``. Output frame ``t`` reads input frames
    ``t*stride + j`` for ``j < kernel``; slice ``j`` is ``x[:, j : j-(kernel-1) : stride]``,
    whose length equals the convolution's output length for every input length, so the
    graph needs no shape arithmetic.
    """

    def __init__(self, layer: Any, frame_scaled: bool = False) -> None:
        super().__init__()
        self.frame_scaled = frame_scaled
        conv = layer.conv
        if conv.padding != (0,) or conv.dilation != (1,) or conv.groups != 1:
            raise ValueError(f"cannot rewrite {conv}: expected no padding, dilation 1, one group")
        out_ch, in_ch, kernel = conv.weight.shape
        self.kernel = int(kernel)
        self.stride = int(conv.stride[0])
        # [out, in, k] -> [k, in, out] -> [k*in, out]: slice j's channels come j-th.
        weight = conv.weight.detach().permute(2, 1, 0).reshape(kernel * in_ch, out_ch)
        self.weight = torch.nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        # Wav2Vec2LayerNormConvLayer normalises over channels; the no-norm layer has none.
        norm = getattr(layer, "layer_norm", None)
        if norm is not None and not isinstance(norm, torch.nn.LayerNorm):
            raise ValueError(f"cannot rewrite a conv layer normalised by {type(norm).__name__}")
        self.layer_norm = norm
        self.activation = layer.activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = torch.cat(self._slices(x), dim=-1)
        if self.frame_scaled:
            # Per-frame scale: int8 dynamic quantization uses one scale per tensor, which
            # drowns quiet frames next to loud ones; dividing each row by its own peak and
            # multiplying the product back is exact in fp32 and gives each frame full range.
            # The peak of a row is the largest peak of the input frames it is built from.
            frame_peak = x.abs().amax(dim=-1, keepdim=True)
            peak = torch.stack(self._slices(frame_peak), dim=0).amax(dim=0).clamp_min(1e-6)
            y = torch.matmul(cols * peak.reciprocal(), self.weight) * peak
        else:
            y = torch.matmul(cols, self.weight)
        if self.bias is not None:
            y = y + self.bias
        if self.layer_norm is not None:
            y = self.layer_norm(y)
        out: torch.Tensor = self.activation(y)
        return out

    def _slices(self, x: torch.Tensor) -> list[torch.Tensor]:
        last = self.kernel - 1
        return [x[:, j : (j - last if j < last else None) : self.stride] for j in range(self.kernel)]


class MatMulFeatureEncoder(torch.nn.Module):
    """Drop-in for ``Wav2Vec2FeatureEncoder`` with chosen conv layers as :class:`MatMulConvLayer`.

    Args:
        encoder: The HF feature encoder.
        layers: Indices of the conv layers to rewrite (layer 0 is never rewritten).
    """

    def __init__(self, encoder: Any, layers: tuple[int, ...], frame_scaled: bool = False) -> None:
        super().__init__()
        if 0 in layers:
            raise ValueError(f"layers={layers}; conv layer 0 (one input channel) is never rewritten")
        self.rewritten = tuple(sorted(layers))
        self.conv_layers = torch.nn.ModuleList(
            MatMulConvLayer(layer, frame_scaled) if i in layers else layer for i, layer in enumerate(encoder.conv_layers)
        )

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        x = input_values[:, None]  # [batch, channels, frames], as the HF layers expect
        channels_last = False
        for i, layer in enumerate(self.conv_layers):
            want_last = i in self.rewritten
            if want_last != channels_last:
                x = x.transpose(1, 2)
                channels_last = want_last
            x = layer(x)
        # HF code after the encoder expects [batch, channels, frames] (and transposes back).
        return x.transpose(1, 2) if channels_last else x


@contextlib.contextmanager
def matmul_front_end(model: Any, layers: tuple[int, ...], frame_scaled: bool = False) -> Iterator[None]:
    """Swap the feature encoder of a ``Wav2Vec2Model``/``Wav2Vec2ForCTC`` while tracing.

    Args:
        model: The HF model (patched in place, restored on exit).
        layers: Conv layers to rewrite as slices + MatMul; empty: no change.
    """
    if not layers:
        yield
        return
    owner = getattr(model, "wav2vec2", model)
    original = owner.feature_extractor
    owner.feature_extractor = MatMulFeatureEncoder(original, layers, frame_scaled).eval()
    try:
        yield
    finally:
        owner.feature_extractor = original
