"""``ostinato run --source SPEC --model DIR``: the live pipeline, with a status line and summary.

Sources: ``file:PATH`` (``--realtime`` paces it, ``--loop`` repeats it), ``mic[:DEVICE]``,
``stdin:RATE:FORMAT[:CHANNELS]``, ``ws://HOST:PORT/...`` (an ostinato audio feed).
``--out`` picks sinks by extension: ``.npy`` (frames, one file per stream), ``.msgpack``
(wire ``features`` frames), ``.jsonl`` (one line per window with its timing). While running,
stderr shows ``level | audio | RTF | lag | drops | frames | health``; at the end (or on
Ctrl-C / SIGTERM, which drain gracefully) a summary.

Extension point: :data:`CONSUMER_FACTORIES` holds ``(add_arguments, build)`` pairs; ``build(args)``
returns feature consumers to append to the pipeline (the matcher's ``--match`` plugs in here).
A consumer with a ``status_text() -> str`` method gets its text appended to the status line.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ostinato import cmd_match as _match
from ostinato.profiles import PROFILES, apply_profile, profile_names

__all__ = ["CONSUMER_FACTORIES", "build_sinks", "register", "run", "status_line"]

_METER_WIDTH = 12
_SINK_SUFFIXES = (".npy", ".msgpack", ".jsonl")

#: ``(add_arguments(parser), build(args) -> list[FeatureConsumer])`` pairs; extra stages
#: (e.g. the matcher) register here so ``ostinato run`` gains their options and consumers.
CONSUMER_FACTORIES: list[tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], list[Any]]]] = [
    (_match.add_match_arguments, _match.build_match_consumers),  # --match (docs/matcher.md)
]


def register(sub: Any) -> None:
    """Add the ``run`` subcommand."""
    p = sub.add_parser("run", help="run the live pipeline: audio source -> windows -> Wav2Vec2 -> features")
    p.add_argument("--source", action="append", required=True, metavar="SPEC",
                   help="file:PATH | mic[:DEVICE] | stdin:RATE:FORMAT[:CHANNELS] | ws://HOST:PORT/PATH (repeatable)")
    p.add_argument("--model", type=Path, required=True, help="exported Wav2Vec2 model directory")
    p.add_argument("--out", type=Path, action="append", default=[], help="sink: .npy, .msgpack or .jsonl (repeatable)")
    p.add_argument("--streams", type=int, default=1, help="run N copies of each file/ws source (load testing)")
    p.add_argument("--provider", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--profile", default="default", choices=profile_names(),
                   help="edge: one core (1 session x 1 thread, batch 1, 0.5 s hop with 0.5/0.24 s context, "
                        "short queues; docs/edge.md). Options given explicitly win")
    p.add_argument("--workers", type=int, default=None, help="inference sessions (default 1)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per session")
    p.add_argument("--realtime", action="store_true", help="pace file sources at real time")
    p.add_argument("--loop", action="store_true", help="loop file sources until stopped")
    p.add_argument("--duration-s", type=float, default=None, help="stop (gracefully) after this long")
    g = p.add_argument_group("windowing (defaults from the fidelity table in docs/streaming.md)")
    g.add_argument("--hop-s", type=float, default=None, help="new audio per window (default 0.5)")
    g.add_argument("--left-context-s", type=float, default=None, help="past context per window (default 1.0)")
    g.add_argument("--right-context-s", type=float, default=None, help="future context (adds latency; default 0.48)")
    g.add_argument("--chunk-samples", type=int, default=None, help="seed-style: new samples per window, e.g. 1600")
    g.add_argument("--overlap-samples", type=int, default=None, help="seed-style: samples shared by windows, e.g. 400")
    g = p.add_argument_group("inference and queues")
    g.add_argument("--batch-size", type=int, default=None, help="windows per model run (default 4)")
    g.add_argument("--max-wait-ms", type=float, default=5.0, help="wait for a fuller batch (default 5)")
    g.add_argument("--max-lag-s", type=float, default=None,
                   help="drop windows older than this (default 5 for live sources, off for files)")
    g.add_argument("--max-queue", type=int, default=None, help="windows queued before backpressure (default 10)")
    g.add_argument("--output", default=None, help="model output to emit (default: the last layer)")
    g.add_argument("--no-frontend-cache", action="store_true",
                   help="run whole windows with per-window normalisation instead of each stream's cached conv "
                        "front end with running statistics (split exports; docs/streaming.md)")
    g.add_argument("--no-kv-cache", action="store_true",
                   help="run each window's left context through the transformer again instead of attending to "
                        "the stream's cached keys/values (exports with encoder_cached.onnx; docs/streaming.md)")
    g.add_argument("--shutdown-timeout-s", type=float, default=10.0, help="drain limit on stop (default 10)")
    g = p.add_argument_group("reporting")
    g.add_argument("--summary-json", type=Path, default=None, help="write the run summary as JSON here")
    g.add_argument("--quiet", action="store_true", help="no live status line")
    for add_arguments, _ in CONSUMER_FACTORIES:
        add_arguments(p)
    p.set_defaults(func=run)


#: ``args`` attribute -> :class:`~ostinato.profiles.Profile` field, and ``ostinato run``'s own defaults.
_PROFILE_FIELDS = {"hop_s": "hop_s", "left_context_s": "left_context_s", "right_context_s": "right_context_s",
                   "batch_size": "batch_size", "workers": "workers", "threads": "threads", "max_queue": "max_queue",
                   "buffer_s": "match_buffer_s"}
_RUN_DEFAULTS = {"batch_size": 4, "workers": 1, "max_queue": 10, "buffer_s": 600.0}


def run(args: argparse.Namespace) -> int:
    """Run the pipeline; return 0, or 1/2 when some/all streams failed."""
    fields = _PROFILE_FIELDS
    if args.chunk_samples is not None or args.overlap_samples is not None:  # seed-style geometry given: keep it
        fields = {k: v for k, v in fields.items() if k not in ("hop_s", "left_context_s", "right_context_s")}
    apply_profile(args, args.profile, fields, _RUN_DEFAULTS)
    return asyncio.run(_run(args))


def _windower_config(args: argparse.Namespace, model: Any) -> Any:
    from ostinato.stream.errors import ConfigError
    from ostinato.stream.windowing import (
        DEFAULT_HOP_S,
        DEFAULT_LEFT_CONTEXT_S,
        DEFAULT_RIGHT_CONTEXT_S,
        WindowerConfig,
    )

    geometry = {
        "frame_stride_samples": model.frame_stride_samples,
        "receptive_field_samples": model.receptive_field_samples,
        "sample_rate": model.sample_rate,
    }
    seed_style = args.chunk_samples is not None or args.overlap_samples is not None
    if seed_style:
        if any(v is not None for v in (args.hop_s, args.left_context_s, args.right_context_s)):
            raise ConfigError("use either --chunk-samples/--overlap-samples or --hop-s/--*-context-s, not both")
        return WindowerConfig.from_chunk_overlap(args.chunk_samples or 1600, args.overlap_samples or 400, **geometry)
    return WindowerConfig.from_seconds(
        DEFAULT_HOP_S if args.hop_s is None else args.hop_s,
        DEFAULT_LEFT_CONTEXT_S if args.left_context_s is None else args.left_context_s,
        DEFAULT_RIGHT_CONTEXT_S if args.right_context_s is None else args.right_context_s,
        **geometry,
    )


def _sources(args: argparse.Namespace) -> list[Any]:
    from ostinato.stream.errors import ConfigError
    from ostinato.stream.sources import open_source

    if not 1 <= args.streams <= 256:
        raise ConfigError(f"--streams {args.streams}; expected 1..256")
    sources: list[Any] = []
    for spec in args.source:
        copies = args.streams if not spec.startswith(("mic", "stdin")) else 1
        if copies != args.streams:
            raise ConfigError(f"--streams {args.streams} with --source {spec}: a device or stdin can only be read once")
        for i in range(copies):
            source = open_source(spec, realtime=args.realtime, loop=args.loop)
            if copies > 1 or len(args.source) > 1:
                source.stream_id = f"{source.stream_id}#{len(sources)}"
            sources.append(source)
    return sources


def build_sinks(outs: list[Path], multi_stream: bool) -> list[Any]:
    """Sinks for ``--out`` paths, by extension (``{stream}`` is added to ``.npy`` names when needed).

    Raises:
        ConfigError: On an unknown extension.
    """
    from ostinato.stream.errors import ConfigError
    from ostinato.stream.sinks import JsonlSummarySink, MsgpackFileSink, NpyFileSink

    sinks: list[Any] = []
    for out in outs:
        if out.suffix == ".npy":
            if multi_stream and "{stream}" not in out.name:
                out = out.with_name(f"{out.stem}.{{stream}}{out.suffix}")
            sinks.append(NpyFileSink(out))
        elif out.suffix == ".msgpack":
            sinks.append(MsgpackFileSink(out))
        elif out.suffix == ".jsonl":
            sinks.append(JsonlSummarySink(out))
        else:
            raise ConfigError(f"--out {str(out)!r}: expected a {', '.join(_SINK_SUFFIXES)} file")
    return sinks


def _inference_config(args: argparse.Namespace, max_lag_s: float) -> Any:
    from ostinato.stream.infer import InferenceConfig

    config = InferenceConfig(batch_size=args.batch_size, max_wait_ms=args.max_wait_ms, max_lag_s=max_lag_s, output=args.output)
    if args.no_frontend_cache:
        config = dataclasses.replace(config, frontend=None)
    if args.no_kv_cache:
        config = dataclasses.replace(config, kv=None)
    return config


async def _run(args: argparse.Namespace) -> int:
    from ostinato.stream.infer import InferenceStage
    from ostinato.stream.metrics import StreamMetrics
    from ostinato.stream.pipeline import Pipeline, PipelineConfig

    sources = _sources(args)
    live = any(s.live for s in sources)
    live_lag_s = PROFILES[args.profile].max_lag_s or 5.0  # files are not live: no deadline unless asked
    max_lag_s = args.max_lag_s if args.max_lag_s is not None else (live_lag_s if live else math.inf)
    metrics = StreamMetrics()
    stage = InferenceStage.from_dir(
        args.model, workers=args.workers, provider=args.provider, intra_op_threads=args.threads,
        config=_inference_config(args, max_lag_s),
        metrics=metrics,
    )
    try:
        model = stage.models[0]
        consumers = build_sinks(args.out, multi_stream=len(sources) > 1)
        for _, build in CONSUMER_FACTORIES:
            consumers += build(args)
        for consumer in consumers:  # stages that also need the audio (the matcher) tap the sources
            if hasattr(consumer, "tap_source"):
                sources = [consumer.tap_source(source) for source in sources]
        config = PipelineConfig(windower=_windower_config(args, model), window_queue_windows=args.max_queue,
                                shutdown_timeout_s=args.shutdown_timeout_s)
    except BaseException:
        await stage.close()
        raise
    _print_header(args, model, config, sources, stage)
    pipeline = Pipeline(sources, stage, consumers, config, metrics=metrics)
    reporter = asyncio.ensure_future(_report(pipeline, consumers, args))
    try:
        summary = await pipeline.run(handle_signals=True)
    finally:
        reporter.cancel()
        await asyncio.gather(reporter, return_exceptions=True)
    return _print_summary(summary, args, [line for c in consumers if hasattr(c, "summary_lines") for line in c.summary_lines()])


def _print_header(args: argparse.Namespace, model: Any, config: Any, sources: list[Any], stage: Any) -> None:
    manifest = model.manifest
    session = model.session
    w = config.windower
    err = sys.stderr
    print(f"model    {args.model} ({manifest.precision}, output {args.output or model.default_output})", file=err)
    if manifest.random_init:
        print("         RANDOM WEIGHTS: features are not meaningful for speech; for demos and benchmarks only", file=err)
    print(f"provider {session.providers[0]}" + ("  (requested accelerator unavailable: see ostinato doctor)" if session.fell_back else ""), file=err)
    print(f"windows  hop {w.hop_samples} + left {w.left_context_samples} + right {w.right_context_samples} + "
          f"{w.receptive_field_samples - w.frame_stride_samples} = {w.window_samples} samples "
          f"(added latency {w.added_latency_s * 1000:.0f} ms)", file=err)
    path = "conv front end cached per stream, running statistics" if stage.frontend_cache else "whole windows"
    if stage.kv_cache is not None:
        path += "; transformer over hop + right context with cached left-context K/V"
    print(f"compute  {path}", file=err)
    print(f"streams  {', '.join(s.stream_id for s in sources)}", file=err)


def status_line(status: Any, extra: str = "") -> str:
    """One status line: level meter, audio time, RTF, lag, drops, frames, health."""
    level = status.level_dbfs
    filled = 0 if not math.isfinite(level) else max(0, min(_METER_WIDTH, round((level + 60) / 60 * _METER_WIDTH)))
    meter = "#" * filled + "-" * (_METER_WIDTH - filled)
    level_text = f"{level:4.0f} dBFS" if math.isfinite(level) else "  -- dBFS"
    text = (f"[{meter}] {level_text} | {status.audio_s:7.1f} s audio | RTF {status.inference_rtf:.3f} | "
            f"lag {status.lag_s:.2f} s | drops {status.dropped} | frames {status.frames} | {status.health}")
    if status.health != "ok" and status.reasons:
        text += f" ({status.reasons[0]})"
    return text + (f" | {extra}" if extra else "")


async def _report(pipeline: Any, consumers: list[Any], args: argparse.Namespace) -> None:
    """Redraw the status line every 0.5 s on a terminal (every 5 s otherwise); stop the run at --duration-s."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    tty = sys.stderr.isatty()
    last_plain = started
    while True:
        await asyncio.sleep(0.5)
        now = loop.time()
        if args.duration_s is not None and now - started >= args.duration_s:
            pipeline.stop()
            args.duration_s = None
        if args.quiet:
            continue
        extra = " | ".join(c.status_text() for c in consumers if hasattr(c, "status_text"))
        line = status_line(pipeline.status(), extra)
        if tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif now - last_plain >= 5.0:
            print(line, file=sys.stderr)
            last_plain = now


def _print_summary(summary: Any, args: argparse.Namespace, extra: list[str]) -> int:
    err: IO[str] = sys.stderr
    if err.isatty() and not args.quiet:
        err.write("\n")
    for line in summary.lines() + extra:  # extra: consumers' summary_lines() (e.g. describe counts)
        print(line, file=err)
    for s in summary.failed_streams:
        if s.hint:
            print(f"hint: {s.hint}", file=err)
    if args.summary_json is not None:
        args.summary_json.parent.mkdir(parents=True, exist_ok=True)
        args.summary_json.write_text(json.dumps({**summary.to_dict(), "consumers": extra}, indent=2, default=str))
    failed = len(summary.failed_streams)
    if failed == 0:
        return 0
    return 2 if failed == len(summary.streams) else 1
