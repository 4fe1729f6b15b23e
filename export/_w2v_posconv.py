"""The positional convolution of Wav2Vec2 as block-wise DFT products (exact rewrite).

Wav2Vec2's positional embedding is a grouped ``Conv1d`` (base: 768 channels, 16 groups,
kernel 128, padding 64) over the transformer input. On the short windows a stream feeds
(49–99 frames) most of its taps multiply the zero padding, and ONNX Runtime runs it as an
fp32 im2col + GEMM per group: 12–13 % of the int8 encoder's time (``bench/RESULTS.md``).

:class:`SpectralPosConv` computes the same convolution with overlap-add over blocks of
``block`` frames: each block is zero-padded to ``n = ceil((block + kernel - 1) / block) *
block`` points, transformed with a real DFT written as a MatMul against a constant matrix,
mixed per frequency bin with the kernel's precomputed spectrum (one small complex matrix per
bin and group), transformed back (another MatMul), and the blocks' overlapping tails added.
Every step is a MatMul, Reshape, Transpose, Pad or Slice, valid for any number of frames.
The arithmetic is the convolution's in another order (fp32 rounding ~1e-6 relative; the
export's fp32 check against the unpatched PyTorch model covers it). Base, 49 frames: about
a fifth of the convolution's multiply-adds.

The int8 quantizer must leave these MatMuls in fp32 (a DFT in int8 is useless): their
nodes are named under :data:`ostinato.export.quantize.SPECTRAL_SCOPE`, which
:func:`ostinato.export.quantize.quantize_int8` excludes.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ostinato.export.quantize import SPECTRAL_SCOPE

__all__ = ["SpectralPosConv", "spectral_pos_conv"]


class _Spectral(torch.nn.Module):
    """The linear part: ``[B, T, H]`` → grouped convolution output ``[B, T, H]`` (no bias)."""

    def __init__(self, weight: torch.Tensor, groups: int, padding: int, block: int) -> None:
        super().__init__()
        out_ch, width, kernel = (int(v) for v in weight.shape)
        if out_ch != groups * width:
            raise ValueError(f"weight {tuple(weight.shape)} with {groups} groups: expected in == out channels")
        self.groups, self.width, self.block = groups, width, block
        self.parts = math.ceil((block + kernel - 1) / block)  # n = parts * block points per block
        n = self.parts * block
        self.offset = kernel - 1 - padding  # output t is overlap-added position t + offset
        forward, inverse = _dft_matrices(block, n)
        mix = _kernel_spectrum(weight, groups, n)
        self.forward_dft = torch.nn.Parameter(torch.from_numpy(forward).float(), requires_grad=False)
        self.inverse_dft = torch.nn.Parameter(torch.from_numpy(inverse).float(), requires_grad=False)
        self.mix = torch.nn.Parameter(torch.from_numpy(mix).float(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, hidden = x.shape
        blk, g, d = self.block, self.groups, self.width
        bins = self.mix.shape[0]
        pad = (blk - frames % blk) % blk
        xb = torch.nn.functional.pad(x, (0, 0, 0, pad)).reshape(batch, -1, blk, hidden)  # [B, C, L, H]
        chunks = xb.shape[1]
        cols = xb.permute(2, 0, 1, 3).reshape(blk, -1)  # [L, B*C*H]
        spec = torch.matmul(self.forward_dft, cols)  # [2K, BCH]: Re rows, then Im rows
        spec = spec.reshape(2, bins, batch * chunks, g, d).permute(1, 3, 4, 0, 2)  # [K, G, D, 2, BC]
        prod = torch.matmul(self.mix, spec.reshape(bins, g, d, -1))  # [K, G, (Wr|Wi) x D, (Xr|Xi) x BC]
        prod = prod.reshape(bins, g, 2, d, 2, batch * chunks)
        real = prod[:, :, 0, :, 0] - prod[:, :, 1, :, 1]  # Wr Xr - Wi Xi: [K, G, D, BC]
        imag = prod[:, :, 1, :, 0] + prod[:, :, 0, :, 1]  # Wi Xr + Wr Xi
        spec = torch.stack([real, imag], dim=0).permute(0, 1, 4, 2, 3).reshape(2 * bins, -1)  # [2K, BC*G*D]
        blocks = torch.matmul(self.inverse_dft, spec)  # [n, BCH]
        blocks = blocks.reshape(self.parts, blk, batch, chunks, hidden)
        # Overlap-add, [L, B, C + parts - 1, H]: part m of block c lands at chunk c + m.
        total = torch.nn.functional.pad(blocks[0], (0, 0, 0, self.parts - 1))
        for m in range(1, self.parts):
            total = total + torch.nn.functional.pad(blocks[m], (0, 0, m, self.parts - 1 - m))
        y = total.permute(1, 2, 0, 3).reshape(batch, -1, hidden)
        return y[:, self.offset : self.offset + frames]


def _dft_matrices(block: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Real DFT of ``block`` points zero-padded to ``n`` and its inverse, as left operands.

    Returns:
        ``[2K, block]`` (rows: Re of bins 0..K-1, then Im) and ``[n, 2K]`` (back to ``n``
        points), ``K = n // 2 + 1``.
    """
    bins = n // 2 + 1
    angle = 2 * np.pi * np.outer(np.arange(bins), np.arange(block)) / n  # [K, block]
    forward = np.concatenate([np.cos(angle), -np.sin(angle)], axis=0)
    weight = np.full(bins, 2.0)  # bins 1..K-2 stand for their conjugate twins too
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0
    back = 2 * np.pi * np.outer(np.arange(n), np.arange(bins)) / n  # [n, K]
    inverse = np.concatenate([np.cos(back), -np.sin(back)], axis=1) * np.tile(weight, 2)[None] / n
    return forward, inverse


