"""Streaming fidelity: per-frame cosine of streamed vs whole-input (offline) features.

For each model and each window context, the audio runs through the real pipeline
(ArraySource → Windower → InferenceStage → consumer) and is compared frame by frame with one
pass of the model over the whole input. Frame counts and timestamps must be identical; the
cosine shows what context buys. Prints JSON lines and a markdown table.

Models with the split graph can be streamed several ways (``--cache``, a comma list; default
``on``, the stage's default path): ``off`` = whole windows through ``model.onnx`` with each
window's own normalisation statistics (``window``), ``conv`` = the conv-frame cache with running
statistics of the stream so far, the transformer over whole windows (``running``), ``kv`` = the
same plus the left-context K/V cache (transformer over hop + right context only, exports with
``encoder_cached.onnx``); ``on`` = ``kv`` where the model has it, else ``conv``; ``both`` = ``off,on``.

    python bench/fidelity_stream.py --model /tmp/w2v-base-fp32 --model /tmp/tiny-fp32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ostinato.runtime import Wav2Vec2Model
from ostinato.runtime.audio import load_audio
from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.runtime.w2v_kv import KVConfig
from ostinato.stream.frames import StreamFeatures
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.pipeline import Pipeline, PipelineConfig
from ostinato.stream.sinks import CallbackSink
from ostinato.stream.sources import ArraySource
from ostinato.stream.windowing import WindowerConfig

DEFAULT_AUDIO = Path(__file__).resolve().parent.parent / "ostinato" / "data" / "demo.wav"


async def _stream(model: Wav2Vec2Model, audio: np.ndarray, config: WindowerConfig, output: str,
                  cache: str) -> tuple[np.ndarray, np.ndarray]:
    got: list[StreamFeatures] = []
    frontend = FrontEndConfig() if cache != "off" else None
    kv = KVConfig() if cache == "kv" else None
    stage = InferenceStage([model], InferenceConfig(batch_size=4, max_lag_s=float("inf"), output=output, frontend=frontend, kv=kv))
    source = ArraySource(audio, block_samples=1600, stream_id="fidelity")
    await Pipeline([source], stage, [CallbackSink(got.append)], PipelineConfig(windower=config)).run()
    return np.concatenate([f.frames for f in got]), np.concatenate([f.start_samples for f in got])


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1) + 1e-12)


def measure(
    model_dir: Path, audio: np.ndarray, contexts: list[tuple[float, float, float]], outputs: list[str] | None,
    cache: str = "on",
) -> list[dict[str, Any]]:
    """One row per (output, statistics, hop, left, right)."""
    rows = []
    with Wav2Vec2Model.from_dir(model_dir, provider="cpu") as model:
        modes = _modes(model, cache)
        for output in outputs or [model.default_output]:
            if output in model.output_names:
                for mode in modes:
                    rows += _measure_output(model, model_dir, audio, contexts, output, mode)
    return rows


def _modes(model: Wav2Vec2Model, spec: str) -> list[str]:
    """``--cache`` as a list of paths this model can run (off / conv / kv)."""
    if not model.has_split:
        return ["off"]
    on = "kv" if model.has_cached_encoder else "conv"
    names = [x for part in spec.split(",") for x in {"on": [on], "both": ["off", on]}.get(part, [part])]
    return [x for x in dict.fromkeys(names) if x != "kv" or model.has_cached_encoder]


_STATS = {"off": "window", "conv": "running (conv cache)", "kv": "running (conv + K/V cache)"}


def _measure_output(
    model: Wav2Vec2Model, model_dir: Path, audio: np.ndarray, contexts: list[tuple[float, float, float]], output: str,
    cache: str,
) -> list[dict[str, Any]]:
    rows = []
    offline = model.run_batch(audio[None, :], [output])[output][0]
    offline_starts = np.arange(model.num_frames(len(audio))) * model.frame_stride_samples
    for hop_s, left_s, right_s in contexts:
        config = WindowerConfig.from_seconds(hop_s, left_s, right_s)
        started = time.perf_counter()
        frames, starts = asyncio.run(_stream(model, audio, config, output, cache))
        cos = _cosines(frames, offline)
        rows.append({
            "bench": "stream_fidelity", "model": model_dir.name, "source": model.manifest.source,
            "norm": f"{model.manifest.feat_extract_norm}, per-window input normalisation={model.manifest.normalize_input}",
            "output": output, "stats": _STATS[cache], "hop_s": hop_s,
            "left_context_s": config.left_context_samples / 16000, "right_context_s": config.right_context_samples / 16000,
            "added_latency_s": round(config.added_latency_s, 3), "window_s": config.window_samples / 16000,
            "frames": int(len(starts)), "frames_offline": int(len(offline_starts)),
            "timestamps_identical": bool(np.array_equal(starts, offline_starts)),
            "cos_min": round(float(cos.min()), 5), "cos_p1": round(float(np.percentile(cos, 1)), 5),
            "cos_mean": round(float(cos.mean()), 5), "seconds": round(time.perf_counter() - started, 2),
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, action="append", required=True, help="exported model dir (repeatable)")
    p.add_argument("--audio", type=Path, default=DEFAULT_AUDIO, help="audio file (default: the demo WAV, 21 s of speech)")
    p.add_argument("--seconds", type=float, default=20.0, help="use the first N seconds (one offline pass: <= 30)")
    p.add_argument("--hop-s", type=float, default=0.5)
    p.add_argument("--contexts", default="0,0.25,0.5,1,2", help="symmetric left=right contexts in seconds")
    p.add_argument("--extra", default="1:0.24,1:0.48,2:0.48",
                   help="asymmetric LEFT:RIGHT[:HOP] contexts to add (HOP defaults to --hop-s)")
    p.add_argument("--cache", default="on",
                   help="comma list of off, conv, kv, on (kv if the model has it, else conv), both (off,on)")
    p.add_argument("--output", action="append", default=None, help="model output(s) to compare (default: last layer)")
    args = p.parse_args(argv)
    audio, _ = load_audio(args.audio, 16000)
    audio = audio[: int(args.seconds * 16000)]
    contexts = [(args.hop_s, float(c), float(c)) for c in args.contexts.split(",") if c]
    for spec in (x for x in args.extra.split(",") if x):
        parts = [float(v) for v in spec.split(":")]
        contexts.append((parts[2] if len(parts) > 2 else args.hop_s, parts[0], parts[1]))
    rows = [r for model_dir in args.model for r in measure(model_dir, audio, contexts, args.output, args.cache)]
    print(f"\naudio: {args.audio.name}, first {len(audio) / 16000:.1f} s; machine shared", file=sys.stderr)
    print("| model | output | statistics | hop s | left s | right s | added latency s | frames (= offline) | cos min | cos p1 | cos mean |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "yes" if r["timestamps_identical"] and r["frames"] == r["frames_offline"] else "NO"
        print(f"| {r['model']} | {r['output']} | {r['stats']} | {r['hop_s']:g} | {r['left_context_s']:.2f} | {r['right_context_s']:.2f} | {r['added_latency_s']:.3f} | "
              f"{r['frames']} ({same}) | {r['cos_min']:.4f} | {r['cos_p1']:.4f} | {r['cos_mean']:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
