"""``ostinato describe FILE --model DIR [--prompt ...]``: GAMA's answer, streamed token by token."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["register", "run"]


def register(sub: Any) -> None:
    """Add the ``describe`` subcommand."""
    p = sub.add_parser(
        "describe",
        help="describe an audio clip in words with an exported GAMA model",
        description="Run GAMA on 10.24 s of a file (the first, or from --start-s) and stream its answer. "
        "Defaults are GAMA's: temperature 0.1, top-p 0.95, top-k 50, up to 400 new tokens.",
    )
    p.add_argument("file", type=Path, help="WAV/FLAC/OGG at any sample rate (resampled with soxr)")
    p.add_argument("--model", type=Path, required=True, help="directory written by ostinato export gama")
    p.add_argument("--prompt", default=None, help='instruction (default "Describe the audio.")')
    p.add_argument("--start-s", type=float, default=0.0, help="start of the 10.24 s window in seconds")
    p.add_argument("--max-new-tokens", type=int, default=None)
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None, help="0 disables")
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--seed", type=int, default=None, help="sampling seed (reproducible output)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime decides)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the model and the audio, print tokens as they come, then a timing line on stderr."""
    from ostinato.runtime.audio import load_audio
    from ostinato.runtime.errors import InputError
    from ostinato.runtime.gama import DEFAULT_INSTRUCTION, GamaModel
    from ostinato.runtime.tokenizer import StreamDecoder

    if args.start_s < 0:
        raise InputError(f"--start-s={args.start_s}; expected >= 0")
    with GamaModel.from_dir(args.model, provider=args.provider, intra_op_threads=args.threads) as model:
        if model.random_init:
            print("! RANDOM WEIGHTS: this GAMA export is untrained; its text is meaningless.", file=sys.stderr)
        audio, _ = load_audio(args.file, model.sample_rate)
        start = int(round(args.start_s * model.sample_rate))
        if start >= audio.size:
            raise InputError(f"--start-s={args.start_s} is past the end of {args.file} "
                             f"({audio.size / model.sample_rate:.2f} s)")
        window = audio[start:start + model.window_samples]
        settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                    "top_p": args.top_p, "top_k": args.top_k, "repetition_penalty": args.repetition_penalty,
                    "seed": args.seed}
        cfg = model.generation_config(settings)
        started = time.perf_counter()
        stream = StreamDecoder(model.tokenizer)
        count = 0
        for token in model.generate_ids(window, model.sample_rate, args.prompt or DEFAULT_INSTRUCTION, cfg):
            count += 1
            sys.stdout.write(stream.push(token))
            sys.stdout.flush()
        sys.stdout.write(stream.flush() + "\n")
        elapsed_s = time.perf_counter() - started
        print(f"[{count} tokens in {elapsed_s:.2f} s; window {start / model.sample_rate:.2f}-"
              f"{(start + window.size) / model.sample_rate:.2f} s; {model.manifest.label}]", file=sys.stderr)
    return 0
