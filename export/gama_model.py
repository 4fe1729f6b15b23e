"""PyTorch port of GAMA's inference graph (released code, github.com/Sreyan88/GAMA @ 041c3a6).

Module attribute names match the keys of an official stage checkpoint after stripping the
``base_model.model.model.`` prefix (and the Q-Former renames applied by
:mod:`ostinato.export.gama_loader`), so ``load_state_dict`` works without a key map.

What runs, following ``modeling_llama.py``/``cavmae.py`` of the GAMA fork (see
``docs/gama.md`` and ``shared/GAMA.md`` for line numbers):

1. CAV-MAE audio branch: fbank ``[B,1024,128]`` → ``[B,1,128,1024]`` → 16×16 patches →
   ``[B,512,D]`` (frequency-major) + ``pos_embed_a`` + ``modality_a`` → ``blocks_a`` (plain
   norms) → ``blocks_u`` (``_a`` norms) → ``norm_a``. The upstream ``x + 0.0*(…)`` DDP
   workaround is a numerical no-op and is dropped; ``norm_j``/``norm_k`` outputs feed only the
   aggregator's cross-attention, whose result upstream discards, so they are not computed.
2. Frequency-mean pooling over the 8 frequency patches, divided by 50 → ``[B,64,D]``.
3. Two BERT layers (self-attention + FFN, post-LN) — the "multi-layer aggregator".
4. Q-Former (``Blip2QFormerModel``) over ``qformer_proj_norm(pooled)`` with 32 query tokens.
5. Projectors (non-affine LayerNorm → Linear → GELU → Linear) → ``cat([q, agg]) = [B,96,H]``.
6. Llama decoder (``LlamaForCausalLM``) on ``cat(audio, embed(prompt ids))``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from transformers import Blip2QFormerConfig, LlamaConfig, LlamaForCausalLM
from transformers.models.blip_2.modeling_blip_2 import Blip2QFormerModel

__all__ = [
    "AUDIO_POOL_DIVISOR",
    "GamaAudioConfig",
    "GamaAudioModel",
    "GamaConfig",
    "GamaReference",
    "PROMPT_TEMPLATE",
    "format_prompt",
    "preset_config",
]

PROMPT_TEMPLATE = "### Instruction:\n{instruction}\n\n### Response:\n"
"""``templates/alpaca_short.json`` of the GAMA repository (``utils/prompter.py``)."""

AUDIO_POOL_DIVISOR = 50.0
"""Upstream divides the frequency-mean-pooled encoder output by 50 (``modeling_llama.py``)."""


def format_prompt(instruction: str) -> str:
    """Return GAMA's prompt for one instruction (no audio tokens: audio is prepended as embeds)."""
    return PROMPT_TEMPLATE.format(instruction=instruction)


@dataclasses.dataclass(frozen=True, slots=True)
class GamaAudioConfig:
    """Sizes of the audio side (CAV-MAE branch, aggregator, Q-Former, projectors).

    Defaults are the released model's. ``num_mel_bins``/``target_frames``/``patch_size`` fix
    the 8×64 patch grid that ``pos_embed_a`` covers; they are not free parameters of a trained
    checkpoint.
    """

    embed_dim: int = 768
    num_heads: int = 12
    mlp_dim: int = 3072
    depth_a: int = 11
    depth_u: int = 1
    encoder_eps: float = 1e-5
    agg_heads: int = 12
    agg_intermediate: int = 3072
    bert_eps: float = 1e-12
    qformer_hidden: int = 768
    qformer_layers: int = 12
    qformer_heads: int = 12
    qformer_intermediate: int = 3072
    cross_attention_frequency: int = 2
    num_query_tokens: int = 32
    proj_norm_eps: float = 1e-5
    num_mel_bins: int = 128
    target_frames: int = 1024
    patch_size: int = 16

    def __post_init__(self) -> None:
        for name in ("embed_dim", "num_heads", "mlp_dim", "depth_a", "qformer_hidden",
                     "qformer_layers", "num_query_tokens", "agg_heads", "qformer_heads"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}={getattr(self, name)}; expected a positive integer")
        for dim, heads in ((self.embed_dim, self.num_heads), (self.embed_dim, self.agg_heads),
                           (self.qformer_hidden, self.qformer_heads)):
            if dim % heads:
                raise ValueError(f"hidden size {dim} is not divisible by {heads} heads")
        if self.num_mel_bins % self.patch_size or self.target_frames % self.patch_size:
            raise ValueError(
                f"num_mel_bins={self.num_mel_bins}, target_frames={self.target_frames} must be "
                f"multiples of patch_size={self.patch_size}"
            )

    @property
    def freq_patches(self) -> int:
        """Patches along frequency (8 for 128 mel bins)."""
        return self.num_mel_bins // self.patch_size

    @property
    def time_patches(self) -> int:
        """Patches along time (64 for 1024 frames): the aggregator's token count."""
        return self.target_frames // self.patch_size

    @property
    def num_audio_tokens(self) -> int:
        """Audio embeddings prepended to the prompt (96 for the released model)."""
        return self.num_query_tokens + self.time_patches


