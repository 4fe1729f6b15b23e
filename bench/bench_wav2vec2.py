"""Wav2Vec2 speed and fidelity: PyTorch eager fp32 vs ONNX Runtime fp32 / int8 (/ fp16 on CUDA).

Every engine runs the same windows of real speech (the demo WAV, 16 kHz), normalised as
the runtime does. Timed runs are interleaved round-robin (torch, ort-fp32, ort-int8,
torch, ...), so load from other processes hits every engine alike and the speedup ratios
(torch p50 / engine p50) come from the same run. Fidelity is the per-frame cosine of each
engine's ``last_hidden_state`` against PyTorch fp32 on several windows of each length.

Prints one JSON line per (engine, window, threads) and a markdown table at the end. On a
shared machine the median is inflated by other processes; the minimum run is the least
disturbed, so both ratios are reported.

    python bench/bench_wav2vec2.py --quick          # 1 and 2 s windows, 2 threads
    python bench/bench_wav2vec2.py                  # 0.5/1/2/5 s, threads 1 and 2

Models are exported once into ``--cache`` (validated like any export) and reused.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parent.parent
DEMO_WAV = REPO / "ostinato" / "data" / "demo.wav"
SAMPLE_RATE = 16_000

# Exploration recipes for int8 (``--int8-recipes``); "default" is what `ostinato export` uses.
RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "transformer-only": {"front_end_layers": ()},
    "front-end-unscaled": {"frame_scaled": False},
    "per-channel": {"per_channel": True},
    "reduce-range": {"reduce_range": True},
    "ort-optimizer": {"optimize": True},
    "plain-pos-conv": {"spectral_pos_conv": False},
}

Runner = Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]


@dataclasses.dataclass(slots=True)
class Engine:
    name: str
    run: Runner
    file_mb: float | None = None


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="random:base", help="random:base|random:large or a HF directory")
    p.add_argument("--windows", default="0.5,1,2,5", help="window lengths in seconds, comma-separated")
    p.add_argument("--threads", default="1,2", help="thread counts (torch and ORT intra-op), comma-separated")
    p.add_argument("--reps", type=int, default=15, help="timed runs per engine and setting")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs per engine and setting")
    p.add_argument("--int8-recipes", default="default", help=f"comma-separated, from {sorted(RECIPES)}")
    p.add_argument("--no-fp32", action="store_true", help="skip the ORT fp32 engine")
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "ostinato" / "bench", help="exported models")
    p.add_argument("--quick", action="store_true", help="windows 1,2 s; threads 2; 8 reps")
    p.add_argument("--markdown", type=Path, help="also write the markdown table to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.windows, args.threads, args.reps = "1,2", "2", 8
    args.windows_s = [float(w) for w in args.windows.split(",")]
    args.thread_counts = [int(t) for t in args.threads.split(",")]
    args.recipes = [r for r in args.int8_recipes.split(",") if r]
    bad = [r for r in args.recipes if r not in RECIPES]
    if bad:
        p.error(f"--int8-recipes {bad}: expected names from {sorted(RECIPES)}")
    return args


def _export(model: str, precision: str, recipe: str, cache: Path) -> Path:
    from ostinato.export.quantize import Int8Recipe
    from ostinato.export.wav2vec2 import Wav2Vec2ExportConfig, export_wav2vec2

    tag = model.replace(":", "-").replace("/", "_").strip("_")
    out = cache / f"{tag}-{precision}" if precision != "int8" else cache / f"{tag}-int8-{recipe}"
    if (out / "ostinato.json").is_file():
        return out
    t0 = time.perf_counter()
    config = Wav2Vec2ExportConfig(model=model, out_dir=out, precision=precision, int8_recipe=Int8Recipe(**RECIPES.get(recipe, {})))
    export_wav2vec2(config)
    print(f"# exported {out.name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def _audio(longest_s: float) -> tuple[npt.NDArray[np.float32], str]:
    if DEMO_WAV.is_file():
        import soundfile as sf

        audio, rate = sf.read(DEMO_WAV, dtype="float32")
        if rate == SAMPLE_RATE and audio.ndim == 1 and len(audio) >= int(4 * longest_s * SAMPLE_RATE):
            return audio, DEMO_WAV.name
    # Fallback: speech-like synthetic audio (harmonics, syllable envelope, pauses).
    rng = np.random.default_rng(0)
    t_s = np.arange(int(8 * longest_s * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(120 + 30 * np.sin(2 * np.pi * 0.7 * t_s)) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    env = np.clip(np.sin(2 * np.pi * 3 * t_s), 0, None)
    return (0.3 * env * voiced + 0.01 * rng.standard_normal(len(t_s))).astype(np.float32), "synthetic"


def _windows(audio: npt.NDArray[np.float32], window_s: float, count: int) -> list[npt.NDArray[np.float32]]:
    n = int(window_s * SAMPLE_RATE)
    starts = np.linspace(0, len(audio) - n, count).astype(int)
    out = []
    for s in starts:
        x = audio[s : s + n].astype(np.float64)
        out.append(((x - x.mean()) / np.sqrt(x.var() + 1e-7)).astype(np.float32)[None])
    return out


def _torch_engine(model: str, threads: int) -> Engine:
    import torch

    from ostinato.export._w2v_source import load_source

    torch.set_num_threads(threads)
    # Same seed as the export: same weights; weight norm kept, as Hugging Face runs it.
    source = load_source(model, "features", 0, fold_weight_norm=False)
    net = source.model.eval()

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        with torch.inference_mode():
            return net(torch.from_numpy(x)).last_hidden_state.numpy()

    return Engine("torch-eager-fp32", run)


def _ort_engine(name: str, model_dir: Path, threads: int, provider: str = "cpu") -> Engine:
    from ostinato.runtime.session import Session, SessionConfig

    path = model_dir / "model.onnx"
    session = Session.from_path(path, SessionConfig(provider=provider, intra_op_threads=threads, inter_op_threads=1))

    def run(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return session.run({"input_values": x})["last_hidden_state"]

    return Engine(name, run, path.stat().st_size / 1e6)


def _frame_cosine(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return (a64 * b64).sum(-1) / np.maximum(np.linalg.norm(a64, axis=-1) * np.linalg.norm(b64, axis=-1), 1e-12)


def _measure(engines: list[Engine], windows: list[npt.NDArray[np.float32]], reps: int, warmup: int) -> dict[str, Any]:
    ref = [engines[0].run(w) for w in windows]
    cos = {e.name: np.concatenate([_frame_cosine(e.run(w), r).ravel() for w, r in zip(windows, ref)]) for e in engines}
    x = windows[len(windows) // 2]
    times: dict[str, list[float]] = {e.name: [] for e in engines}
    cpu: dict[str, list[float]] = {e.name: [] for e in engines}
    for i in range(warmup + reps):
        for e in engines:
            c0, t0 = time.process_time(), time.perf_counter()
            e.run(x)
            if i >= warmup:
                times[e.name].append(time.perf_counter() - t0)
                cpu[e.name].append(time.process_time() - c0)
    return {"times": times, "cpu": cpu, "cos": cos}


def _rows(result: dict[str, Any], engines: list[Engine], window_s: float, threads: int) -> list[dict[str, Any]]:
    torch_p50 = statistics.median(result["times"][engines[0].name])
    torch_min = min(result["times"][engines[0].name])
    torch_cpu = statistics.median(result["cpu"][engines[0].name])
    rows = []
    for e in engines:
        t = sorted(result["times"][e.name])
        p50 = statistics.median(t)
        c = result["cos"][e.name]
        rows.append(
            {
                "engine": e.name,
                "window_s": window_s,
                "threads": threads,
                "p50_ms": round(p50 * 1e3, 2),
                "p90_ms": round(t[min(len(t) - 1, int(0.9 * len(t)))] * 1e3, 2),
                "min_ms": round(t[0] * 1e3, 2),
                "rtf": round(p50 / window_s, 4),
                "speedup_vs_torch": round(torch_p50 / p50, 3),
                # The fastest run is the least disturbed by other processes on a shared machine.
                "speedup_vs_torch_min": round(torch_min / t[0], 3),
                # CPU seconds used by the process: with 1 thread, unaffected by waiting for a
                # core that another process holds (with 2 threads it includes spin-waiting).
                "cpu_ms": round(statistics.median(result["cpu"][e.name]) * 1e3, 2),
                "speedup_vs_torch_cpu": round(torch_cpu / statistics.median(result["cpu"][e.name]), 3),
                "cos_min": round(float(c.min()), 5),
                "cos_mean": round(float(c.mean()), 5),
                "file_mb": round(e.file_mb, 1) if e.file_mb else None,
                "reps": len(t),
            }
        )
    return rows


def _machine() -> dict[str, Any]:
    flags = ""
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = line
                break
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    import onnxruntime
    import torch

    return {
        "cpu": model,
        "isa": isa,
        "cores": os.cpu_count(),
        "loadavg_start": os.getloadavg()[0],
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| engine | window s | threads | p50 ms | min ms | CPU ms | RTF | × torch (p50) | × torch (min) "
        "| × torch (CPU) | cos min | cos mean | MB |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['window_s']:g} | {r['threads']} | {r['p50_ms']:.1f} | {r['min_ms']:.1f} | "
            f"{r['cpu_ms']:.1f} | {r['rtf']:.3f} | {r['speedup_vs_torch']:.2f} | {r['speedup_vs_torch_min']:.2f} | "
            f"{r['speedup_vs_torch_cpu']:.2f} | "
            f"{r['cos_min']:.4f} | {r['cos_mean']:.4f} | "
            f"{r['file_mb'] if r['file_mb'] else '-'} |"
        )
    return "\n".join(lines)


def _cuda_loads() -> bool:
    import onnxruntime as ort

    from ostinato.runtime.providers import load_error

    return "CUDAExecutionProvider" in ort.get_available_providers() and load_error("CUDAExecutionProvider") is None


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    machine = _machine()
    print(json.dumps({"machine": machine, "command": " ".join(sys.argv)}))
    dirs = {} if args.no_fp32 else {"ort-fp32": _export(args.model, "fp32", "", args.cache)}
    for recipe in args.recipes:
        dirs[f"ort-int8-{recipe}" if recipe != "default" else "ort-int8"] = _export(args.model, "int8", recipe, args.cache)
    fp16_dir = _export(args.model, "fp16", "", args.cache) if _cuda_loads() else None
    audio, audio_name = _audio(max(args.windows_s))
    rows: list[dict[str, Any]] = []
    for threads in args.thread_counts:
        engines = [_torch_engine(args.model, threads)]
        engines += [_ort_engine(name, d, threads) for name, d in dirs.items()]
        if fp16_dir is not None:
            engines.append(_ort_engine("ort-fp16-cuda", fp16_dir, threads, provider="cuda"))
        for window_s in args.windows_s:
            result = _measure(engines, _windows(audio, window_s, 4), args.reps, args.warmup)
            for row in _rows(result, engines, window_s, threads):
                row["audio"] = audio_name
                print(json.dumps(row), flush=True)
                rows.append(row)
    table = _markdown(rows)
    print(json.dumps({"loadavg_end": os.getloadavg()[0]}))
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
