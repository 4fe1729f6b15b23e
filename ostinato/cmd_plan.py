"""``ostinato plan --model DIR --streams N``: predict what a live deployment needs before running it.

A short calibration times :meth:`Wav2Vec2Model.run_batch` on the configured window shape (batch 1
and the batch size) and measures the process memory grown by loading the model and by running
it. :func:`predict` (pure arithmetic, no timing) turns that into CPU use, memory, per-stream
latency and the most real-time streams the configuration sustains.

Model of the pipeline: each stream produces one window (left context + hop + right context) every
``hop_s``; ``workers`` sessions share the windows, each running batches of up to ``batch_size``
windows; a configuration is sustainable while the sessions are busy at most ``target_utilization``
of the time and the CPU seconds fit in the machine's cores at the same utilization.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ostinato.profiles import apply_profile, profile_names

if TYPE_CHECKING:
    from ostinato.stream.windowing import WindowerConfig

__all__ = ["Calibration", "Plan", "PlanConfig", "calibrate", "predict", "register", "run"]

# ``--profile``: see ostinato/profiles.py (edge: one core, one session with one thread, no batching,
# 0.5 s hop with 0.5/0.24 s context). Options given explicitly win over the profile.
_PROFILE_FIELDS = {"window": "hop_s", "left_context": "left_context_s", "right_context": "right_context_s",
                   "batch_size": "batch_size", "workers": "workers", "threads": "threads"}
_DEFAULTS = {"window": 0.5, "left_context": 1.0, "right_context": 0.48, "batch_size": 4, "threads": 1}
_QUEUED_WINDOWS = 8  # per stream: windows waiting for inference plus feature blocks waiting for the consumer


@dataclass(frozen=True, slots=True)
class PlanConfig:
    """The deployment to predict: window geometry (seconds, at 16 kHz) and parallelism."""

    streams: int
    hop_s: float = 0.5
    left_context_s: float = 1.0
    right_context_s: float = 0.48
    batch_size: int = 4
    workers: int = 2
    cores: int = 2
    target_utilization: float = 0.8

    def __post_init__(self) -> None:
        from ostinato.stream.errors import ConfigError

        for name in ("streams", "batch_size", "workers", "cores"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)}; expected an integer >= 1")
        if not 0 < self.hop_s <= 30 or self.left_context_s < 0 or self.right_context_s < 0:
            raise ConfigError(f"hop_s={self.hop_s}, left={self.left_context_s}, right={self.right_context_s}; "
                              "expected 0 < hop <= 30 s and contexts >= 0")
        if not 0 < self.target_utilization <= 1:
            raise ConfigError(f"target_utilization={self.target_utilization}; expected a fraction in (0, 1]")

    @property
    def windower(self) -> WindowerConfig:
        """The window geometry exactly as the pipeline cuts it (each part rounded to the frame stride)."""
        from ostinato.stream.windowing import WindowerConfig

        return WindowerConfig.from_seconds(self.hop_s, self.left_context_s, self.right_context_s)

    @property
    def window_samples(self) -> int:
        """Samples per window exactly as the pipeline cuts it (context + hop + the 80-sample receptive tail)."""
        return self.windower.window_samples


@dataclass(frozen=True, slots=True)
class Calibration:
    """What one session measured on the window shape.

    ``wall_s``/``cpu_s`` map batch size → median seconds per ``run_batch`` call. Memory: the
    process before loading, the one-time cost of the first load (ONNX Runtime's libraries),
    each session's own cost (a second load of the same model) and its arena after running
    (for split models, the front-end and encoder sessions load on first use and count there).
    """

    window_samples: int
    frames_per_window: int
    feature_floats_per_frame: int
    wall_s: dict[int, float]
    cpu_s: dict[int, float]
    process_rss_mb: float
    runtime_rss_mb: float
    session_rss_mb: float
    arena_rss_mb: float
    provider: str
    cache_floats_per_stream: int = 0  # split models: the stream's ring of cached conv frames


@dataclass(frozen=True, slots=True)
class Plan:
    """Predicted needs of a configuration (see :func:`predict`)."""

    streams: int
    batch: int
    windows_per_s: float
    cpu_cores: float
    session_utilization: float
    max_streams: int
    sustainable: bool
    latency_ms: float
    algorithmic_latency_ms: float
    per_stream_mb: float
    memory_mb: float


def _per_window(table: dict[int, float], batch: int) -> float:
    """Seconds per window at ``batch``, interpolated linearly between the measured batch sizes."""
    sizes = sorted(table)
    lo = max([b for b in sizes if b <= batch], default=sizes[0])
    hi = min([b for b in sizes if b >= batch], default=sizes[-1])
    if lo == hi:
        return table[lo] / lo
    per_lo, per_hi = table[lo] / lo, table[hi] / hi
    return per_lo + (per_hi - per_lo) * (batch - lo) / (hi - lo)


def predict(cal: Calibration, cfg: PlanConfig) -> Plan:
    """Turn a calibration into predictions for ``cfg`` (pure arithmetic)."""
    batch = min(cfg.batch_size, max(1, math.ceil(cfg.streams / cfg.workers)))
    windows_per_s = cfg.streams / cfg.hop_s
    wall_per_window = _per_window(cal.wall_s, batch)
    cpu_per_window = _per_window(cal.cpu_s, batch)
    cpu_cores = windows_per_s * cpu_per_window
    utilization = windows_per_s * wall_per_window / cfg.workers
    full_wall = _per_window(cal.wall_s, cfg.batch_size)
    full_cpu = _per_window(cal.cpu_s, cfg.batch_size)
    by_sessions = cfg.target_utilization * cfg.workers * cfg.hop_s / full_wall
    by_cores = cfg.target_utilization * cfg.cores * cfg.hop_s / full_cpu
    max_streams = int(math.floor(min(by_sessions, by_cores)))
    tail_s = (400 - 320) / 16000
    algorithmic_ms = (round(cfg.right_context_s * 50) / 50 + tail_s) * 1000
    latency_ms = algorithmic_ms + wall_per_window * batch * 1000
    per_stream_bytes = 4 * (cal.window_samples + _QUEUED_WINDOWS * round(cfg.hop_s * 16000))
    per_stream_bytes += 4 * _QUEUED_WINDOWS * cal.frames_per_window * cal.feature_floats_per_frame
    per_stream_bytes += 4 * cal.cache_floats_per_stream
    per_stream_mb = per_stream_bytes / 2**20
    memory_mb = (cal.process_rss_mb + cal.runtime_rss_mb + cfg.workers * (cal.session_rss_mb + cal.arena_rss_mb)
                 + cfg.streams * per_stream_mb)
    return Plan(cfg.streams, batch, windows_per_s, cpu_cores, utilization, max_streams,
                cfg.streams <= max_streams, latency_ms, algorithmic_ms, per_stream_mb, memory_mb)


def _rss_mb() -> float:
    from ostinato.stream.metrics import process_rss_bytes

    return process_rss_bytes() / 2**20


def _time_batch(run: Any, seconds: float) -> tuple[float, float]:
    """Median wall and CPU seconds of ``run()`` over ``seconds`` (at least 3 runs, after a warm-up)."""
    run()  # warm-up: allocations and first-run tuning
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < 3 or time.perf_counter() - started < seconds:
        w0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def _window_work(model: Any, windows: np.ndarray, hop_samples: int, left_frames: int = 0) -> Any:
    """What the live stage runs per batch of windows.

    Split models (``frontend.onnx`` + ``encoder.onnx``): the conv front end over each stream's
    new audio only (hop + the receptive-field tail), then the transformer over whole windows of
    cached conv frames; with ``encoder_cached.onnx`` the transformer over each window's new
    frames (hop + right context) attending to ``left_frames`` cached keys/values. Older exports:
    the whole model over whole windows.
    """
    if not getattr(model, "has_split", False):
        return lambda: model.run_batch(windows)
    conv = model.frontend(windows)  # the cache's content (not timed)
    fresh = np.ascontiguousarray(windows[:, : hop_samples + model.receptive_field_samples - model.frame_stride_samples])
    if not getattr(model, "has_cached_encoder", False):
        return lambda: (model.frontend(fresh), model.encode(conv))
    from ostinato.runtime.w2v_kv import cached_feeds

    layout = model.kv_layout
    p, rows = layout.context_frames, conv.shape[0]
    feeds = cached_feeds(layout, [np.concatenate([np.zeros((p, conv.shape[2]), np.float32), c[left_frames:]]) for c in conv],
                         [np.ones(p, np.float32)] * rows, [(layout.empty(1, left_frames)[:, :, 0],)] * rows)
    return lambda: (model.frontend(fresh), model.encode_cached(feeds, [model.default_output]))


def calibrate(model_dir: Path, cfg: PlanConfig, provider: str, threads: int, seconds: float) -> Calibration:
    """Load the model in this process and time one window's work at batch 1 and ``cfg.batch_size``."""
    from ostinato.runtime.w2v_frontend import FrontEndConfig
    from ostinato.runtime.w2v_kv import KVConfig
    from ostinato.runtime.wav2vec2 import Wav2Vec2Model

    before = _rss_mb()
    with Wav2Vec2Model.from_dir(model_dir, provider, threads) as model:
        loaded = _rss_mb()
        rng = np.random.default_rng(0)
        sizes = sorted({1, cfg.batch_size})
        w = cfg.windower
        hop, left = w.hop_samples, w.left_context_samples // w.frame_stride_samples
        wall, cpu = {}, {}
        for b in sizes:
            x = (0.1 * rng.standard_normal((b, cfg.window_samples))).astype(np.float32)
            wall[b], cpu[b] = _time_batch(_window_work(model, x, hop, left), seconds / len(sizes))
        floats = sum(int(o.dim) for o in model.manifest.outputs)  # every output, per frame (no extra session)
        frames = model.num_frames(cfg.window_samples)
        ran = _rss_mb()
        provider_used = model.session.providers[0]
        cache_floats = FrontEndConfig().cache_frames * model.conv_dim if model.has_split else 0
        if model.has_cached_encoder:  # the stream's K/V ring: one window's frames, at most max_past_frames
            cache_floats += min(frames, KVConfig().max_past_frames) * model.kv_layout.frame_bytes // 4
        with Wav2Vec2Model.from_dir(model_dir, provider, threads):
            session_mb = max(0.0, _rss_mb() - ran)
    first_mb = max(0.0, loaded - before)
    return Calibration(cfg.window_samples, frames, floats, wall, cpu, before, max(0.0, first_mb - session_mb),
                       min(session_mb, first_mb), max(0.0, ran - loaded), provider_used, cache_floats)


def register(sub: Any) -> None:
    """Add the ``plan`` subcommand."""
    p = sub.add_parser("plan", help="predict CPU, memory, latency and max real-time streams for a deployment",
                       description="Exit status 0: the streams are sustainable; 1: they are not.")
    p.add_argument("--model", type=Path, required=True, help="exported Wav2Vec2 model directory")
    p.add_argument("--streams", type=int, required=True, help="concurrent real-time streams to plan for")
    p.add_argument("--window", type=float, default=None, metavar="HOP_S", help="new audio per window, s (default 0.5)")
    p.add_argument("--left-context", type=float, default=None, help="past context per window, s (default 1.0)")
    p.add_argument("--right-context", type=float, default=None, help="future context per window, s (default 0.48)")
    p.add_argument("--batch-size", type=int, default=None, help="windows per run_batch (default 4)")
    p.add_argument("--workers", type=int, default=None, help="inference sessions (default: CPU cores)")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per session (default 1)")
    p.add_argument("--provider", default="cpu", choices=("auto", "cpu", "cuda", "tensorrt"))
    p.add_argument("--calibrate-s", type=float, default=4.0, help="seconds of timed calibration (default 4)")
    p.add_argument("--profile", default="default", choices=profile_names(),
                   help="edge: 1 worker x 1 thread, 0.5 s hop, 0.5/0.24 s contexts, batch 1 (use an int8 model)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Calibrate, predict and print the table."""
    apply_profile(args, args.profile, _PROFILE_FIELDS, _DEFAULTS)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    cfg = PlanConfig(streams=args.streams, hop_s=args.window, left_context_s=args.left_context,
                     right_context_s=args.right_context, batch_size=args.batch_size,
                     workers=args.workers or cores, cores=cores)
    cal = calibrate(args.model, cfg, args.provider, args.threads, max(0.5, args.calibrate_s))
    plan = predict(cal, cfg)
    rows = [
        ("provider / cores", f"{cal.provider} / {cores} usable (workers {cfg.workers} x {args.threads} thread(s), "
                             f"profile {args.profile})"),
        ("window", f"{cfg.window_samples / 16000:g} s ({cfg.window_samples} samples, {cal.frames_per_window} frames)"),
        ("calibration, per batch" + (" (new audio's conv front end + encoder)" if cal.cache_floats_per_stream else
                                     " (whole model)"), ", ".join(f"batch {b}: {cal.wall_s[b] * 1000:.1f} ms wall, "
                                                f"{cal.cpu_s[b] * 1000:.1f} ms CPU" for b in sorted(cal.wall_s))),
        ("windows per second", f"{plan.windows_per_s:.1f} (batches of {plan.batch})"),
        ("CPU use", f"{plan.cpu_cores:.2f} cores ({100 * plan.cpu_cores / cores:.0f} % of {cores})"),
        ("session utilization", f"{100 * plan.session_utilization:.0f} %"),
        ("memory", f"{plan.memory_mb:.0f} MB (process {cal.process_rss_mb:.0f} + runtime {cal.runtime_rss_mb:.0f} + "
                   f"{cfg.workers} x (session {cal.session_rss_mb:.0f} + arena {cal.arena_rss_mb:.0f}) + "
                   f"{cfg.streams} x {plan.per_stream_mb:.2f})"),
        ("per-stream latency", f"{plan.latency_ms:.0f} ms ({plan.algorithmic_latency_ms:.0f} window geometry + "
                               f"{plan.latency_ms - plan.algorithmic_latency_ms:.0f} inference, no queueing)"),
        ("max real-time streams", f"{plan.max_streams} (at {100 * cfg.target_utilization:.0f} % utilization)"),
        ("verdict", f"{cfg.streams} stream(s): " + ("sustainable" if plan.sustainable else "NOT sustainable")),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'quantity'.ljust(width)} | prediction |")
    print(f"|{'-' * (width + 2)}|---|")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    load_1m = os.getloadavg()[0]
    print(f"Calibrated on this machine now (load average {load_1m:.1f} on {cores} cores); "
          + ("other processes were competing: wall times, latency and max streams are pessimistic."
             if load_1m > cores else "other load on it changes the figures."))
    return 0 if plan.sustainable else 1
