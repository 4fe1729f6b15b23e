"""``ostinato match FILE``: stream a file through the pattern matcher (offline), and the
``--match`` options of ``ostinato run``.

``match`` reads the file, resamples it to 16 kHz and pushes it in chunks of ``--chunk-s``
through exactly what the live pipeline runs (log-mel or model features → matcher → events
→ library), printing events as JSON lines on stdout (or to ``--events``). With
``--describe-model`` each new pattern is then described (``describe`` events), one at a time,
from a clip cut out of the file around its first occurrence.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_match_arguments", "build_match_consumers", "register", "run"]


def _stage_config(args: argparse.Namespace) -> Any:
    from ostinato.stream.matcher import MatcherConfig
    from ostinato.stream.matcher_stage import MatcherStageConfig

    overrides: dict[str, Any] = {"buffer_s": args.buffer_s}
    if args.min_pattern_s is not None:
        overrides["min_pattern_s"] = args.min_pattern_s
    if args.novelty is not None:
        overrides["novelty_threshold"] = args.novelty
    if args.min_evidence is not None:
        from ostinato.stream.errors import ConfigError
        from ostinato.stream.matcher_config import evidence_overrides

        if args.features != "logmel":
            raise ConfigError(f"--min-evidence applies to --features logmel, not {args.features!r}",
                              hint="drop --min-evidence (model features have no second-stage verification)")
        try:
            overrides.update(evidence_overrides(args.min_evidence))
        except ValueError as e:
            raise ConfigError(f"--min-evidence {args.min_evidence}; {e}") from e
    matcher = MatcherConfig.for_features(args.features, **overrides)
    return MatcherStageConfig(features=args.features, matcher=matcher, events_path=args.events, library_path=args.library)


def add_match_arguments(p: argparse.ArgumentParser, standalone: bool = False) -> None:
    """Matcher options shared by ``match`` and ``run --match``."""
    g = p.add_argument_group("pattern matching")
    if not standalone:
        g.add_argument("--match", action="store_true", help="flag recurring patterns live (see docs/matcher.md)")
    g.add_argument("--features", default="logmel", help="logmel (model-free, default) or wav2vec2[:LAYER] (the model's output)")
    g.add_argument("--events", type=Path, default=None, help="append match/novelty events here as JSON lines")
    g.add_argument("--library", type=Path, default=None, help="file matches in this pattern library (SQLite)")
    g.add_argument("--buffer-s", type=float, default=600.0 if standalone else None,  # run: its --profile decides
                   help="audio history searched per stream (default 600; 120 with --profile edge)")
    g.add_argument("--min-pattern-s", type=float, default=None, help="shortest repeat reported (default 1.2)")
    g.add_argument("--min-evidence", type=float, default=None, metavar="E",
                   help="pair evidence a log-mel repeat needs (default 0.6, 0.45 for aligned pairs; this sets both): "
                        "0.8 gives fewer false alarms and less recall under noise (docs/matcher.md, Operating points)")
    g.add_argument("--novelty", type=float, default=None, metavar="COSINE", help="also report novel sounds below this similarity")
    g.add_argument("--describe-model", type=Path, default=None, metavar="GAMA_DIR",
                   help="describe each new pattern in words with this GAMA export (docs/gama.md)")
    g.add_argument("--describe-prompt", default=None, help='instruction for --describe-model (default "Describe the audio.")')
    if not standalone:  # match cuts clips from the file itself
        g.add_argument("--describe-ring-s", type=float, default=None,
                       help="audio kept per stream to cut clips from (default: --buffer-s + 11, at least 60; 32 kB/s)")
    g.add_argument("--describe-max-tokens", type=int, default=None, help="longest description (default 400)")


def build_match_consumers(args: argparse.Namespace) -> list[Any]:
    """``run --match``: the matcher stage (wav2vec2:LAYER selects the model output)."""
    if not getattr(args, "match", False):
        if getattr(args, "describe_model", None) is not None:
            from ostinato.stream.errors import ConfigError

            raise ConfigError("--describe-model describes the patterns --match finds", hint="add --match (and --library F.db)")
        return []
    from ostinato.stream.matcher_stage import MatcherStage

    kind, _, layer = args.features.partition(":")
    if kind == "wav2vec2" and layer and args.output is None:
        args.output = f"hidden_state_{int(layer)}"
    config = _stage_config(args)
    return [MatcherStage(config, _describer(args, config) if args.describe_model is not None else None)]


def _describer(args: argparse.Namespace, config: Any) -> Any:
    """``--describe-model``: GAMA, its worker and the clip store beside ``--library``."""
    from ostinato.stream.clip_store import ClipStore, clip_dir_for
    from ostinato.stream.pattern_describe import PatternDescriber

    ring_s = getattr(args, "describe_ring_s", None) or max(60.0, config.matcher_config.buffer_s + 11.0)
    clips = ClipStore(clip_dir_for(args.library)) if args.library is not None else None
    describer = PatternDescriber.open(args.describe_model, {"prompt": args.describe_prompt, "ring_s": ring_s,
                                                            "max_new_tokens": args.describe_max_tokens}, clips=clips)
    if describer.config.random_weights:
        print(f"describe model {args.describe_model} has RANDOM WEIGHTS: its descriptions are meaningless", file=sys.stderr)
    return describer


def register(sub: Any) -> None:
    """Add the ``match`` subcommand."""
    p = sub.add_parser("match", help="find recurring patterns in an audio file, streamed through the matcher")
    p.add_argument("file", type=Path, help="WAV/FLAC/OGG at any sample rate")
    p.add_argument("--model", type=Path, default=None, help="exported Wav2Vec2 directory (for --features wav2vec2[:LAYER])")
    p.add_argument("--stream", default=None, help="stream name in events (default: the file name)")
    p.add_argument("--chunk-s", type=float, default=0.1, help="audio per push (default 0.1 s)")
    add_match_arguments(p, standalone=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Stream the file through the matcher; print events and a summary."""
    from ostinato.runtime.audio import load_audio
    from ostinato.stream.events import MatchEvent, event_to_json
    from ostinato.stream.matcher_stage import MatcherSession

    config = _stage_config(args)
    stream = args.stream or args.file.stem
    audio, _ = load_audio(args.file)
    printer = None if args.events is not None else (lambda e: print(event_to_json(e), flush=True))
    firsts: dict[str, Any] = {}  # pattern id -> its first match event (what --describe-model describes)

    def on_event(event: Any) -> None:
        if isinstance(event, MatchEvent):
            firsts.setdefault(event.pattern_id, event)
        if printer is not None:
            printer(event)

    session = MatcherSession(config, on_event=on_event)
    step = max(320, int(args.chunk_s * 16000))
    described = ""
    try:
        if config.features == "logmel":
            for i in range(0, audio.size, step):
                session.feed(stream, audio[i : i + step])
        else:
            _match_model_features(args, session, stream, audio)
        session.close_streams()
        if args.describe_model is not None:
            described = asyncio.run(_describe_patterns(args, session, stream, audio, list(firsts.values())))
    finally:
        session.close()
    where = f" -> {args.events}" if args.events is not None else ""
    print(f"{stream}: {audio.size / 16000:.1f} s, {session.matches} matches, {session.novelties} novelty events{where}", file=sys.stderr)
    if described:
        print(described, file=sys.stderr)
    return 0


