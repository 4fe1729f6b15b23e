"""``ostinato features FILE --model DIR --out OUT``: offline frame features for a whole file."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from ostinato.progress import ProgressBar

__all__ = ["register", "write_features"]

_FORMATS = (".npy", ".msgpack")


def register(sub: Any) -> None:
    """Add the ``features`` subcommand."""
    p = sub.add_parser("features", help="extract frame features from an audio file")
    p.add_argument("file", type=Path, help="WAV/FLAC/OGG at any sample rate (resampled with soxr)")
    p.add_argument("--model", type=Path, required=True, help="exported model directory")
    p.add_argument("--out", type=Path, required=True, help="output .npy (frames [T,H]) or .msgpack")
    p.add_argument("--output", default=None, help="model output to save (default: the last layer)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime decides)")
    p.set_defaults(func=run)


def write_features(path: Path, features: Any, manifest: Any) -> None:
    """Write features as ``.npy`` (frames only) or ``.msgpack`` (frames, times, provenance)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, features.frames)
        return
    record = {
        "version": 1,
        "output": features.output,
        "sample_rate": features.sample_rate,
        "frame_stride_samples": manifest.frame_stride_samples,
        "start_samples": features.start_samples.tolist(),
        "shape": list(features.frames.shape),
        "dtype": "float32",
        "frames": features.frames.astype("<f4").tobytes(),
        "model": manifest.label,
        "random_init": manifest.random_init,
    }
    path.write_bytes(msgpack.packb(record, use_bin_type=True))


def run(args: argparse.Namespace) -> int:
    """Extract and save features; print a summary."""
    from ostinato.runtime.audio import load_audio
    from ostinato.runtime.errors import InputError
    from ostinato.runtime.wav2vec2 import Wav2Vec2Model

    if args.out.suffix not in _FORMATS:
        raise InputError(f"--out {str(args.out)!r}: expected a {' or '.join(_FORMATS)} file")
    with ProgressBar() as bar:
        bar.update("loading model", 0, 1)
        with Wav2Vec2Model.from_dir(args.model, args.provider, args.threads) as model:
            bar.update("loading model", 1, 1)
            bar.update("decoding audio", 0, 1)
            audio, file_rate = load_audio(args.file, model.sample_rate)
            bar.update("decoding audio", 1, 1)
            started = time.perf_counter()
            features = model.features(audio, model.sample_rate, args.output, progress=bar.update)
            elapsed_s = time.perf_counter() - started
            providers = model.session.providers
            fell_back = model.session.fell_back
            manifest = model.manifest
    write_features(args.out, features, manifest)
    duration_s = len(audio) / manifest.sample_rate
    print(f"model     {manifest.label}")
    if manifest.random_init:
        print("          RANDOM WEIGHTS: features are not meaningful for speech; for demos and benchmarks only")
    print(f"provider  {providers[0]}" + ("  (accelerator wanted but unavailable: see ostinato doctor)" if fell_back else ""))
    print(f"input     {args.file} ({duration_s:.2f} s, resampled {file_rate} -> {manifest.sample_rate} Hz)")
    print(f"frames    {len(features)} x {features.frames.shape[1]} ({features.output}), frame i starts at sample 320*i")
    print(f"time      {elapsed_s * 1000:.0f} ms, real-time factor {elapsed_s / duration_s:.3f}")
    print(f"wrote     {args.out}")
    return 0
