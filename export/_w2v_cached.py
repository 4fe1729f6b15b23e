"""``encoder_cached.onnx``: the Wav2Vec2 transformer run over new frames only, with a K/V past.

Streaming a bidirectional encoder in windows recomputes every left-context frame through
every layer at every hop. This graph (Emformer-style) runs the transformer over the ``N``
*new* frames of a window only (its hop and right context); their queries attend to the
window's own keys/values and to the per-layer keys/values of up to ``L`` earlier frames, which
the runtime kept from earlier windows (``ostinato.runtime.w2v_kv``). Left context then costs
an attention over cached K/V instead of a pass through the layers.

Inputs (``P`` = :func:`context_frames`, half the positional convolution's kernel, 64 for base):

* ``conv_features [B, P + N, C]``: conv frames; the first ``P`` only feed the positional
  convolution of the new frames (they are projected, not run through the layers);
* ``context_mask [B, P]``: 1 where a context frame exists, 0 where it does not (before the
  stream's start, or not cached): those frames count as the zero padding offline Wav2Vec2
  sees at the start of its input;
* ``past_key_values [layers, 2, B, heads, L, head_dim]``: keys (0) and values (1) of the
  earlier frames, per layer;
* ``past_mask [B, L]``: 1 for real past frames, 0 for padding (streams with less history).

Outputs: the same outputs as ``encoder.onnx`` (``last_hidden_state``/``logits``,
``hidden_state_<L>``) for the ``N`` new frames, and ``present_key_values [layers, 2, B, heads,
N, head_dim]``, the new frames' keys/values. With ``L = 0`` and an all-zero context mask the
graph computes exactly what ``encoder.onnx`` computes on the same ``N`` frames (validated).

Both the post-LN (``do_stable_layer_norm=False``: base) and the pre-LN (stable layer norm:
large-lv60) layer layouts are built from the model's own modules; adapters are refused.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import torch

from ostinato.export import specs
from ostinato.export._w2v_graph import convert_graph, quiet_export, recipe_pos_conv
from ostinato.export._w2v_posconv import SpectralPosConv
from ostinato.export._w2v_source import GraphModule, SourceModel
from ostinato.export.errors import ToleranceError, UnsupportedArchitectureError
from ostinato.export.validate import ValidationCase, frame_cosine, validate_runner

if TYPE_CHECKING:
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig

__all__ = [
    "CACHED_FILE",
    "CachedEncoder",
    "PAST_NAME",
    "PRESENT_NAME",
    "cached_info",
    "context_frames",
    "export_cached",
]

logger = logging.getLogger(__name__)

Progress = Callable[[str, float, float], None]
Runner = Callable[..., dict[str, npt.NDArray[np.float32]]]

CACHED_FILE = "encoder_cached.onnx"
PAST_NAME = "past_key_values"
PRESENT_NAME = "present_key_values"
_INPUTS = ["conv_features", "context_mask", PAST_NAME, "past_mask"]
# Attention bias of a padded past frame: exp() underflows to exactly 0 in fp32 and fp16 (-1e4
# is within fp16's range, where -1e9 would become -inf and 0 * -inf a NaN for real frames).
_MASKED = -1e4


def context_frames(hf_config: Any) -> int:
    """Frames before the new ones that the positional convolution reads (``P``)."""
    return int(hf_config.num_conv_pos_embeddings) // 2


def kv_shape(source: SourceModel, batch: int, frames: int) -> tuple[int, int, int, int, int, int]:
    """``[layers, 2 (key, value), batch, heads, frames, head_dim]`` of the past/present K/V."""
    heads = int(source.hf_config.num_attention_heads)
    return source.num_layers, 2, batch, heads, frames, int(source.hf_config.hidden_size) // heads


class CachedEncoder(torch.nn.Module):
    """The transformer of ``source`` over new frames with a K/V past (see the module doc).

    Also the PyTorch reference of the cached computation that the ONNX graph is checked against.

    Raises:
        UnsupportedArchitectureError: The model has adapter layers.
    """

    def __init__(self, source: SourceModel, module: GraphModule) -> None:
        super().__init__()
        cfg = source.hf_config
        owner = getattr(source.model, "wav2vec2", source.model)
        if getattr(owner, "adapter", None) is not None or getattr(cfg, "adapter_attn_dim", None) is not None:
            raise UnsupportedArchitectureError(
                "the cached encoder does not support Wav2Vec2 adapters",
                hint="export with --no-split or without adapters",
            )
        self.projection = owner.feature_projection
        self.pos_conv = owner.encoder.pos_conv_embed  # HF's, or the int8 recipe's DFT rewrite (same padding)
        self.spectral = isinstance(self.pos_conv, SpectralPosConv)
        self.norm = owner.encoder.layer_norm
        self.layers = owner.encoder.layers
        self.lm_head = getattr(source.model, "lm_head", None)
        self.stable = bool(cfg.do_stable_layer_norm)
        _, _, _, self.heads, _, self.head_dim = kv_shape(source, 1, 0)
        kernel = int(cfg.num_conv_pos_embeddings)
        self.context = kernel // 2
        self.right_pad = kernel - 1 - kernel // 2
        self.wanted = [(o.name, o.layer) for o in module.output_specs]
        self.num_layers = source.num_layers

    @property
    def output_names(self) -> list[str]:
        """ONNX output names: the model outputs, then the present K/V."""
        return [n for n, _ in self.wanted] + [PRESENT_NAME]

    def forward(
        self, conv_features: torch.Tensor, context_mask: torch.Tensor, past: torch.Tensor, past_mask: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        x, _ = self.projection(conv_features)  # [B, P + N, H]
        new = x[:, self.context :]
        keep = torch.cat([context_mask, torch.ones_like(new[:, :, 0])], dim=1)
        h = new + self._position(x * keep[:, :, None])
        hidden = [h] if self.stable else [self.norm(h)]
        h = hidden[0]
        bias = torch.cat([(1.0 - past_mask) * _MASKED, torch.zeros_like(new[:, :, 0])], dim=1)
        presents = []
        for i, layer in enumerate(self.layers):
            h, present = self._layer(layer, h, past[i], bias)
            presents.append(present)
            hidden.append(h)
        if self.stable:
            hidden[-1] = self.norm(h)
        outs = []
        for name, layer_index in self.wanted:
            if name == specs.LOGITS_NAME and self.lm_head is not None:
                outs.append(self.lm_head(hidden[-1]))
            else:
                outs.append(hidden[self.num_layers if layer_index is None else layer_index])
        return (*outs, torch.stack(presents))

    def _position(self, x: torch.Tensor) -> torch.Tensor:
        """Positional convolution outputs of the new frames only (``[B, N, H]``)."""
        if self.spectral:  # 'same' padding over context + new: the new frames never reach the left pad
            out: torch.Tensor = self.pos_conv(x)[:, self.context :]
            return out
        conv = self.pos_conv.conv
        padded = torch.nn.functional.pad(x.transpose(1, 2), (0, self.right_pad))
        y = torch.nn.functional.conv1d(padded, conv.weight, conv.bias, groups=conv.groups)
        direct: torch.Tensor = self.pos_conv.activation(y).transpose(1, 2)
        return direct

    def _layer(self, layer: Any, h: torch.Tensor, past: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.stable:
            a, present = self._attend(layer.attention, layer.layer_norm(h), past, bias)
            h = h + a
            return h + layer.feed_forward(layer.final_layer_norm(h)), present
        a, present = self._attend(layer.attention, h, past, bias)
        h = layer.layer_norm(h + a)
        return layer.final_layer_norm(h + layer.feed_forward(h)), present

    def _attend(self, attn: Any, x: torch.Tensor, past: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # [B, heads, N, D]

        q, k, v = heads(attn.q_proj(x)), heads(attn.k_proj(x)), heads(attn.v_proj(x))
        keys = torch.cat([past[0], k], dim=2)
        values = torch.cat([past[1], v], dim=2)
        scores = torch.matmul(q, keys.transpose(2, 3)) * attn.scaling + bias[:, None, None, :]
        out = torch.matmul(torch.softmax(scores, dim=-1), values).transpose(1, 2).flatten(2)
        return attn.out_proj(out), torch.stack([k, v])


def _example(source: SourceModel, batch: int, past: int, new: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    cfg = source.hf_config
    g = torch.Generator().manual_seed(seed)
    p = context_frames(cfg)
    conv = torch.randn(batch, p + new, int(cfg.conv_dim[-1]), generator=g)
    kv = torch.randn(*kv_shape(source, batch, past), generator=g)
    return conv, torch.ones(batch, p), kv, torch.ones(batch, past)


def _trace(model: CachedEncoder, source: SourceModel, path: Path, opset: int) -> None:
    axes = {
        "conv_features": {0: "batch_size", 1: "context_and_new_frames"},
        "context_mask": {0: "batch_size"},
        PAST_NAME: {2: "batch_size", 4: "past_frames"},
        "past_mask": {0: "batch_size", 1: "past_frames"},
        **{n: {0: "batch_size", 1: "new_frames"} for n, _ in model.wanted},
        PRESENT_NAME: {2: "batch_size", 4: "new_frames"},
    }
    with torch.no_grad(), quiet_export():
        torch.onnx.export(
            model, _example(source, 2, 5, 7), str(path), input_names=_INPUTS, output_names=model.output_names,
            dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False,
        )


def export_cached(
    tmp: Path,
    config: Wav2Vec2ExportConfig,
    source: SourceModel,
    module: GraphModule,
    cases: Sequence[ValidationCase],
    report: Progress,
) -> dict[str, Any]:
    """Trace, convert and validate ``encoder_cached.onnx`` into ``tmp`` (beside ``frontend.onnx``).

    Validation: (1) with an empty past and no context the graph, fed by ``frontend.onnx``,
    must match the PyTorch references of the whole model (as the split pair; these figures
    are the returned report); (2) on a
    stream cut into chunks that carry their K/V forward, ONNX Runtime must match
    :class:`CachedEncoder` in PyTorch (fp32: max-abs ``atol``; int8/fp16: cosine), reported
    as ``chunked_vs_pytorch``.

    Raises:
        ToleranceError: A check failed (nothing is kept).
        UnsupportedArchitectureError: Adapters.
    """
    recipe = config.int8_recipe if config.precision == "int8" else None
    with recipe_pos_conv(source, recipe):  # the recipe's trace-time rewrites, as for encoder.onnx
        model = CachedEncoder(source, module).eval()
    final = tmp / CACHED_FILE
    traced = final if config.precision == "fp32" else final.with_suffix(".fp32.onnx")
    report("export cached encoder", 0, 1)
    _trace(model, source, traced, config.opset)
    if config.precision != "fp32":
        convert_graph(traced, final, config.precision, config.int8_recipe, source)
        traced.unlink()
    report("export cached encoder", 1, 1)
    if not config.validate:
        return {"skipped": True}
    from ostinato.export._w2v_graph import providers_for
    from ostinato.export._w2v_split import ort_session

    session = ort_session(final, providers_for(config.precision))
    mode = "exact" if config.precision == "fp32" else "cosine"
    empty = validate_runner(
        _empty_past_runner(tmp, source, session), cases, mode, atol=config.atol, min_cosine=config.min_cosine,
        provider=session.get_providers()[0], where=f"{CACHED_FILE} (empty past)", progress=report,
    )
    chunked = check_chunked(model, session, source, mode, config.atol, config.min_cosine)
    return {**empty, "chunked_vs_pytorch": chunked}


def _empty_past_runner(tmp: Path, source: SourceModel, session: Any) -> Callable[[npt.NDArray[np.float32], list[str]], dict[str, npt.NDArray[np.float32]]]:
    from ostinato.export._w2v_split import FRONTEND_FILE, conv_runner

    conv = conv_runner(tmp / FRONTEND_FILE, source, [session.get_providers()[0]])

    def run(x: npt.NDArray[np.float32], names: list[str]) -> dict[str, npt.NDArray[np.float32]]:
        return dict(zip(names, session.run(names, empty_feeds(source, conv(x))), strict=True))

    return run


def empty_feeds(source: SourceModel, conv: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float32]]:
    """Feeds that run ``conv [B, N, C]`` as a whole input: no context, no past."""
    cfg = source.hf_config
    b, _, c = conv.shape
    p = context_frames(cfg)
    past = np.zeros(kv_shape(source, b, 0), np.float32)
    return {
        "conv_features": np.concatenate([np.zeros((b, p, c), np.float32), conv], axis=1),
        "context_mask": np.zeros((b, p), np.float32),
        PAST_NAME: past,
        "past_mask": np.zeros((b, 0), np.float32),
    }


def check_chunked(
    model: CachedEncoder, session: Any, source: SourceModel, mode: str, atol: float, min_cosine: float,
    frames: int = 60, hop: int = 9, right: int = 4, seed: int = 1,
) -> dict[str, Any]:
    """Stream ``frames`` random conv frames in hops through ORT and PyTorch; compare every output.

    Each step runs ``hop + right`` new frames on the K/V of at most ``2 * hop`` earlier
    frames (real past frames are masked in for the second row only from its second step,
    so padding is exercised) and keeps the hop frames' present K/V.

    Raises:
        ToleranceError: ORT and PyTorch differ beyond the tolerance.
    """
    cfg = source.hf_config
    g = np.random.default_rng(seed)
    p = context_frames(cfg)
    conv = g.standard_normal((2, p + frames, int(cfg.conv_dim[-1]))).astype(np.float32)
    kv = np.zeros(kv_shape(source, 2, 0), np.float32)
    worst_abs, worst_cos = 0.0, 1.0
    for step, start in enumerate(range(0, frames - hop - right + 1, hop)):
        mask = np.ones((2, kv.shape[4]), np.float32)
        if step == 1:
            mask[1] = 0.0
        ctx = np.ones((2, p), np.float32)
        ctx[:, : max(0, p - start)] = 0.0
        feeds = {"conv_features": conv[:, start : start + p + hop + right], "context_mask": ctx, PAST_NAME: kv, "past_mask": mask}
        got = session.run(model.output_names, feeds)
        with torch.inference_mode():
            ref = [t.numpy() for t in model(*(torch.from_numpy(np.ascontiguousarray(v)) for v in feeds.values()))]
        for a, b in zip(got[:-1], ref[:-1], strict=True):
            worst_abs = max(worst_abs, float(np.max(np.abs(a - b))))
            worst_cos = min(worst_cos, float(frame_cosine(a, b).min()))
        kv = np.concatenate([kv, ref[-1][:, :, :, :, :hop]], axis=4)[:, :, :, :, -2 * hop :]
    figures = {"mode": mode, "max_abs_diff": worst_abs, "min_cosine": worst_cos, "frames": frames, "hop": hop}
    bad = worst_abs > atol if mode == "exact" else worst_cos < min_cosine
    if bad:
        error = ToleranceError(
            f"{CACHED_FILE} with a K/V past does not match its PyTorch reference: max abs diff "
            f"{worst_abs:.3g}, min cosine {worst_cos:.5f}; the model was not written",
            hint="export with --no-validate to keep it anyway, and report the figures in an issue",
        )
        error.report = figures
        raise error
    return figures


def cached_info(source: SourceModel) -> dict[str, Any]:
    """Manifest ``extra["cached_encoder"]``: what ``encoder_cached.onnx`` takes and gives."""
    cfg = source.hf_config
    layers, _, _, heads, _, head_dim = kv_shape(source, 1, 0)
    return {
        "file": CACHED_FILE,
        "inputs": list(_INPUTS),
        "present": PRESENT_NAME,
        "context_frames": context_frames(cfg),
        "num_layers": layers,
        "num_heads": heads,
        "head_dim": head_dim,
        "layout": "past/present_key_values [layers, 2 (key, value), batch, heads, frames, head_dim]; "
        "context_mask [batch, context_frames] and past_mask [batch, past_frames]: 1 real, 0 padding",
    }