async def _describe_patterns(args: argparse.Namespace, session: Any, stream: str, audio: Any, firsts: list[Any]) -> str:
    """``match --describe-model``: after matching, describe each new pattern one at a time
    (nothing is dropped: the whole file is here) from a clip cut out of the file around its
    first occurrence, with the describer ``run --describe-model`` uses. Returns the summary line."""
    from ostinato.stream.events import event_to_json
    from ostinato.stream.pattern_describe import SAMPLE_RATE, ClipRequest, clip_span, is_described, span_samples

    describer = _describer(args, session.config)
    try:
        for first in firsts:
            if session.library is not None and is_described(session.library, first.pattern_id):
                describer.counts["already_described"] += 1
                continue
            span = clip_span(span_samples(first.first_start_s, first.first_end_s), span_samples(first.start_s, first.end_s),
                             (0, audio.size), describer.config.window_samples)
            if span is None:  # cannot happen: both occurrences lie in the file
                continue
            start, stop, which = span
            request = ClipRequest(first.pattern_id, stream, audio[start:stop], start / SAMPLE_RATE, which)
            describer.file_clip(request)
            future = describer.request(request, session.library)
            if future is not None:  # one job at a time: the queue is never full
                event = await future
                if session.events is not None:
                    session.events.write([event])
                else:
                    print(event_to_json(event), flush=True)
    finally:
        await describer.close()
    s = describer.summary()
    return (f"describe ({describer.config.model_name}{', RANDOM WEIGHTS' if describer.config.random_weights else ''}): "
            f"described {s['described']}, failed {s['failed']}, already described {s['already_described']}, "
            f"mean {s['worker']['mean_s']:.2f} s")


def _match_model_features(args: argparse.Namespace, session: Any, stream: str, audio: Any) -> None:
    from ostinato.runtime.errors import InputError
    from ostinato.runtime.wav2vec2 import Wav2Vec2Model

    if args.model is None:
        raise InputError(f"--features {args.features} needs --model DIR", hint="or use --features logmel")
    _, _, layer = args.features.partition(":")
    with Wav2Vec2Model.from_dir(args.model) as model:
        output = f"hidden_state_{int(layer)}" if layer else None
        features = model.features(audio, 16000, output=output)
        if model.manifest.random_init:
            print("model has RANDOM WEIGHTS: matches reflect its random features", file=sys.stderr)
    session.feed(stream, audio)  # energy for the silence gate
    step = 25
    for i in range(0, len(features), step):
        session.consume_frames(stream, features.frames[i : i + step], i)