def _kernel_spectrum(weight: torch.Tensor, groups: int, n: int) -> np.ndarray:
    """Per bin and group, ``[Wr; Wi]`` of the reversed kernel: ``[K, G, 2 * out, in]`` (float64)."""
    out_ch, width, _ = weight.shape
    w = weight.detach().double().numpy()[:, :, ::-1]  # block output j = a + (kernel - 1 - k)
    spec = np.fft.rfft(w, n=n, axis=-1)  # [out, in, K]
    spec = spec.reshape(groups, out_ch // groups, width, -1).transpose(3, 0, 1, 2)  # [K, G, out, in]
    return np.ascontiguousarray(np.concatenate([spec.real, spec.imag], axis=2))


class SpectralPosConv(torch.nn.Module):
    """Drop-in for ``Wav2Vec2PositionalConvEmbedding`` (weight norm already folded).

    Args:
        pos_conv: The HF module (``conv``, ``padding`` (SamePad), ``activation``).
        block: Frames per overlap-add block (64: 49 frames are one block).
    """

    def __init__(self, pos_conv: Any, block: int = 64) -> None:
        super().__init__()
        conv = pos_conv.conv
        if conv.stride != (1,) or conv.dilation != (1,) or conv.weight.shape[0] != conv.weight.shape[1] * conv.groups:
            raise ValueError(f"cannot rewrite {conv}: expected stride 1, dilation 1, in == out channels")
        kernel = int(conv.kernel_size[0])
        padding = int(conv.padding[0])
        if int(getattr(pos_conv.padding, "num_pad_remove", 0)) != (1 if kernel % 2 == 0 else 0) or padding != kernel // 2:
            raise ValueError(f"cannot rewrite {conv}: expected 'same' padding (kernel // 2, last frame removed if even)")
        setattr(self, SPECTRAL_SCOPE, _Spectral(conv.weight, int(conv.groups), padding, block))
        # Kept (unused here) for code that reads the HF module's parts while the swap is on.
        self.conv, self.padding = conv, pos_conv.padding
        self.bias = None if conv.bias is None else torch.nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
        self.activation = pos_conv.activation

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        y = getattr(self, SPECTRAL_SCOPE)(hidden_states)
        if self.bias is not None:
            y = y + self.bias
        out: torch.Tensor = self.activation(y)
        return out


@contextlib.contextmanager
def spectral_pos_conv(model: Any, enabled: bool, block: int = 64) -> Iterator[None]:
    """Swap the positional convolution of a ``Wav2Vec2Model``/``Wav2Vec2ForCTC`` while tracing.

    Args:
        model: The HF model (patched in place, restored on exit).
        enabled: ``False``: no change.
        block: Frames per overlap-add block.
    """
    if not enabled:
        yield
        return
    encoder = getattr(model, "wav2vec2", model).encoder
    original = encoder.pos_conv_embed
    encoder.pos_conv_embed = SpectralPosConv(original, block).eval()
    try:
        yield
    finally:
        encoder.pos_conv_embed = original
