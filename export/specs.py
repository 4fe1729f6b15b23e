"""Declarative facts about the Wav2Vec2 export: names, axes, tolerances, random configs.

Data only (no torch import at module level), so the CLI can validate options and print
help without loading the export stack.

Layer numbering follows Hugging Face ``hidden_states``: layer 0 is the input to the first
transformer layer (after the feature projection and the positional convolution; for the
``group``-norm variant also after the encoder layer norm), layer ``L`` is the output of
transformer layer ``L``, and layer ``num_layers`` equals ``last_hidden_state``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "DEFAULT_OPSET",
    "FP32_ATOL",
    "INPUT_NAME",
    "LOGITS_NAME",
    "LAST_HIDDEN_NAME",
    "MIN_COSINE",
    "PRECISIONS",
    "RANDOM_MODELS",
    "RECEPTIVE_FIELD_SAMPLES",
    "SAMPLE_RATE",
    "FRAME_STRIDE_SAMPLES",
    "TASKS",
    "DEFAULT_CTC_VOCAB",
    "hidden_state_name",
    "random_config_kwargs",
]

SAMPLE_RATE = 16_000
FRAME_STRIDE_SAMPLES = 320
RECEPTIVE_FIELD_SAMPLES = 400

TASKS = ("features", "ctc")
PRECISIONS = ("fp32", "fp16", "int8")
RANDOM_MODELS = ("random:base", "random:large", "random:tiny")

# Opset 17 has LayerNormalization as a single op (fewer nodes for ORT to fuse) and is
# supported by every ONNX Runtime release since 1.14.
DEFAULT_OPSET = 17
MIN_OPSET = 14
MAX_OPSET = 20

FP32_ATOL = 1e-4
MIN_COSINE = 0.99

INPUT_NAME = "input_values"
LAST_HIDDEN_NAME = "last_hidden_state"
LOGITS_NAME = "logits"

# Dynamic axes of every graph: batch and audio samples in, batch and frames out.
INPUT_AXES = {0: "batch_size", 1: "num_samples"}
OUTPUT_AXES = {0: "batch_size", 1: "num_frames"}

# The convolutional front end shared by every Wav2Vec2 checkpoint: total stride 320
# samples, receptive field 400 samples at 16 kHz.
_CONV_KERNEL = (10, 3, 3, 3, 3, 2, 2)
_CONV_STRIDE = (5, 2, 2, 2, 2, 2, 2)

# Character vocabulary of facebook/wav2vec2-base-960h, used for random CTC heads.
DEFAULT_CTC_VOCAB = (
    "<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D",
    "L", "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z",
)  # fmt: skip

_RANDOM_CONFIGS: dict[str, dict[str, Any]] = {
    # Small enough that export + validation take about a second: for tests.
    "random:tiny": {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "conv_dim": (32,) * 7,
        "num_conv_pos_embeddings": 16,
        "num_conv_pos_embedding_groups": 2,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
    },
    # facebook/wav2vec2-base: 12 layers, 768 wide, GroupNorm in the first conv layer.
    "random:base": {
        "hidden_size": 768,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "intermediate_size": 3072,
        "conv_dim": (512,) * 7,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "feat_extract_norm": "group",
        "do_stable_layer_norm": False,
    },
    # facebook/wav2vec2-large-lv60: 24 layers, 1024 wide, LayerNorm everywhere, pre-LN.
    "random:large": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "conv_dim": (512,) * 7,
        "conv_bias": True,
        "num_conv_pos_embeddings": 128,
        "num_conv_pos_embedding_groups": 16,
        "feat_extract_norm": "layer",
        "do_stable_layer_norm": True,
    },
}


def random_config_kwargs(name: str) -> dict[str, Any]:
    """Return ``Wav2Vec2Config`` keyword arguments for a ``random:*`` model name.

    Args:
        name: One of :data:`RANDOM_MODELS`.

    Returns:
        A fresh dictionary (callers may change it).

    Raises:
        ValueError: ``name`` is not a known random model.
    """
    if name not in _RANDOM_CONFIGS:
        raise ValueError(f"model={name!r}; expected a directory or one of {RANDOM_MODELS}")
    kwargs = dict(_RANDOM_CONFIGS[name])
    kwargs.update(
        conv_kernel=_CONV_KERNEL,
        conv_stride=_CONV_STRIDE,
        vocab_size=len(DEFAULT_CTC_VOCAB),
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        # Dropout and SpecAugment are training-only; zero them so nothing depends on mode.
        hidden_dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
        feat_proj_dropout=0.0,
        layerdrop=0.0,
        apply_spec_augment=False,
    )
    return kwargs


def hidden_state_name(layer: int) -> str:
    """Return the ONNX output name of hidden layer ``layer`` (``hidden_state_<L>``)."""
    return f"hidden_state_{layer}"
