"""Loading the PyTorch side of a Wav2Vec2 export: source model, vocabulary, graph module."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from ostinato.export import specs
from ostinato.export.errors import SourceModelError, UnsupportedArchitectureError
from ostinato.runtime.manifest import OutputSpec

__all__ = ["GraphModule", "SourceModel", "load_source", "onnx_graph_module"]

logger = logging.getLogger(__name__)

_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
# Keys a checkpoint may lack without changing inference (SpecAugment's mask embedding).
_HARMLESS_MISSING = ("masked_spec_embed",)
_TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json")


@dataclasses.dataclass(slots=True)
class SourceModel:
    """The PyTorch model to export and what the manifest needs to know about it."""

    model: torch.nn.Module
    hf_config: Any
    task: str
    description: str
    random_init: bool
    do_normalize: bool
    vocab: dict[str, int] | None = None
    tokenizer_config: dict[str, Any] | None = None
    extra_tokenizer_files: tuple[Path, ...] = ()

    @property
    def num_layers(self) -> int:
        """Transformer layers of the encoder."""
        return int(self.hf_config.num_hidden_layers)

    @property
    def num_parameters(self) -> int:
        """Parameter count (sizes the disk-space check)."""
        return sum(p.numel() for p in self.model.parameters())

    @property
    def ctc_info(self) -> dict[str, Any]:
        """Manifest ``extra`` entries the runtime's greedy CTC decoder needs (empty for features)."""
        if self.vocab is None:
            return {}
        tok = self.tokenizer_config or {}
        pad = str(tok.get("pad_token", "<pad>"))
        return {
            "blank_id": self.vocab.get(pad, int(self.hf_config.pad_token_id or 0)),
            "pad_token": pad,
            "unk_token": str(tok.get("unk_token", "<unk>")),
            "word_delimiter_token": str(tok.get("word_delimiter_token", "|")),
            "do_lower_case": bool(tok.get("do_lower_case", False)),
            "vocab_size": len(self.vocab),
        }

    def write_vocab(self, directory: Path) -> dict[str, str]:
        """Write ``vocab.json`` and ``tokenizer_config.json`` (ctc only); return manifest ``files`` entries."""
        if self.vocab is None:
            return {}
        (directory / "vocab.json").write_text(json.dumps(self.vocab, indent=1, ensure_ascii=False) + "\n")
        (directory / "tokenizer_config.json").write_text(json.dumps(self.tokenizer_config or {}, indent=1) + "\n")
        files = {"vocab": "vocab.json", "tokenizer_config": "tokenizer_config.json"}
        for path in self.extra_tokenizer_files:
            (directory / path.name).write_bytes(path.read_bytes())
            files[path.stem] = path.name
        return files