@dataclasses.dataclass(frozen=True, slots=True)
class GamaConfig:
    """A whole GAMA model: audio side plus the Llama decoder's ``config.json`` fields."""

    audio: GamaAudioConfig
    llama: dict[str, Any]

    def __post_init__(self) -> None:
        for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if key not in self.llama:
                raise ValueError(f"llama config lacks {key!r}; expected a Llama config.json")

    @property
    def hidden_size(self) -> int:
        """The decoder's hidden size (4096 for Llama-2-7B) = audio embedding width."""
        return int(self.llama["hidden_size"])

    def llama_config(self) -> LlamaConfig:
        """Build the ``transformers`` config for the decoder."""
        cfg = LlamaConfig(**self.llama)
        cfg.use_cache = True
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for the manifest)."""
        return {"audio": dataclasses.asdict(self.audio), "llama": dict(self.llama)}


_LLAMA_2_7B = {
    "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
    "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu",
    "tie_word_embeddings": False,
}


def preset_config(name: str, vocab_size: int | None = None) -> GamaConfig:
    """Return a named configuration.

    Args:
        name: ``"full"`` (the released sizes: CAV-MAE base + Llama-2-7B), ``"tiny"`` (tests:
            hidden 32–64, 2 layers), or ``"1b"`` (full audio side + a ~1B-parameter Llama, for
            benchmarks on machines that cannot hold 7B).
        vocab_size: Override the decoder vocabulary (random-init tokenizers are smaller).

    Raises:
        ValueError: Unknown preset name.
    """
    if name == "full":
        audio, llama = GamaAudioConfig(), dict(_LLAMA_2_7B)
    elif name == "1b":
        audio = GamaAudioConfig()
        llama = dict(_LLAMA_2_7B, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                     num_attention_heads=16, num_key_value_heads=16)
    elif name == "tiny":
        audio = GamaAudioConfig(
            embed_dim=32, num_heads=2, mlp_dim=64, depth_a=2, agg_heads=2, agg_intermediate=64,
            qformer_hidden=32, qformer_layers=2, qformer_heads=2, qformer_intermediate=64,
        )
        llama = dict(_LLAMA_2_7B, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024)
    else:
        raise ValueError(f"config={name!r}; expected one of ('tiny', '1b', 'full')")
    if vocab_size is not None:
        llama["vocab_size"] = int(vocab_size)
    return GamaConfig(audio=audio, llama=llama)


# --------------------------------------------------------------------------- CAV-MAE branch
class _PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(1, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class _Attention(nn.Module):
    """timm 0.4.5 ``Attention``: fused qkv with bias, scale head_dim**-0.5."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _Block(nn.Module):
    """CAV-MAE ``Block`` with its three norm pairs (plain, ``_a`` audio, ``_v`` visual)."""

    def __init__(self, dim: int, heads: int, mlp_dim: int, eps: float, modality: str | None) -> None:
        super().__init__()
        for suffix in ("", "_a", "_v"):
            setattr(self, f"norm1{suffix}", nn.LayerNorm(dim, eps=eps))
            setattr(self, f"norm2{suffix}", nn.LayerNorm(dim, eps=eps))
        self.attn = _Attention(dim, heads)
        self.mlp = _Mlp(dim, mlp_dim)
        self._suffix = "_a" if modality == "a" else ""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm1: nn.Module = getattr(self, "norm1" + self._suffix)
        norm2: nn.Module = getattr(self, "norm2" + self._suffix)
        x = x + self.attn(norm1(x))
        return x + self.mlp(norm2(x))  # upstream adds 0.0*(all six norms): a no-op, dropped


