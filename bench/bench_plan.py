"""Check ``ostinato plan``'s predictions against a real pipeline run (goal: within 20 %).

For each stream count N: calibrate and predict (ostinato.cmd_plan), then run N real-time streams
of the demo speech through the live pipeline (sources → windower → InferenceStage with the same
workers, batch size and window geometry) and measure the process CPU use (cores), RSS growth and
processing latency p50. Prints one JSON line per N with predicted, measured and their ratio, then
a markdown table. CPU seconds are compared (not wall times): they are the least disturbed by
other work on a shared machine; latency is reported beside it but depends on that load.

    python bench/bench_plan.py --model ~/.cache/ostinato/models/random-base-int8 --streams 1,4 --seconds 15
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ostinato.cmd_plan import Calibration, PlanConfig, predict
from ostinato.profiles import PROFILES
from ostinato.runtime import Wav2Vec2Model
from ostinato.stream.frames import StreamFeatures
from ostinato.stream.infer import InferenceConfig, InferenceStage
from ostinato.stream.metrics import process_rss_bytes
from ostinato.stream.pipeline import Pipeline, PipelineConfig
from ostinato.stream.sinks import CallbackSink
from ostinato.stream.sources import ArraySource
from ostinato.stream.windowing import WindowerConfig

from bench_stream import demo_audio  # run as a script: bench/ is on sys.path


async def _run(models: list[Wav2Vec2Model], cfg: PlanConfig, seconds: float) -> tuple[float, float, Any, list[StreamFeatures]]:
    windower = WindowerConfig.from_seconds(cfg.hop_s, cfg.left_context_s, cfg.right_context_s)
    got: list[StreamFeatures] = []
    stage = InferenceStage(models, InferenceConfig(batch_size=cfg.batch_size, max_wait_ms=5.0, max_lag_s=2.0))
    sources = [ArraySource(demo_audio(seconds, i), stream_id=f"s{i}", block_samples=1600, realtime=True) for i in range(cfg.streams)]
    pipeline = Pipeline(sources, stage, [CallbackSink(got.append)], PipelineConfig(windower=windower))
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = await pipeline.run()
    return time.perf_counter() - wall0, time.process_time() - cpu0, summary, got


def _calibrate_fresh(model_dir: Path, cfg: PlanConfig, calibrate_s: float) -> Calibration:
    """Calibrate in a fresh process, as ``ostinato plan`` does (its RSS deltas need one)."""
    code = ("import json, sys, dataclasses; from pathlib import Path; from ostinato.cmd_plan import PlanConfig, calibrate; "
            "cfg = PlanConfig(**json.loads(sys.argv[2])); "
            "print(json.dumps(dataclasses.asdict(calibrate(Path(sys.argv[1]), cfg, 'cpu', 1, float(sys.argv[3])))))")
    out = subprocess.run([sys.executable, "-c", code, str(model_dir), json.dumps(dataclasses.asdict(cfg)), str(calibrate_s)],
                         capture_output=True, text=True, check=True, timeout=600).stdout
    raw = json.loads(out.strip().splitlines()[-1])
    raw["wall_s"] = {int(k): v for k, v in raw["wall_s"].items()}
    raw["cpu_s"] = {int(k): v for k, v in raw["cpu_s"].items()}
    return Calibration(**raw)


def measure(model_dir: Path, cfg: PlanConfig, seconds: float, calibrate_s: float, first: bool) -> dict[str, Any]:
    """Predict (calibrating in a fresh process), then run for real in this one; one JSON-able record."""
    cal = _calibrate_fresh(model_dir, cfg, calibrate_s)
    plan = predict(cal, cfg)
    before = process_rss_bytes() / 2**20
    models = [Wav2Vec2Model.from_dir(model_dir, provider="cpu", intra_op_threads=1) for _ in range(cfg.workers)]
    try:
        wall_s, cpu_s, summary, got = asyncio.run(_run(models, cfg, seconds))
    finally:
        for m in models:
            m.close()
    # RSS only grows: after a first run freed its sessions, later loads reuse those pages
    grown = process_rss_bytes() / 2**20 - before if first else None
    since = [f.timing.since_received_s for f in got] or [float("nan")]
    cores = cpu_s / wall_s
    predicted_mb = plan.memory_mb - cal.process_rss_mb
    windows = len(got)
    cpu_per_window_predicted = plan.cpu_cores / plan.windows_per_s
    cpu_per_window = cpu_s / max(1, windows)
    dropped = sum(summary.dropped.values())
    return {
        "bench": "plan_vs_run", "streams": cfg.streams, "workers": cfg.workers, "batch_size": cfg.batch_size,
        "hop_s": cfg.hop_s, "window_s": round(cfg.window_samples / 16000, 3), "cores": cfg.cores, "seconds": seconds,
        "cpu_cores_predicted": round(plan.cpu_cores, 4), "cpu_cores_measured": round(cores, 4),
        "cpu_ratio_measured_over_predicted": round(cores / plan.cpu_cores, 3),
        "windows": windows, "dropped": dropped,
        "cpu_ms_per_window_predicted": round(cpu_per_window_predicted * 1000, 1),
        "cpu_ms_per_window_measured": round(cpu_per_window * 1000, 1),
        # per processed window: still meaningful when an overloaded machine drops windows
        "cpu_error_pct": round(abs(cpu_per_window / cpu_per_window_predicted - 1) * 100, 1),
        "memory_mb_predicted_over_process": round(predicted_mb, 1), "rss_mb_grown_measured": None if grown is None else round(grown, 1),
        "latency_ms_predicted": round(plan.latency_ms - plan.algorithmic_latency_ms, 1),
        "latency_p50_ms_measured": round(float(np.percentile(since, 50)) * 1000, 1),
        "max_streams_predicted": plan.max_streams, "loadavg_1m": round(os.getloadavg()[0], 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="exported Wav2Vec2 dir")
    p.add_argument("--streams", default="1,4", help="comma list of stream counts")
    p.add_argument("--seconds", type=float, default=20.0, help="real-time audio per stream")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--calibrate-s", type=float, default=4.0)
    p.add_argument("--profile", default="default", choices=tuple(PROFILES),
                   help="take window geometry, batch and workers from this profile (edge: run under `taskset -c 0`)")
    args = p.parse_args(argv)
    prof = PROFILES[args.profile]
    geometry = {k: v for k, v in (("hop_s", prof.hop_s), ("left_context_s", prof.left_context_s),
                                  ("right_context_s", prof.right_context_s)) if v is not None}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    rows = []
    for i, n in enumerate(int(x) for x in args.streams.split(",") if x):
        cfg = PlanConfig(streams=n, batch_size=prof.batch_size or args.batch_size, workers=prof.workers or args.workers,
                         cores=cores, **geometry)
        row = measure(args.model, cfg, args.seconds, args.calibrate_s, first=i == 0)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| streams | CPU cores predicted / measured | CPU ms per window predicted / measured (error) | drops | memory MB predicted / RSS grown | "
          "inference latency ms predicted / p50 measured | load avg |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['cpu_cores_predicted']} / {r['cpu_cores_measured']} | {r['cpu_ms_per_window_predicted']} / "
              f"{r['cpu_ms_per_window_measured']} ({r['cpu_error_pct']} %) | {r['dropped']} | "
              f"{r['memory_mb_predicted_over_process']} / {r['rss_mb_grown_measured']} | "
              f"{r['latency_ms_predicted']} / {r['latency_p50_ms_measured']} | {r['loadavg_1m']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