class GraphModule(torch.nn.Module):
    """Wraps the HF model so the traced graph returns a flat tuple of named outputs."""

    def __init__(self, source: SourceModel, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.inner = source.model
        self.task = source.task
        self.layers = layers
        first = specs.LOGITS_NAME if source.task == "ctc" else specs.LAST_HIDDEN_NAME
        hidden = int(source.hf_config.hidden_size)
        first_spec = (
            OutputSpec(first, None, int(source.hf_config.vocab_size))
            if source.task == "ctc"
            else OutputSpec(first, source.num_layers, hidden)
        )
        self.output_specs = (first_spec, *(OutputSpec(specs.hidden_state_name(x), x, hidden) for x in layers))

    @property
    def output_names(self) -> list[str]:
        """ONNX output names, in the order :meth:`forward` returns them."""
        return [o.name for o in self.output_specs]

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.inner(input_values, output_hidden_states=bool(self.layers), return_dict=True)
        first = out.logits if self.task == "ctc" else out.last_hidden_state
        return (first, *(out.hidden_states[x] for x in self.layers))


def onnx_graph_module(source: SourceModel, layers: tuple[int, ...]) -> GraphModule:
    """Return the eval-mode module whose trace becomes the ONNX graph."""
    return GraphModule(source, layers).eval()


def load_source(model: str, task: str, seed: int, *, fold_weight_norm: bool = True) -> SourceModel:
    """Load ``random:*`` or a Hugging Face directory as an eval-mode model.

    Args:
        model: ``random:*`` name or directory.
        task: ``features`` or ``ctc``.
        seed: Seed of random weights.
        fold_weight_norm: Fold weight norm into plain weights (what the export traces);
            ``False`` keeps the model exactly as Hugging Face builds it (benchmarks).

    Raises:
        SourceModelError: Directory, config or weights missing or unreadable.
        UnsupportedArchitectureError: The config is not a Wav2Vec2 one.
    """
    source = _load_random(model, task, seed) if model.startswith("random:") else _load_dir(Path(model), task)
    source.model.eval()
    if fold_weight_norm:
        _remove_weight_norm(source.model)
    return source


def _model_class(task: str) -> Any:
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Model

    return Wav2Vec2ForCTC if task == "ctc" else Wav2Vec2Model


def _load_random(name: str, task: str, seed: int) -> SourceModel:
    from transformers import Wav2Vec2Config

    config = Wav2Vec2Config(**specs.random_config_kwargs(name))
    torch.manual_seed(seed)
    model = _model_class(task)(config)
    vocab = {tok: i for i, tok in enumerate(specs.DEFAULT_CTC_VOCAB)} if task == "ctc" else None
    tok_config = {
        "tokenizer_class": "Wav2Vec2CTCTokenizer",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "word_delimiter_token": "|",
        "do_lower_case": False,
    }
    return SourceModel(
        model=model,
        hf_config=config,
        task=task,
        description=name,
        random_init=True,
        do_normalize=True,
        vocab=vocab,
        tokenizer_config=tok_config if task == "ctc" else None,
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SourceModelError(f"cannot read {str(path)!r}: {e}") from e
    if not isinstance(data, dict):
        raise SourceModelError(f"{str(path)!r} holds {type(data).__name__}; expected a JSON object")
    return data


def _load_dir(directory: Path, task: str) -> SourceModel:
    if not directory.is_dir():
        raise SourceModelError(f"model directory {str(directory)!r} does not exist")
    if not (directory / "config.json").is_file():
        raise SourceModelError(f"{str(directory)!r} has no config.json; it is not a Hugging Face model directory")
    model_type = _read_json(directory / "config.json").get("model_type")
    if model_type != "wav2vec2":
        raise UnsupportedArchitectureError(
            f"{str(directory)!r} holds model_type={model_type!r}; this exporter handles 'wav2vec2'"
        )
    if not any((directory / f).is_file() for f in _WEIGHT_FILES):
        raise SourceModelError(f"{str(directory)!r} has no weights; expected one of {_WEIGHT_FILES}")
    model = _from_pretrained(directory, task)
    vocab, tok_config, extra_files = _load_vocab(directory, task, int(model.config.vocab_size))
    return SourceModel(
        model=model,
        hf_config=model.config,
        task=task,
        description=str(directory.resolve()),
        random_init=False,
        do_normalize=_read_do_normalize(directory),
        vocab=vocab,
        tokenizer_config=tok_config,
        extra_tokenizer_files=extra_files,
    )


def _from_pretrained(directory: Path, task: str) -> torch.nn.Module:
    try:
        model, info = _model_class(task).from_pretrained(directory, output_loading_info=True)
    except Exception as e:  # noqa: BLE001 - safetensors/torch raise their own types for corrupt files
        raise SourceModelError(f"cannot load the weights in {str(directory)!r}: {e}") from e
    missing = [k for k in info.get("missing_keys", []) if not k.endswith(_HARMLESS_MISSING)]
    if any(k.startswith("lm_head") for k in missing):
        raise SourceModelError(
            f"{str(directory)!r} has no CTC head (lm_head) weights",
            hint="this checkpoint is an encoder only: export it with --task features",
        )
    if missing:
        raise SourceModelError(
            f"the weights in {str(directory)!r} lack {len(missing)} tensors the config needs "
            f"(first: {missing[:3]})",
            hint="the checkpoint does not match its config.json; re-save it with save_pretrained",
        )
    return model


def _read_do_normalize(directory: Path) -> bool:
    path = directory / "preprocessor_config.json"
    if path.is_file():
        return bool(_read_json(path).get("do_normalize", True))
    # Wav2Vec2FeatureExtractor's default, and what the published base and large checkpoints use.
    logger.warning("%s has no preprocessor_config.json; assuming do_normalize=True", directory)
    return True


def _load_vocab(
    directory: Path, task: str, vocab_size: int
) -> tuple[dict[str, int] | None, dict[str, Any] | None, tuple[Path, ...]]:
    if task != "ctc":
        return None, None, ()
    path = directory / "vocab.json"
    if not path.is_file():
        raise SourceModelError(
            f"{str(directory)!r} has no vocab.json, which --task ctc needs to decode text",
            hint="save the tokenizer beside the model (tokenizer.save_pretrained(dir)) or use --task features",
        )
    vocab = _read_json(path)
    if any(not isinstance(v, int) for v in vocab.values()):
        raise SourceModelError(f"{str(path)!r} must map tokens to integer ids")
    if len(vocab) > vocab_size:
        raise SourceModelError(
            f"{str(path)!r} has {len(vocab)} tokens but the CTC head has {vocab_size} outputs"
        )
    tok_path = directory / "tokenizer_config.json"
    tok_config = _read_json(tok_path) if tok_path.is_file() else {}
    extra = tuple(directory / f for f in _TOKENIZER_FILES[1:] if (directory / f).is_file())
    return {str(k): int(v) for k, v in vocab.items()}, tok_config, extra


def _remove_weight_norm(model: torch.nn.Module) -> None:
    """Fold weight norm into plain weights (exact) so every weight is an ONNX initializer.

    Weight norm on the positional convolution computes the weight inside the graph, which
    breaks ``quantize_dynamic`` and costs a little at every inference.
    """
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        elif hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