class CavMaeAudioEncoder(nn.Module):
    """CAV-MAE fine-tuning model, audio branch (``cavmae.py`` ``CAVMAEFTAudio``)."""

    def __init__(self, cfg: GamaAudioConfig) -> None:
        super().__init__()
        dim, num_patches = cfg.embed_dim, cfg.freq_patches * cfg.time_patches
        self.patch_embed_a = _PatchEmbed(dim, cfg.patch_size)
        self.pos_embed_a = nn.Parameter(torch.zeros(1, num_patches, dim))
        self.modality_a = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks_a = nn.ModuleList(
            _Block(dim, cfg.num_heads, cfg.mlp_dim, cfg.encoder_eps, None) for _ in range(cfg.depth_a)
        )
        self.blocks_u = nn.ModuleList(
            _Block(dim, cfg.num_heads, cfg.mlp_dim, cfg.encoder_eps, "a") for _ in range(cfg.depth_u)
        )
        self.norm_a = nn.LayerNorm(dim, eps=cfg.encoder_eps)
        # Loaded for key accounting; they only feed the aggregator's discarded cross-attention.
        self.norm_j = nn.LayerNorm(dim, eps=cfg.encoder_eps)
        self.norm_k = nn.LayerNorm(dim, eps=cfg.encoder_eps)

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """``[B,T,F]`` normalised fbank → ``[B, F/16 * T/16, D]`` (frequency-major patches)."""
        x = fbank.unsqueeze(1).transpose(2, 3)
        x = self.patch_embed_a(x) + self.pos_embed_a + self.modality_a
        for blk in self.blocks_a:
            x = blk(x)
        for blk in self.blocks_u:
            x = blk(x)
        return self.norm_a(x)


# --------------------------------------------------------------------------- aggregator
class _BertSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = (q @ k.transpose(-1, -2)) * self.scale
        ctx = scores.softmax(dim=-1) @ v
        return ctx.transpose(1, 2).reshape(b, n, c)


