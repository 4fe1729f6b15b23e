"""``ostinato export MODEL_KIND ...``: convert a model to ONNX with a validated manifest.

Each model kind is one sub-subcommand registered by a ``_register_<kind>`` function; adding
a kind (e.g. ``gama``) is one more such function and one line in ``_KINDS``. Nothing from
:mod:`ostinato.export` (torch, transformers) is imported until an export actually runs, so
``ostinato --help`` and ``ostinato doctor`` work without the ``export`` extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ostinato.runtime.manifest import Manifest

__all__ = ["register"]

# Mirrors ostinato.export.specs (a test checks they agree); kept literal so that building the
# parser does not import the export stack.
_TASKS = ("features", "ctc")
_PRECISIONS = ("fp32", "fp16", "int8")
_RANDOM_MODELS = ("random:base", "random:large", "random:tiny")
_DEFAULT_OPSET = 17


def register(subparsers: Any) -> None:
    """Add ``export`` and its model-kind sub-subcommands to the top-level parser."""
    parser = subparsers.add_parser(
        "export",
        help="export a model to ONNX (validated against PyTorch, with ostinato.json)",
        description="Export a model to ONNX. Needs the 'export' extra: pip install 'ostinato[export]'.",
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for register_kind in _KINDS:
        register_kind(kinds)


def _parse_layers(text: str) -> tuple[int, ...]:
    try:
        layers = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--layers {text!r}: expected comma-separated layer numbers, e.g. 6,12") from None
    if any(x < 0 for x in layers):
        raise argparse.ArgumentTypeError(f"--layers {text!r}: layer numbers start at 0")
    return layers


def _register_wav2vec2(kinds: Any) -> None:
    parser = kinds.add_parser(
        "wav2vec2",
        help="Wav2Vec2 encoder (features) or CTC model",
        description="Export a Wav2Vec2 model to ONNX, validate it against PyTorch, write ostinato.json.",
        epilog="example: ostinato export wav2vec2 --model random:base --precision int8 --layers 6,12 --out models/base-int8",
    )
    parser.add_argument(
        "--model",
        required=True,
        help=f"Hugging Face model directory (config.json + weights) or one of {', '.join(_RANDOM_MODELS)} "
        "(random weights: for testing and benchmarks only)",
    )
    parser.add_argument("--task", choices=_TASKS, default="features", help="features: hidden states; ctc: character logits + vocab")
    parser.add_argument("--precision", choices=_PRECISIONS, default="fp32", help="int8: fastest on CPU; fp16: for CUDA")
    parser.add_argument(
        "--layers",
        type=_parse_layers,
        default=(),
        metavar="L1,L2",
        help="also output these hidden layers as hidden_state_<L> (0 = transformer input, N = last layer)",
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new, empty, or a previous export)")
    parser.add_argument("--opset", type=int, default=_DEFAULT_OPSET, help=f"ONNX opset (default {_DEFAULT_OPSET})")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and validation inputs")
    parser.add_argument(
        "--min-cosine", type=float, default=0.99, metavar="C",
        help="int8/fp16: smallest per-frame cosine vs PyTorch accepted (default 0.99; recorded in the manifest)",
    )
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the comparison with PyTorch (the model is written even if it is wrong)",
    )
    parser.set_defaults(func=_run_wav2vec2)


def _run_wav2vec2(args: argparse.Namespace) -> int:
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig, export_wav2vec2
    from ostinato.progress import ProgressBar

    config = Wav2Vec2ExportConfig(
        model=args.model,
        out_dir=args.out,
        task=args.task,
        precision=args.precision,
        layers=args.layers,
        opset=args.opset,
        validate=args.validate,
        seed=args.seed,
        min_cosine=args.min_cosine,
    )
    if config.is_random:
        _shout(f"{args.model}: RANDOM WEIGHTS. The model is untrained; use it for tests and benchmarks only.")
    with ProgressBar() as bar:
        manifest = export_wav2vec2(config, progress=bar.update)
    print(_summary(manifest, args.out))
    if manifest.random_init:
        _shout("RANDOM WEIGHTS: this export is not a trained model (manifest random_init: true).")
    return 0


def _shout(text: str) -> None:
    line = "!" * min(len(text) + 4, 100)
    print(f"{line}\n! {text}\n{line}", file=sys.stderr)


def _summary(manifest: Manifest, out_dir: Path) -> str:
    outputs = ", ".join(f"{o.name}[{o.dim}]" for o in manifest.outputs)
    lines = [
        f"exported: {manifest.label}",
        f"  directory:  {out_dir}",
        f"  files:      {', '.join(f'{k}={v}' for k, v in manifest.files.items())}",
        f"  outputs:    {outputs}",
        f"  geometry:   {manifest.sample_rate} Hz, stride {manifest.frame_stride_samples} samples, "
        f"receptive field {manifest.receptive_field_samples} samples, normalize_input={manifest.normalize_input}",
        f"  validation: {_validation_line(manifest.validation)}",
    ]
    return "\n".join(lines)


def _validation_line(validation: dict[str, Any]) -> str:
    if validation.get("skipped"):
        return "SKIPPED (--no-validate): nothing checked this graph against PyTorch"
    parts = []
    for precision, figures in validation.items():
        if not isinstance(figures, dict):
            continue
        if figures["mode"] == "exact":
            parts.append(f"{precision} max|diff| {figures['max_abs_diff']:.2e} <= {figures['atol']:.0e}")
        else:
            parts.append(
                f"{precision} per-frame cosine min {figures['min_cosine']:.4f} >= {figures['min_cosine_required']}"
            )
    return "; ".join(parts) + " (vs PyTorch fp32, passed)"


def _register_gama(kinds: Any) -> None:
    parser = kinds.add_parser(
        "gama",
        help="GAMA audio-language model (audio branch + Llama decoder with KV cache)",
        description="Export GAMA to ONNX: audio branch, decoder with KV cache (external data), token "
        "embeddings and tokenizer, each validated against PyTorch. See docs/gama.md.",
        epilog="examples: ostinato export gama --random-init --config tiny --out models/gama-tiny\n"
        "          ostinato export gama --base Llama-2-7b-chat-hf-qformer --checkpoint "
        "stage5/checkpoint-2500/pytorch_model.bin --precision int4 --out models/gama-it-int4",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--base", type=Path, metavar="DIR", help="release base folder (config.json, safetensors, tokenizer)")
    parser.add_argument("--checkpoint", type=Path, metavar="FILE", help="stage checkpoint pytorch_model.bin")
    parser.add_argument("--random-init", action="store_true", help="random weights (tests and benchmarks only)")
    parser.add_argument("--config", choices=("tiny", "1b", "full"), default="tiny",
                        help="size of random weights: tiny (tests), 1b (benchmarks), full (7B, needs ~80 GiB)")
    parser.add_argument("--precision", choices=("fp32", "int8", "int4"), default="int4",
                        help="fp32; int8 (audio int8 + 8-bit decoder weights); int4 (audio int8 + 4-bit decoder, default)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output directory (new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    parser.add_argument("--opset", type=int, default=_DEFAULT_OPSET, help=f"ONNX opset (default {_DEFAULT_OPSET})")
    parser.add_argument("--seed", type=int, default=0, help="seed of random weights and validation inputs")
    parser.add_argument("--no-validate", dest="validate", action="store_false",
                        help="skip the comparison with PyTorch (the model is written even if it is wrong)")
    parser.add_argument("--no-memory-check", dest="check_memory", action="store_false",
                        help="export even when the memory estimate exceeds available memory")
    parser.set_defaults(func=_run_gama)


def _run_gama(args: argparse.Namespace) -> int:
    from ostinato.export.gama import GamaExportConfig, estimate_export_memory, export_gama
    from ostinato.progress import ProgressBar

    config = GamaExportConfig(
        out_dir=args.out, base_dir=args.base, checkpoint=args.checkpoint, random_init=args.random_init,
        config=args.config, precision=args.precision, seed=args.seed, validate=args.validate,
        opset=args.opset, overwrite=args.overwrite, check_memory=args.check_memory,
    )
    if config.random_init:
        _shout(f"random:{args.config}: RANDOM WEIGHTS. GAMA's text will be gibberish; tests and benchmarks only.")
    print(f"memory: {estimate_export_memory(config).describe()}", file=sys.stderr)
    with ProgressBar() as bar:
        manifest = export_gama(config, progress=bar.update)
    v = manifest.validation
    lines = [f"exported: {manifest.label}", f"  directory:  {args.out}",
             f"  files:      {', '.join(f'{k}={n}' for k, n in manifest.files.items())}",
             f"  precision:  audio {manifest.extra['audio_precision']}, decoder {manifest.extra['decoder_precision']}"]
    lines += [f"  checkpoint: {line}" for line in manifest.extra.get("load_report", [])]
    if v.get("validated"):
        audio = v["audio_branch"]["synthetic-audio-b1"]
        logits = v["decoder"]["prefill_logits"]
        greedy = v["greedy"]
        lines.append(f"  validation: audio max|diff| {audio['max_abs_diff']:.2e} cos {audio['min_cosine']:.4f}; "
                     f"decoder logits max|diff| {logits['max_abs_diff']:.2e} cos {logits['min_cosine']:.4f}; "
                     f"greedy tokens agree {greedy['agreeing_prefix']}/{len(greedy['tokens_torch'])} (vs PyTorch fp32, passed)")
    else:
        lines.append("  validation: SKIPPED (--no-validate): nothing checked these graphs against PyTorch")
    print("\n".join(lines))
    if manifest.random_init:
        _shout("RANDOM WEIGHTS: this export is not a trained model (manifest random_init: true).")
    return 0


# One entry per model kind, in --help order.
_KINDS: tuple[Callable[[Any], None], ...] = (_register_wav2vec2, _register_gama)
