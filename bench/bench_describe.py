"""What describing a pattern costs: one GAMA description, and a stream that describes its patterns.

1. ``one``: a 10.24 s clip described by ``GamaModel`` with greedy decoding, once capped at 1
   new token (fbank + audio branch + prefill + 1 step) and once at ``--tokens``; per-token
   time = difference / extra tokens. Random-weight models rarely emit EOS, so the cap is what
   they generate; GAMA's default cap is 400.
2. ``stream``: a recording with ``--patterns`` planted repeats matched by the log-mel matcher
   in 0.1 s blocks (as fast as possible), once without and once with a
   :class:`~ostinato.stream.pattern_describe.PatternDescriber` attached (its worker thread
   describes while the matcher runs): matcher wall time both ways, time from the match to the
   stored description per pattern, and drops.

Prints JSON lines. Random weights are labelled (``random_weights``).

    nice -n 10 python bench/bench_describe.py --model models/gama-tiny --tokens 32
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def _emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def _recording(patterns: int, seed: int = 5) -> tuple[np.ndarray, float]:
    from test_matcher import _filler, _jingle, _place

    duration_s = 8.0 * patterns + 12.0
    audio = _filler(duration_s, seed)
    for i in range(patterns):  # each jingle at 4 s + 4 i and again half the recording later
        for at_s in (2.0 + 4.0 * i, 2.0 + 4.0 * i + 4.0 * patterns + 4.0):
            _place(audio, _jingle(60 + i, 2.0), at_s)
    return audio, duration_s


def bench_one(model: Any, tokens: int, repeats: int) -> None:
    from ostinato.runtime.generate import GenerationConfig

    audio, _ = _recording(1)
    clip = audio[: model.window_samples]
    timings: dict[int, list[float]] = {1: [], tokens: []}
    counts: dict[int, int] = {}
    for cap in (1, tokens):
        config = GenerationConfig(**{**_fields(model.defaults), "max_new_tokens": cap, "temperature": 0.0})
        for _ in range(repeats + 1):  # the first run warms up
            t0 = time.perf_counter()
            counts[cap] = len(list(model.generate_ids(clip, 16000, "Describe the audio.", config)))
            timings[cap].append(time.perf_counter() - t0)
    one, many = (statistics.median(timings[c][1:]) for c in (1, tokens))
    per_token_s = (many - one) / max(1, counts[tokens] - counts[1])
    _emit({"bench": "describe_one", "model": model.directory.name, "random_weights": model.random_init,
           "tokens": counts[tokens], "first_token_s": round(one, 4), "total_s": round(many, 4),
           "per_token_ms": round(per_token_s * 1000, 2), "at_400_tokens_s": round(one + 399 * per_token_s, 2),
           "repeats": repeats})


def _fields(config: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


async def _stream(model_dir: Path, audio: np.ndarray, describe: bool, tokens: int, tmp: Path) -> dict[str, Any]:
    from ostinato.stream.clip_store import ClipStore, clip_dir_for
    from ostinato.stream.matcher_stage import MatcherStage, MatcherStageConfig
    from ostinato.stream.pattern_describe import PatternDescriber

    db = tmp / f"lib-{describe}.db"
    describer = PatternDescriber.open(model_dir, {"ring_s": 120.0, "max_new_tokens": tokens},
                                      clips=ClipStore(clip_dir_for(db))) if describe else None
    stage = MatcherStage(MatcherStageConfig(library_path=db), describer, describe_drain_s=3600.0)
    found: dict[str, float] = {}
    latency: list[float] = []
    if describer is not None:
        describer.listeners.append(lambda e: latency.append(time.perf_counter() - found[e.pattern_id]))
        stage.session._on_event = lambda e: found.setdefault(e.pattern_id, time.perf_counter())
    t0 = time.perf_counter()
    for i in range(0, audio.size, 1600):
        stage.session.feed("bench", audio[i : i + 1600])
        await asyncio.sleep(0)
    feed_s = time.perf_counter() - t0
    ring_bytes = describer.ring_bytes if describer is not None else 0
    await stage.close()
    out = {"matcher_wall_s": round(feed_s, 3), "matches": stage.session.matches, "ring_bytes": ring_bytes}
    if describer is not None:
        out.update(described=describer.counts["described"], dropped=describer.worker.stats.dropped,
                   match_to_description_s=[round(x, 3) for x in latency])
    return out


def bench_stream(model_dir: Path, patterns: int, tokens: int) -> None:
    audio, duration_s = _recording(patterns)
    with tempfile.TemporaryDirectory(prefix="bench-describe-") as tmp:
        plain = asyncio.run(_stream(model_dir, audio, False, tokens, Path(tmp)))
        described = asyncio.run(_stream(model_dir, audio, True, tokens, Path(tmp)))
    _emit({"bench": "describe_stream", "audio_s": duration_s, "patterns": patterns, "tokens": tokens,
           "without": plain, "with": described,
           "matcher_slowdown": round(described["matcher_wall_s"] / max(plain["matcher_wall_s"], 1e-9), 3)})


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="GAMA export (ostinato export gama)")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per description (cap)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patterns", type=int, default=4, help="planted repeats in the stream part")
    parser.add_argument("--skip-stream", action="store_true")
    args = parser.parse_args(argv)

    from ostinato.runtime.gama import GamaModel

    _emit({"bench": "describe", "model": str(args.model), "load_average": os.getloadavg(), "cpus": os.cpu_count()})
    with GamaModel.from_dir(args.model, provider="cpu") as model:
        bench_one(model, args.tokens, args.repeats)
    if not args.skip_stream:
        bench_stream(args.model, args.patterns, args.tokens)
    return 0


if __name__ == "__main__":
    sys.exit(main())