class _BertOutput(nn.Module):
    """``dense`` → (dropout) → ``LayerNorm(out + residual)`` (BertSelfOutput / BertOutput)."""

    def __init__(self, dim_in: int, dim: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(dim_in, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=eps)  # noqa: N815 - checkpoint key name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        setattr(self, "self", _BertSelfAttention(dim, heads))  # checkpoint key: attention.self.*
        self.output = _BertOutput(dim, dim, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(getattr(self, "self")(x), x)


class _BertIntermediate(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, hidden)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class AggregatorLayer(nn.Module):
    """GAMA's ``audio_aggregator_layer_{1,2}`` (a LAVIS ``BertLayer`` with cross-attention).

    Upstream computes ``crossattention(…, encoder_hidden_states=aj|ak)`` but feeds the FFN with
    the self-attention output (``modeling_llama.py:650-668``), so only self-attention +
    ``intermediate``/``output`` affect the result. ``crossattention``, ``intermediate_query``
    and ``output_query`` exist so that checkpoints load with strict key accounting.
    """

    def __init__(self, dim: int, heads: int, intermediate: int, eps: float) -> None:
        super().__init__()
        self.attention = _BertAttention(dim, heads, eps)
        self.crossattention = _BertAttention(dim, heads, eps)
        self.intermediate = _BertIntermediate(dim, intermediate)
        self.output = _BertOutput(intermediate, dim, eps)
        self.intermediate_query = _BertIntermediate(dim, intermediate)
        self.output_query = _BertOutput(intermediate, dim, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.attention(x)
        return self.output(self.intermediate(attn), attn)


# --------------------------------------------------------------------------- audio model
class _QFormerHolder(nn.Module):
    """Keeps the upstream ``Qformer.bert.*`` key path around ``Blip2QFormerModel``."""

    def __init__(self, cfg: GamaAudioConfig) -> None:
        super().__init__()
        qcfg = Blip2QFormerConfig(
            hidden_size=cfg.qformer_hidden, num_hidden_layers=cfg.qformer_layers,
            num_attention_heads=cfg.qformer_heads, intermediate_size=cfg.qformer_intermediate,
            hidden_act="gelu", layer_norm_eps=cfg.bert_eps,
            cross_attention_frequency=cfg.cross_attention_frequency,
            encoder_hidden_size=cfg.embed_dim, vocab_size=2,
        )
        qcfg._attn_implementation = "eager"
        self.bert = Blip2QFormerModel(qcfg)


def _projector(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim_out), nn.GELU(), nn.Linear(dim_out, dim_out))


class GamaAudioModel(nn.Module):
    """The whole audio side: normalised fbank ``[B,1024,128]`` → audio embeds ``[B,96,H]``."""

    def __init__(self, cfg: GamaAudioConfig, llm_hidden: int) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = CavMaeAudioEncoder(cfg)
        self.audio_aggregator_layer_1 = AggregatorLayer(cfg.embed_dim, cfg.agg_heads,
                                                        cfg.agg_intermediate, cfg.bert_eps)
        self.audio_aggregator_layer_2 = AggregatorLayer(cfg.embed_dim, cfg.agg_heads,
                                                        cfg.agg_intermediate, cfg.bert_eps)
        self.Qformer = _QFormerHolder(cfg)  # noqa: N815 - checkpoint key name
        self.query_tokens = nn.Parameter(torch.zeros(1, cfg.num_query_tokens, cfg.qformer_hidden))
        self.qformer_proj_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.proj_norm_eps)
        self.qformer_out_norm = nn.LayerNorm(cfg.qformer_hidden, elementwise_affine=False)
        self.audioenc_out_norm = nn.LayerNorm(cfg.embed_dim, elementwise_affine=False)
        self.audio_proj_qformer = _projector(cfg.qformer_hidden, llm_hidden)
        self.audio_proj_audioenc = _projector(cfg.embed_dim, llm_hidden)

    def pool(self, encoded: torch.Tensor) -> torch.Tensor:
        """``[B, 8*64, D]`` → mean over the 8 frequency patches, ÷50 → ``[B, 64, D]``."""
        b, _, d = encoded.shape
        grid = encoded.reshape(b, self.cfg.freq_patches, self.cfg.time_patches, d)
        return grid.mean(dim=1) / AUDIO_POOL_DIVISOR

    def forward(self, fbank: torch.Tensor) -> torch.Tensor:
        """Normalised fbank ``[B,1024,128]`` (float32) → audio embeds ``[B,96,H]``."""
        pooled = self.pool(self.audio_encoder(fbank))
        agg = self.audio_aggregator_layer_2(self.audio_aggregator_layer_1(pooled))
        queries = self.query_tokens.expand(fbank.shape[0], -1, -1)
        q = self.Qformer.bert(
            query_embeds=queries, encoder_hidden_states=self.qformer_proj_norm(pooled),
            return_dict=True,
        ).last_hidden_state
        q_embeds = self.audio_proj_qformer(self.qformer_out_norm(q))
        a_embeds = self.audio_proj_audioenc(self.audioenc_out_norm(agg))
        return torch.cat([q_embeds, a_embeds], dim=1)


class GamaReference(nn.Module):
    """Audio model + Llama decoder: the PyTorch reference the ONNX export is checked against.

    Attribute ``model`` holds the audio modules so that ``named_parameters`` of ``model.*``
    match the checkpoint layout; ``llm`` is a stock ``LlamaForCausalLM``.
    """

    def __init__(self, cfg: GamaConfig, llm: LlamaForCausalLM | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = GamaAudioModel(cfg.audio, cfg.hidden_size)
        self.llm = llm if llm is not None else LlamaForCausalLM(cfg.llama_config())

    def prefill_embeds(self, fbank: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """``cat(audio_embeds, embed_tokens(input_ids))``: audio goes before BOS."""
        audio = self.model(fbank)
        text = self.llm.get_input_embeddings()(input_ids)
        return torch.cat([audio, text], dim=1)

    @torch.no_grad()
    def generate_greedy(
        self, fbank: torch.Tensor, input_ids: torch.Tensor, max_new_tokens: int
    ) -> list[int]:
        """Greedy decoding with ``transformers``' own ``generate`` (the reference loop).

        Positions are contiguous (``0…95`` audio, ``96…`` text), as upstream.
        """
        embeds = self.prefill_embeds(fbank, input_ids)
        mask = torch.ones(embeds.shape[:2], dtype=torch.long)
        out = self.llm.generate(
            inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
            do_sample=False, num_beams=1, eos_token_id=self.cfg.llama.get("eos_token_id", 2),
            pad_token_id=self.cfg.llama.get("pad_token_id", 0),
        )
        return [int(t) for t in out[0].tolist()]
