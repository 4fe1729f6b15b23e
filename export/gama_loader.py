"""Load an official GAMA release into :class:`~ostinato.export.gama_model.GamaReference`.

A release is two things (``gama_inf.py:198-228``):

* the base folder ``Llama-2-7b-chat-hf-qformer/``: ``config.json``, ``tokenizer.model`` and
  safetensors shards with the Llama weights (``model.layers.*``, ``model.embed_tokens``,
  ``model.norm``, ``lm_head``) plus audio-side shards (``model.audio_encoder.*``,
  ``model.Qformer.*``, ``model.query_tokens``, ``model.qformer_proj_norm.*``);
* a stage checkpoint ``pytorch_model.bin`` whose keys all start with
  ``base_model.model.model.``: every audio-side weight (it overrides the base folder's) and the
  LoRA adapters ``layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.default.weight``.

LoRA is merged: ``W += (alpha / r) · B @ A`` (peft ``r=8, alpha=16`` → scaling 2.0).
Accounting is strict: every model tensor must come from somewhere and every checkpoint tensor
must land somewhere or be on the short list of explained leftovers; otherwise
:class:`~ostinato.export.errors.CheckpointMismatchError` lists them all.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ostinato.export.errors import CheckpointMismatchError, SourceModelError
from ostinato.export.gama_model import GamaAudioConfig, GamaConfig, GamaReference

__all__ = [
    "LORA_ALPHA",
    "LoadReport",
    "STAGE_PREFIX",
    "infer_audio_config",
    "load_gama",
    "read_llama_config",
    "rename_audio_key",
]

logger = logging.getLogger(__name__)

STAGE_PREFIX = "base_model.model.model."
LORA_ALPHA = 16.0
"""peft ``LoraConfig(lora_alpha=16)`` in ``gama_inf.py``; ``r`` is read from the tensors."""

_AUDIO_ROOTS = ("audio_encoder.", "Qformer.", "query_tokens", "qformer_proj_norm.",
                "audio_aggregator_layer_", "audio_proj_")
_LORA_RE = re.compile(r"^layers\.(\d+)\.self_attn\.([qv])_proj\.lora_([AB])(?:\.default)?\.weight$")
# Leftovers that are explained and safe to drop (with the reason shown in the report).
_EXPLAINED = (
    (re.compile(r"^Qformer\.bert\.embeddings\.position_ids$"), "Q-Former text position ids (no text path)"),
    (re.compile(r"rotary_emb\.inv_freq$"), "rotary table, recomputed from config"),
)

Progress = Callable[[str, float, float], None]


@dataclasses.dataclass(slots=True)
class LoadReport:
    """What the loader did; ``summary()`` is what the CLI prints."""

    loaded_audio: int = 0
    loaded_llm: int = 0
    overridden_by_stage: int = 0
    lora_merged: list[str] = dataclasses.field(default_factory=list)
    lora_scaling: float = 0.0
    ignored: dict[str, str] = dataclasses.field(default_factory=dict)
    notes: list[str] = dataclasses.field(default_factory=list)

    def summary(self) -> str:
        """A few lines for humans."""
        lines = [
            f"loaded {self.loaded_audio} audio-side and {self.loaded_llm} Llama tensors "
            f"({self.overridden_by_stage} audio tensors from the stage checkpoint)",
            f"merged LoRA into {len(self.lora_merged)} projections (scaling {self.lora_scaling:g})",
        ]
        lines += [f"ignored {k}: {why}" for k, why in sorted(self.ignored.items())]
        return "\n".join(lines + self.notes)


def rename_audio_key(key: str) -> str:
    """Map an upstream audio-side key (prefix stripped) to this port's parameter name.

    Only the Q-Former needs renames, the same ones HF's ``convert_blip_2_original_to_pytorch``
    applies: ``embeddings.LayerNorm`` → ``layernorm``, ``.attention.self.`` →
    ``.attention.attention.``, ``.crossattention.self.`` → ``.crossattention.attention.``.
    """
    if not key.startswith("Qformer."):
        return key
    key = key.replace("Qformer.bert.embeddings.LayerNorm.", "Qformer.bert.layernorm.")
    key = key.replace(".crossattention.self.", ".crossattention.attention.")
    return key.replace(".attention.self.", ".attention.attention.")


def _explained(key: str) -> str | None:
    for pattern, why in _EXPLAINED:
        if pattern.search(key):
            return why
    return None


def _is_audio(key: str) -> bool:
    return key.startswith(_AUDIO_ROOTS)


def read_llama_config(base_dir: Path) -> dict[str, object]:
    """Read the release's ``config.json`` (the Llama decoder's settings).

    Raises:
        SourceModelError: Missing or not JSON.
    """
    path = base_dir / "config.json"
    if not path.is_file():
        raise SourceModelError(f"{str(path)!r} not found: {str(base_dir)!r} is not a GAMA base folder",
                               hint="pass the unzipped Llama-2-7b-chat-hf-qformer folder as --base")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SourceModelError(f"{str(path)!r} is not valid JSON: {e}") from e
    # The fork's config may carry extra fields; keep the plain JSON values only.
    return {k: v for k, v in data.items() if isinstance(v, (int, float, str, bool, type(None)))}


def _shard_paths(base_dir: Path) -> list[Path]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        paths = [base_dir / n for n in names]
        # The audio shards (00003/00004-of-00002) are not always in the index upstream.
        paths += [p for p in sorted(base_dir.glob("*.safetensors")) if p not in paths]
    else:
        paths = sorted(base_dir.glob("*.safetensors"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing or not paths:
        raise SourceModelError(f"safetensors shards missing in {str(base_dir)!r}: {missing or 'none found'}")
    return paths


def _iter_base(base_dir: Path) -> Iterator[tuple[str, torch.Tensor]]:
    from safetensors import safe_open

    for path in _shard_paths(base_dir):
        try:
            with safe_open(str(path), framework="pt") as f:
                for key in f.keys():
                    yield key, f.get_tensor(key)
        except Exception as e:  # safetensors raises its own SafetensorError
            raise SourceModelError(f"cannot read {str(path)!r}: {e}") from e


def _read_stage(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise SourceModelError(f"stage checkpoint {str(path)!r} not found",
                               hint="pass checkpoint-XXXX/pytorch_model.bin as --checkpoint")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # pickle/zip errors of a damaged file
        raise SourceModelError(f"cannot read stage checkpoint {str(path)!r}: {e}") from e
    if not isinstance(state, dict):
        raise SourceModelError(f"{str(path)!r} holds {type(state).__name__}; expected a state dict")
    return state


def infer_audio_config(shapes: dict[str, tuple[int, ...]], head_dim: int = 64) -> GamaAudioConfig:
    """Derive audio-side sizes from checkpoint tensor shapes (prefix-stripped keys).

    Head counts are not stored in a checkpoint; they are ``hidden // head_dim`` (64 in
    CAV-MAE and bert-base).
    """
    def count(pattern: str) -> int:
        idx = {int(m.group(1)) for k in shapes if (m := re.match(pattern, k))}
        return max(idx) + 1 if idx else 0

    try:
        dim = shapes["audio_encoder.pos_embed_a"][2]
        q_hidden = shapes["query_tokens"][2]
        cross = sorted({int(m.group(1)) for k in shapes
                        if (m := re.match(r"Qformer\.bert\.encoder\.layer\.(\d+)\.crossattention\.", k))})
        q_layers = count(r"Qformer\.bert\.encoder\.layer\.(\d+)\.")
        # One cross-attention layer (index 0) means the frequency is at least the depth.
        freq = cross[1] - cross[0] if len(cross) > 1 else max(q_layers, 1)
        return GamaAudioConfig(
            embed_dim=dim, num_heads=max(1, dim // head_dim),
            mlp_dim=shapes["audio_encoder.blocks_a.0.mlp.fc1.weight"][0],
            depth_a=count(r"audio_encoder\.blocks_a\.(\d+)\."),
            depth_u=count(r"audio_encoder\.blocks_u\.(\d+)\."),
            agg_heads=max(1, dim // head_dim),
            agg_intermediate=shapes["audio_aggregator_layer_1.intermediate.dense.weight"][0],
            qformer_hidden=q_hidden, qformer_heads=max(1, q_hidden // head_dim),
            qformer_layers=q_layers,
            qformer_intermediate=shapes["Qformer.bert.encoder.layer.0.intermediate_query.dense.weight"][0],
            cross_attention_frequency=freq,
            num_query_tokens=shapes["query_tokens"][1],
        )
    except (KeyError, IndexError) as e:
        raise CheckpointMismatchError(f"cannot infer the audio-side sizes: tensor {e} is missing") from e


def _merge_lora(llm_state: dict[str, torch.Tensor], lora: dict[tuple[int, str, str], torch.Tensor],
                alpha: float, report: LoadReport) -> None:
    pairs = sorted({(i, p) for i, p, _ in lora})
    unpaired = [f"layers.{i}.{p}_proj.lora_{ab}" for i, p in pairs for ab in "AB" if (i, p, ab) not in lora]
    if unpaired:
        raise CheckpointMismatchError(f"LoRA tensors without their partner: {unpaired}")
    for i, p in pairs:
        a, b = lora[(i, p, "A")].float(), lora[(i, p, "B")].float()
        key = f"model.layers.{i}.self_attn.{p}_proj.weight"
        if key not in llm_state:
            raise CheckpointMismatchError(f"LoRA for {key!r} but the base model has no such weight")
        w = llm_state[key]
        if b.shape[1] != a.shape[0] or (b.shape[0], a.shape[1]) != tuple(w.shape):
            raise CheckpointMismatchError(
                f"LoRA shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit {key} {tuple(w.shape)}")
        scaling = alpha / a.shape[0]
        llm_state[key] = w + scaling * (b @ a)
        report.lora_scaling = scaling
        report.lora_merged.append(key)


def _collect(base_dir: Path, stage: dict[str, torch.Tensor], report: LoadReport
             ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor],
                        dict[tuple[int, str, str], torch.Tensor], list[str]]:
    audio: dict[str, torch.Tensor] = {}
    llm: dict[str, torch.Tensor] = {}
    lora: dict[tuple[int, str, str], torch.Tensor] = {}
    unexpected: list[str] = []
    for key, tensor in _iter_base(base_dir):
        name = key.removeprefix("model.")
        if (why := _explained(key)) is not None:
            report.ignored[key] = why
        elif key == "lm_head.weight" or (key.startswith("model.") and not _is_audio(name)):
            llm[key] = tensor.float()
        elif key.startswith("model.") and _is_audio(name):
            audio[rename_audio_key(name)] = tensor.float()
        else:
            unexpected.append(f"base:{key}")
    for key, tensor in stage.items():
        name = key.removeprefix(STAGE_PREFIX)
        if not key.startswith(STAGE_PREFIX):
            unexpected.append(f"stage:{key}")
        elif (why := _explained(name)) is not None:
            report.ignored[key] = why
        elif (m := _LORA_RE.match(name)) is not None:
            lora[(int(m.group(1)), m.group(2), m.group(3))] = tensor
        elif _is_audio(name):
            report.overridden_by_stage += rename_audio_key(name) in audio
            audio[rename_audio_key(name)] = tensor.float()
        else:
            unexpected.append(f"stage:{key}")
    return audio, llm, lora, unexpected


def _assign(ref: GamaReference, state: dict[str, torch.Tensor]) -> list[str]:
    """Load with ``assign=True`` (no second copy); return the names still missing."""
    expected = ref.state_dict(keep_vars=True)
    missing = sorted(set(expected) - set(state))
    tied = ref.cfg.llama.get("tie_word_embeddings", False)
    if tied and "llm.lm_head.weight" in missing:
        missing.remove("llm.lm_head.weight")
    bad = [f"{k}: checkpoint {tuple(t.shape)} vs model {tuple(expected[k].shape)}"
           for k, t in state.items() if k in expected and tuple(t.shape) != tuple(expected[k].shape)]
    if bad:
        raise CheckpointMismatchError(f"{len(bad)} tensors have the wrong shape: {bad[:20]}")
    ref.load_state_dict(state, strict=False, assign=True)
    if tied:
        ref.llm.tie_weights()
    return missing


def load_gama(
    base_dir: str | Path,
    checkpoint: str | Path,
    *,
    audio_config: GamaAudioConfig | None = None,
    lora_alpha: float = LORA_ALPHA,
    progress: Progress | None = None,
) -> tuple[GamaReference, LoadReport]:
    """Build the PyTorch reference from a base folder and a stage checkpoint.

    Args:
        base_dir: The ``Llama-2-7b-chat-hf-qformer`` folder (config.json + safetensors).
        checkpoint: The stage checkpoint ``pytorch_model.bin``.
        audio_config: Audio-side sizes; inferred from tensor shapes when ``None``.
        lora_alpha: peft ``lora_alpha``; the merge scaling is ``lora_alpha / r``.
        progress: Optional ``(step, done, total)`` callback.

    Returns:
        The model in fp32 eval mode, and what was loaded, merged and ignored.

    Raises:
        SourceModelError: Files missing or unreadable.
        CheckpointMismatchError: Missing, unexpected or mis-shaped tensors (all listed).
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    base_dir, report = Path(base_dir), LoadReport()
    llama = read_llama_config(base_dir)
    stage = _read_stage(Path(checkpoint))
    if progress:
        progress("read checkpoint", 0, 3)
    audio, llm, lora, unexpected = _collect(base_dir, stage, report)
    if unexpected:
        raise CheckpointMismatchError(f"{len(unexpected)} unexplained tensors: {sorted(unexpected)}")
    if audio_config is None:
        audio_config = infer_audio_config({k: tuple(v.shape) for k, v in audio.items()})
    if progress:
        progress("read checkpoint", 1, 3)
    cfg = GamaConfig(audio=audio_config, llama=llama)
    if not lora:
        report.notes.append("the stage checkpoint has no LoRA tensors: decoder = base Llama")
    _merge_lora(llm, lora, lora_alpha, report)
    with torch.device("meta"):
        ref = GamaReference(cfg)
    state = {f"model.{k}": v for k, v in audio.items()} | {f"llm.{k}": v for k, v in llm.items()}
    missing = _assign(ref, state)
    unused = sorted(set(state) - set(ref.state_dict()))
    if missing or unused:
        raise CheckpointMismatchError(
            f"missing {len(missing)} tensors {missing[:40]}; unexpected {len(unused)} {unused[:40]}")
    # Non-persistent buffers were created on the meta device: rebuild them from the config.
    ref.llm.model.rotary_emb = LlamaRotaryEmbedding(config=ref.llm.config)
    still_meta = [n for n, t in [*ref.named_parameters(), *ref.named_buffers()] if t.is_meta]
    if still_meta:
        raise CheckpointMismatchError(f"tensors left uninitialised: {still_meta[:20]}")
    report.loaded_audio, report.loaded_llm = len(audio), len(llm)
    if progress:
        progress("read checkpoint", 3, 3)
    logger.info("GAMA checkpoint loaded: %s", report.summary())
    return ref.eval(), report
