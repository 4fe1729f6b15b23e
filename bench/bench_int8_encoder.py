"""int8 encoder recipes side by side: CPU time per window and per-frame cosine vs fp32.

Times the split export's ``encoder.onnx`` (conv frames → transformer outputs) of several
model directories on the same conv frames: those of the fp32 model's ``frontend.onnx`` on
windows of the demo speech, at the stream's light (49 frames, 0.985 s) and default (99
frames, 1.985 s) window lengths. One session per model, one intra-op thread, the runs
interleaved round-robin (model A, B, ..., A, B, ...) so other processes' load hits every
model alike; the figure is the median CPU time of the process per run, divided by the batch.
Cosine: per-frame cosine of every output against the fp32 encoder (which matches PyTorch
to ~1e-5), over 16 windows.

    python bench/bench_int8_encoder.py --fp32 /tmp/rb-fp32 \\
        --model old=/tmp/rb-int8-old --model new=/tmp/rb-int8-new

Prints one JSON line per (model, frames, batch) and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.bench_stream import demo_audio  # noqa: E402
from ostinato.export.validate import frame_cosine  # noqa: E402
from ostinato.runtime.manifest import Manifest  # noqa: E402
from ostinato.runtime.w2v_frontend import window_stats  # noqa: E402

Array = npt.NDArray[np.float32]


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class _Frames:
    """Conv frames of demo-speech windows from the fp32 model's front end."""

    def __init__(self, fp32_dir: Path) -> None:
        split = Manifest.read(fp32_dir).extra["split"]
        self.patch = (split["patch_kernel"], split["patch_stride"]) if split["patch_kernel"] else None
        self.front = _session(fp32_dir / "frontend.onnx")

    def __call__(self, frames: int, batch: int, seed: int) -> Array:
        n = 400 + 320 * (frames - 1)
        x = np.stack([demo_audio(n / 16_000 + 0.01, seed * 100 + i)[:n] for i in range(batch)])
        stats = window_stats(x, True, self.patch)
        (conv,) = self.front.run(["conv_features"], {"input_values": x, **stats.feeds()})
        return np.asarray(conv, dtype=np.float32)


def _cosines(models: dict[str, ort.InferenceSession], ref: ort.InferenceSession, conv: Array) -> dict[str, tuple[float, float]]:
    want = ref.run(None, {"conv_features": conv})
    out = {}
    for name, session in models.items():
        got = session.run(None, {"conv_features": conv})
        cos = np.concatenate([frame_cosine(g, w).ravel() for g, w in zip(got, want, strict=True)])
        out[name] = (float(cos.mean()), float(cos.min()))
    return out


def _cpu_ms(models: dict[str, ort.InferenceSession], conv: Array, rounds: int) -> dict[str, float]:
    for session in models.values():
        session.run(None, {"conv_features": conv})
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, session in models.items():
            started = time.process_time()
            session.run(None, {"conv_features": conv})
            times[name].append(time.process_time() - started)
    return {name: statistics.median(v) * 1000 for name, v in times.items()}


def _encoder_file(path: Path) -> Path:
    """``encoder.onnx`` of a model directory, or an ONNX file as given."""
    return path if path.suffix == ".onnx" else path / "encoder.onnx"


def _table(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(r["model"] for r in rows))
    head = "| frames | batch | " + " | ".join(f"{n} CPU ms / window" for n in names) + " | " + \
        " | ".join(f"{n} vs {names[0]}" for n in names[1:]) + " | " + " | ".join(f"{n} cos mean / min" for n in names) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(names) + len(names) - 1)]
    for key in dict.fromkeys((r["frames"], r["batch"]) for r in rows):
        cells = {r["model"]: r for r in rows if (r["frames"], r["batch"]) == key}
        base = cells[names[0]]["cpu_ms_window"]
        lines.append(
            f"| {key[0]} | {key[1]} | " + " | ".join(f"{cells[n]['cpu_ms_window']:.1f}" for n in names) + " | "
            + " | ".join(f"{base / cells[n]['cpu_ms_window']:.2f}×" for n in names[1:]) + " | "
            + " | ".join(f"{cells[n]['cos_mean']:.5f} / {cells[n]['cos_min']:.4f}" for n in names) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True, help="fp32 split export (reference and front end)")
    parser.add_argument("--model", action="append", required=True, help="NAME=DIR (int8 split export) or NAME=FILE.onnx (an encoder graph); first = baseline")
    parser.add_argument("--frames", default="49,99")
    parser.add_argument("--batches", default="1,4,8")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    print(json.dumps({"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                      "onnxruntime": ort.__version__, "loadavg_start": os.getloadavg()[0], "command": " ".join(sys.argv)}))
    models = {spec.split("=", 1)[0]: _session(_encoder_file(Path(spec.split("=", 1)[1]))) for spec in args.model}
    ref = _session(args.fp32 / "encoder.onnx")
    frames_of = _Frames(args.fp32)
    rows = []
    for frames in (int(v) for v in args.frames.split(",")):
        cos = _cosines(models, ref, frames_of(frames, 16, seed=1))
        for batch in (int(v) for v in args.batches.split(",")):
            ms = _cpu_ms(models, frames_of(frames, batch, seed=2), args.rounds)
            for name in models:
                row = {"model": name, "frames": frames, "batch": batch, "cpu_ms_run": round(ms[name], 2),
                       "cpu_ms_window": round(ms[name] / batch, 2), "cos_mean": round(cos[name][0], 6),
                       "cos_min": round(cos[name][1], 5)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(json.dumps({"loadavg_end": os.getloadavg()[0]}))
    print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
