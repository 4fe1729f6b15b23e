"""Streaming pipeline benchmark: overhead vs raw session runs, real-time latency, stream capacity.

1. overhead: the same windows through (a) a plain loop of ``model.run_batch`` over batches and
   (b) the full pipeline (sources → channels → windower → InferenceStage → consumer), one
   worker, same batch size; runs alternate and the median ratio is reported (goal <= 5 %).
2. latency: N real-time streams (1/4/8) for ``--rt-seconds``; processing latency (newest
   audio in a window received → its features emitted) p50/p99, plus the algorithmic
   latency the window geometry adds.
3. capacity: N real-time streams for increasing N; the largest N with no drop (no window
   older than ``--max-lag-s``, no source overflow) (goal >= 12 at hop 0.5 s, random:base int8).
4. cost: CPU time per window for the default, a light, the seed and a high-fidelity geometry
   (one session, one thread) and the capacity it implies on idle cores: cores x hop / CPU per
   window. Unlike 2. and 3. it does not depend on what else the machine is running. For
   models with the split graph also with the conv-frame cache (front end once per hop, one
   stream's windows in order, encoder batched).

5. throughput (opt-in): ``--throughput-streams N`` streams at full speed (not paced) through the whole
   pipeline (2 workers, batching, the front-end thread); capacity estimate = cores x audio
   seconds / process CPU seconds. Like 4. it measures CPU time, so it survives a shared
   machine better than 3.; unlike 4. it includes everything the pipeline does.

``--cache`` picks the inference paths of the latency, capacity and throughput parts (a comma
list): ``off`` = whole windows through ``model.onnx``, ``conv`` = the conv-frame cache (split
models), ``kv`` = conv cache + left-context K/V cache (exports with ``encoder_cached.onnx``:
the transformer runs only each window's hop + right context), ``on`` = the stage's default
(``kv`` where the model has it, else ``conv``), ``both`` = ``off,on``, ``all`` = ``off,conv,kv``.
The cost part measures every path the model has. The overhead part always compares the
uncached pipeline with plain ``run_batch`` on the same windows.

Prints JSON lines and a markdown table; ``--results bench/RESULTS.md`` rewrites this
benchmark's section there. The machine may be shared: compare ratios from one run.

    python bench/bench_stream.py --model ~/.cache/ostinato/models/random-base-int8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ostinato.runtime import Wav2Vec2Model
from ostinato.runtime.audio import load_audio
from ostinato.runtime.w2v_frontend import FrontEndConfig
from ostinato.runtime.w2v_kv import KVConfig
from ostinato.stream.frames import StreamFeatures, Window
from ostinato.stream.frontend_cache import ConvFrameCache
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.kv_cache import KVCache
from ostinato.stream.pipeline import Pipeline, PipelineConfig
from ostinato.stream.sinks import CallbackSink
from ostinato.stream.sources import ArraySource
from ostinato.stream.windowing import Windower, WindowerConfig

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "ostinato" / "data" / "demo.wav"
_START, _END = "<!-- bench_stream:start -->", "<!-- bench_stream:end -->"


def _emit(record: dict[str, Any]) -> dict[str, Any]:
    print(json.dumps(record), flush=True)
    return record


def demo_audio(seconds: float, seed: int) -> np.ndarray:
    """``seconds`` of the demo speech, looped, starting at a point that depends on ``seed``."""
    speech, _ = load_audio(DEMO, 16000)
    reps = int(np.ceil(seconds * 16000 / len(speech))) + 1
    offset = (seed * 7919) % len(speech)  # streams start at different points of the speech
    return np.tile(speech, reps)[offset : offset + int(seconds * 16000)].astype(np.float32)


def _raw_seconds(models: list[Wav2Vec2Model], audios: list[np.ndarray], config: WindowerConfig, batch: int) -> float:
    """Cut the windows (untimed), then time plain ``run_batch`` calls over equal-length batches."""
    windows = []
    for i, audio in enumerate(audios):
        w = Windower(config, str(i))
        windows += w.push(audio) + w.flush()
    by_len: dict[int, list[np.ndarray]] = {}
    for win in windows:
        by_len.setdefault(win.num_samples, []).append(win.samples)
    batches = [np.stack(rows[i : i + batch]) for rows in by_len.values() for i in range(0, len(rows), batch)]
    started = time.perf_counter()
    for x in batches:
        models[0].run_batch(x)
    return time.perf_counter() - started


class _DelayedSource(ArraySource):
    """An ArraySource that starts ``delay_s`` later (streams that did not all start at once)."""

    def __init__(self, audio: np.ndarray, delay_s: float, **kwargs: Any) -> None:
        super().__init__(audio, **kwargs)
        self._delay_s = delay_s

    async def chunks(self) -> Any:
        await asyncio.sleep(self._delay_s)
        async for chunk in super().chunks():
            yield chunk


async def _pipeline(models: list[Wav2Vec2Model], audios: list[np.ndarray], config: WindowerConfig, batch: int,
                    realtime: bool, max_lag_s: float = float("inf"), workers: int = 1,
                    cache: str = "off", stagger_s: float = 0.0) -> tuple[float, Any, list[StreamFeatures]]:
    got: list[StreamFeatures] = []
    frontend = FrontEndConfig() if cache != "off" else None
    kv = KVConfig() if cache == "kv" else None
    stage = InferenceStage(models[:workers], InferenceConfig(batch_size=batch, max_wait_ms=5.0, max_lag_s=max_lag_s,
                                                             frontend=frontend, kv=kv))
    # stagger_s > 0: stream i starts i/N of it later (real streams do not start in phase; 0 = all at once)
    sources = [_DelayedSource(a, stagger_s * i / len(audios), stream_id=f"s{i}", block_samples=1600, realtime=realtime)
               for i, a in enumerate(audios)]
    pipeline = Pipeline(sources, stage, [CallbackSink(got.append)], PipelineConfig(windower=config))
    started = time.perf_counter()
    summary = await pipeline.run()
    return time.perf_counter() - started, summary, got


def bench_overhead(models: list[Wav2Vec2Model], config: WindowerConfig, args: argparse.Namespace) -> dict[str, Any]:
    audios = [demo_audio(args.overhead_seconds, i) for i in range(args.overhead_streams)]
    raw, piped, batch_means = [], [], []
    for _ in range(args.repeats):
        raw.append(_raw_seconds(models, audios, config, args.batch_size))
        seconds, summary, _ = asyncio.run(_pipeline(models, audios, config, args.batch_size, realtime=False, cache="off"))
        piped.append(seconds)
        batch_means.append(summary.mean_batch_size)
    ratios = [p / r for p, r in zip(piped, raw, strict=True)]
    return _emit({
        "bench": "stream_overhead", "streams": len(audios), "audio_s": round(args.overhead_seconds * len(audios), 1),
        "batch_size": args.batch_size, "pipeline_mean_batch": round(statistics.mean(batch_means), 2),
        "raw_s": [round(x, 3) for x in raw], "pipeline_s": [round(x, 3) for x in piped],
        "overhead_pct_median": round((statistics.median(ratios) - 1) * 100, 2),
        "overhead_pct_min": round((min(ratios) - 1) * 100, 2),
    })


def _modes(models: list[Wav2Vec2Model], args: argparse.Namespace) -> list[str]:
    """Inference paths to run (off / conv / kv), those the model has."""
    model = models[0]
    if not model.has_split:
        return ["off"]
    on = "kv" if model.has_cached_encoder else "conv"
    aliases = {"on": [on], "both": ["off", on], "all": ["off", "conv", "kv"]}
    names = [x for part in args.cache.split(",") for x in aliases.get(part, [part])]
    return [x for x in dict.fromkeys(names) if x != "kv" or model.has_cached_encoder]


def _latency_record(bench: str, n: int, config: WindowerConfig, summary: Any, got: list[StreamFeatures]) -> dict[str, Any]:
    since = np.array([f.timing.since_received_s for f in got]) if got else np.zeros(1)
    tail_s = (config.receptive_field_samples - config.frame_stride_samples) / config.sample_rate
    return {
        "bench": bench, "streams": n, "audio_s": round(summary.audio_s, 1), "frames": summary.frames,
        "dropped": sum(summary.dropped.values()), "drops": summary.dropped,
        "latency_p50_ms": round(float(np.percentile(since, 50)) * 1000, 1),
        "latency_p99_ms": round(float(np.percentile(since, 99)) * 1000, 1),
        "algorithmic_latency_ms": [round((config.right_context_samples / config.sample_rate + tail_s) * 1000, 1),
                                   round((config.hop_samples + config.right_context_samples) / config.sample_rate * 1000 + tail_s * 1000, 1)],
        "inference_rtf": round(summary.inference_rtf, 4), "mean_batch": round(summary.mean_batch_size, 2),
    }


def bench_latency(models: list[Wav2Vec2Model], config: WindowerConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for cache in _modes(models, args):
        for n in args.latency_streams:
            audios = [demo_audio(args.rt_seconds, i) for i in range(n)]
            _, summary, got = asyncio.run(_pipeline(models, audios, config, args.batch_size, True, args.max_lag_s, args.workers, cache))
            rows.append(_emit({**_latency_record("stream_latency", n, config, summary, got), "cache": cache}))
    return rows


def bench_capacity(models: list[Wav2Vec2Model], config: WindowerConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    return [_capacity(models, config, args, cache) for cache in _modes(models, args)]


def _capacity(models: list[Wav2Vec2Model], config: WindowerConfig, args: argparse.Namespace, cache: str) -> dict[str, Any]:
    best, rows = 0, []
    hop_ms = config.hop_samples / config.sample_rate * 1000
    for n in args.capacity_streams:
        audios = [demo_audio(args.rt_seconds, i) for i in range(n)]
        cpu0 = time.process_time()
        _, summary, got = asyncio.run(_pipeline(models, audios, config, args.capacity_batch, True, args.max_lag_s, args.workers, cache,
                                                args.stagger_s))
        row = {**_latency_record("stream_capacity_step", n, config, summary, got), "cache": cache, "stagger_s": args.stagger_s,
               "cpu_s_per_audio_s": round((time.process_time() - cpu0) / max(summary.audio_s, 1e-9), 4)}
        # Kept up: nothing dropped, i.e. no window got older than --max-lag-s and no source
        # queue overflowed. (p99 latency includes the start-up burst: the first windows of a
        # stream all wait for the first full window of audio.)
        row["sustained"] = row["dropped"] == 0
        rows.append(_emit(row))
        if not row["sustained"]:
            break
        best = n
    return _emit({"bench": "stream_capacity", "cache": cache, "max_realtime_streams": best, "hop_s": hop_ms / 1000,
                  "workers": args.workers, "batch_size": args.capacity_batch, "steps": [r["streams"] for r in rows]})


def bench_throughput(models: list[Wav2Vec2Model], default: WindowerConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """End-to-end CPU cost of real streams at full speed, per geometry and cache setting."""
    rows = []
    audios = [demo_audio(args.cost_seconds, i) for i in range(args.throughput_streams)]
    for name in ("default", "light", "low-latency"):
        config = _preset_config(name, default)
        for cache in _modes(models, args):
            cpu0 = time.process_time()
            wall_s, summary, _ = asyncio.run(_pipeline(models, audios, config, args.batch_size, False, workers=args.workers, cache=cache))
            cpu_s = time.process_time() - cpu0
            rows.append(_emit({
                "bench": "stream_throughput", "preset": name, "cache": cache, "streams": len(audios),
                "audio_s": round(summary.audio_s, 1), "frames": summary.frames, "cpu_s": round(cpu_s, 2),
                "wall_s": round(wall_s, 2), "mean_batch": round(summary.mean_batch_size, 2),
                "cpu_s_per_audio_s": round(cpu_s / summary.audio_s, 4),
                "capacity_estimate_streams": round((os.cpu_count() or 1) * summary.audio_s / cpu_s, 1),
            }))
    return rows


_PRESETS = {
    "default": (None, None, None),
    "light": (0.5, 0.24, 0.24),
    "low-latency": (0.5, 2.0, 0.0),  # --profile low-latency
    "seed": "seed",
    "fidelity": (0.5, 2.0, 2.0),
}


def _preset_config(name: str, default: WindowerConfig) -> WindowerConfig:
    preset = _PRESETS[name]
    if preset == "seed":
        return WindowerConfig.from_chunk_overlap(1600, 400)
    if preset == (None, None, None):
        return default
    hop_s, left_s, right_s = preset  # type: ignore[misc]
    return WindowerConfig.from_seconds(hop_s, left_s, right_s)


def bench_cost(models: list[Wav2Vec2Model], default: WindowerConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU time per window (one session, one thread): a load-independent capacity estimate."""
    rows = []
    audio = demo_audio(args.cost_seconds, 0)
    extra = {f"left{left:g}-right{right:g}": (0.5, left, right) for left, right in args.cost_extra}
    for name in [*_PRESETS, *extra]:
        config = WindowerConfig.from_seconds(*extra[name]) if name in extra else _preset_config(name, default)
        windows = [w for w in Windower(config).push(audio) if w.num_samples == config.window_samples]
        x = np.stack([w.samples for w in windows])
        if models[0].has_split:
            rows += _cost_cached(models[0], name, config, windows, args)
        if models[0].has_cached_encoder and name != "seed":  # seed: one frame of left context, nothing to cache
            rows += _cost_kv(models[0], name, config, args)
        for batch in (1, args.batch_size):
            models[0].run_batch(x[:batch])  # warm-up for this shape
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for i in range(0, len(x) - batch + 1, batch):
                models[0].run_batch(x[i : i + batch])
            n = (len(x) // batch) * batch
            rows.append(_emit(_cost_row(name, config, batch, n, time.process_time() - cpu0, time.perf_counter() - wall0)))
    return rows


def _cost_row(name: str, config: WindowerConfig, batch: int, n: int, cpu_total_s: float, wall_total_s: float,
              cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """One ``stream_cost`` record; ``cache`` holds the conv-cache split figures (placed after the wall time)."""
    cpu_s, wall_s = cpu_total_s / n, wall_total_s / n
    hop_s = config.hop_samples / config.sample_rate
    return {
        "bench": "stream_cost", "cache": cache is not None, "preset": name, "window_s": config.window_samples / config.sample_rate,
        "hop_s": hop_s, "added_latency_s": round(config.added_latency_s, 3), "batch": batch, "windows": n,
        "cpu_ms_per_window": round(cpu_s * 1000, 1), "wall_ms_per_window": round(wall_s * 1000, 1),
        **(cache or {}),
        "cpu_rtf_per_stream": round(cpu_s / hop_s, 4),
        "capacity_estimate_streams": round((os.cpu_count() or 1) * hop_s / cpu_s, 1),
    }


def _cost_cached(model: Wav2Vec2Model, name: str, config: WindowerConfig, windows: list[Window],
                 args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU per window with the conv-frame cache: one stream's full windows in order, encoder batched."""
    rows = []
    for batch in (1, args.batch_size):
        state = model.new_frontend_state()
        front_s = enc_s = 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        n = (len(windows) // batch) * batch
        for i in range(0, n, batch):
            t0 = time.process_time()
            conv = np.stack([state.conv_frames(model.frontend, w.samples, w.start_sample // 320) for w in windows[i : i + batch]])
            t1 = time.process_time()
            model.encode(conv, [model.default_output])
            front_s, enc_s = front_s + t1 - t0, enc_s + time.process_time() - t1
        split = {"frontend_cpu_ms_per_window": round(front_s / n * 1000, 1), "encoder_cpu_ms_per_window": round(enc_s / n * 1000, 1),
                 "conv_frames_computed": state.frames_computed, "conv_frames_reused": state.frames_reused}
        rows.append(_emit(_cost_row(name, config, batch, n, time.process_time() - cpu0, time.perf_counter() - wall0, split)))
    return rows


def _cost_kv(model: Wav2Vec2Model, name: str, config: WindowerConfig, args: argparse.Namespace) -> list[dict[str, Any]]:
    """CPU per window with conv + K/V caches: ``batch`` streams side by side (a stream's windows
    depend on each other), each window's front end for its hop, the transformer over hop + right
    context. Timed from the first window with a full left context (the stream start runs
    untimed: its windows carry extra right context and load the session)."""
    rows = []
    for batch in (1, args.batch_size):
        streams = [[w for w in Windower(config, f"s{j}").push(demo_audio(args.cost_seconds, j))
                    if w.num_samples == config.window_samples] for j in range(batch)]
        front, kv = ConvFrameCache(FrontEndConfig(), 320), KVCache(KVConfig(), 320)
        left = config.left_context_samples // 320
        front_s = enc_s = wall_s = 0.0
        n = encoded = 0
        for k in range(min(map(len, streams))):
            ws = [s[k] for s in streams]
            t0, w0 = time.process_time(), time.perf_counter()
            conv = front.conv_batch(model, ws)
            t1 = time.process_time()
            _, frames = kv.encode(model, ws, conv, model.default_output, front)
            if ws[0].core_start_frame - ws[0].start_sample // 320 == left:
                front_s, enc_s, wall_s = front_s + t1 - t0, enc_s + time.process_time() - t1, wall_s + time.perf_counter() - w0
                n, encoded = n + len(ws), encoded + frames
        split = {"frontend_cpu_ms_per_window": round(front_s / n * 1000, 1), "encoder_cpu_ms_per_window": round(enc_s / n * 1000, 1),
                 "transformer_frames_per_window": round(encoded / n, 1), "window_frames": config.window_samples // 320,
                 "kv_bytes_per_stream": kv.nbytes // batch}
        row = _cost_row(name, config, batch, n, front_s + enc_s, wall_s, split)
        rows.append(_emit({**row, "cache": "kv"}))
    return rows


def _table(overhead: dict[str, Any] | None, latency: list[dict[str, Any]], capacity: list[dict[str, Any]],
           cost: list[dict[str, Any]], args: argparse.Namespace, config: WindowerConfig,
           throughput: list[dict[str, Any]] | None = None) -> str:
    throughput = throughput or []
    lines = [
        f"Model `{args.model}` (random weights), window hop {config.hop_samples / 16000:g} s + left "
        f"{config.left_context_samples / 16000:g} s + right {config.right_context_samples / 16000:g} s; "
        f"{os.cpu_count()} cores, shared with other work while measured; one run of "
        f"`python bench/bench_stream.py {' '.join(sys.argv[1:])}`.",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    if overhead:
        lines.append(f"| pipeline overhead vs raw `run_batch` on the same windows (median of {args.repeats}) | "
                     f"{overhead['overhead_pct_median']:+.1f} % (min {overhead['overhead_pct_min']:+.1f} %, goal <= 5 %) |")
    for r in latency:
        lines.append(f"| {r['streams']} real-time stream(s){_cache_label(r)}: processing latency p50 / p99 | {r['latency_p50_ms']:.0f} / "
                     f"{r['latency_p99_ms']:.0f} ms (+ {r['algorithmic_latency_ms'][0]:.0f}..{r['algorithmic_latency_ms'][1]:.0f} ms "
                     f"window geometry), drops {r['dropped']} |")
    for r in cost:
        split = (f" (front end {r['frontend_cpu_ms_per_window']:.0f} + encoder {r['encoder_cpu_ms_per_window']:.0f})"
                 if r["cache"] else "")
        lines.append(f"| CPU per window{_cache_label(r)}, {r['preset']} ({r['window_s']:.2f} s windows, hop {r['hop_s']:g} s, "
                     f"batch {r['batch']}) | {r['cpu_ms_per_window']:.0f} ms{split} -> at most {r['capacity_estimate_streams']:.1f} "
                     f"real-time streams on {os.cpu_count()} idle cores |")
    for r in throughput:
        lines.append(f"| {r['streams']} streams at full speed{_cache_label(r)}, {r['preset']}: CPU per audio second | "
                     f"{r['cpu_s_per_audio_s'] * 1000:.0f} ms -> at most {r['capacity_estimate_streams']:.1f} real-time streams "
                     f"on {os.cpu_count()} idle cores |")
    for c in capacity:
        lines.append(f"| max real-time streams without drops{_cache_label(c)} (deadline {args.max_lag_s:g} s, {args.workers} workers) | "
                     f"{c['max_realtime_streams']} (tried {c['steps']}; goal >= 12) |")
    return "\n".join(lines)


def _cache_label(row: dict[str, Any]) -> str:
    cache = row.get("cache")
    return ", conv + K/V cache" if cache == "kv" else ", conv cache" if cache in (True, "conv") else ", whole windows"


def _write_results(path: Path, table: str) -> None:
    section = f"{_START}\n## Streaming pipeline (bench/bench_stream.py)\n\n{table}\n{_END}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if _START in text and _END in text:
        text = text[: text.index(_START)] + section + text[text.index(_END) + len(_END) :]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="exported Wav2Vec2 dir (e.g. random:base int8)")
    p.add_argument("--hop-s", type=float, default=None)
    p.add_argument("--left-context-s", type=float, default=None)
    p.add_argument("--right-context-s", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=2, help="sessions for the real-time parts (1 thread each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--overhead-streams", type=int, default=4)
    p.add_argument("--overhead-seconds", type=float, default=20.0)
    p.add_argument("--rt-seconds", type=float, default=20.0)
    p.add_argument("--latency-streams", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8])
    p.add_argument("--capacity-streams", type=lambda s: [int(x) for x in s.split(",")], default=[8, 10, 12, 14, 16, 20])
    p.add_argument("--capacity-batch", type=int, default=8)
    p.add_argument("--max-lag-s", type=float, default=2.0)
    p.add_argument("--stagger-s", type=float, default=0.0,
                   help="capacity: spread the streams' starts over this many seconds (0: all start at once, in phase)")
    p.add_argument("--cost-seconds", type=float, default=12.0, help="audio for the CPU-per-window part")
    p.add_argument("--cost-extra", type=lambda s: [tuple(float(v) for v in x.split(":")) for x in s.split(",") if x],
                   default=[], help="more LEFT:RIGHT geometries (seconds, hop 0.5 s) for the cost part, e.g. 1:0.24,4:0.24")
    p.add_argument("--cache", default="on",
                   help="inference paths for the latency/capacity/throughput parts: comma list of off, conv, kv, "
                        "on (the stage default: kv where the model has it), both (off,on), all (off,conv,kv)")
    p.add_argument("--throughput-streams", type=int, default=0,
                   help="streams of --cost-seconds audio for the throughput part (0: skip it)")
    p.add_argument("--skip", default="", help="comma list of parts to skip: overhead,latency,capacity,cost,throughput")
    p.add_argument("--results", type=Path, default=None, help="update this markdown file's bench_stream section")
    args = p.parse_args(argv)
    defaults = WindowerConfig()
    config = WindowerConfig.from_seconds(
        args.hop_s if args.hop_s is not None else defaults.hop_samples / 16000,
        args.left_context_s if args.left_context_s is not None else defaults.left_context_samples / 16000,
        args.right_context_s if args.right_context_s is not None else defaults.right_context_samples / 16000,
    )
    skip = set(args.skip.split(","))
    models = [Wav2Vec2Model.from_dir(args.model, provider="cpu", intra_op_threads=1) for _ in range(max(1, args.workers))]
    try:
        overhead = bench_overhead(models, config, args) if "overhead" not in skip else None
        latency = bench_latency(models, config, args) if "latency" not in skip else []
        capacity = bench_capacity(models, config, args) if "capacity" not in skip else []
        cost = bench_cost(models, config, args) if "cost" not in skip else []
        run_throughput = args.throughput_streams > 0 and "throughput" not in skip
        throughput = bench_throughput(models, config, args) if run_throughput else []
    finally:
        for m in models:
            m.close()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    table = _table(overhead, latency, capacity, cost, args, config, throughput) + f"\n\nLoad average at the end of the run: {load:.1f}."
    print("\n" + table)
    if args.results is not None:
        _write_results(args.results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
