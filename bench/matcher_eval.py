"""Labelled evaluation of the live pattern matcher against baselines (seeded, deterministic).

Streams come from ``matcher_streams.py`` (espeak-ng phrases in several voices/speeds,
synthetic jingles, non-repeating filler over noise or music-like beds; repeats altered by
gain, tempo (sox) and noise, or — the broadcast conditions, ``--conditions music3,phone,mp3``
— a music bed 3 dB under them, a GSM telephone line or 32 kbit/s MP3; control streams with
hard negatives, silence, DC, hum and a loop). Each stream is pushed through the real
streaming path in 0.1 s blocks: log-mel (or Wav2Vec2 frames) → :class:`PatternMatcher` →
events, then scored (``matcher_scoring.py``). Baselines run on the same frames: exhaustive
self-similarity on log-mel and STUMPY ``stumpi``; their thresholds are picked on separate
calibration seeds. Also measured: matcher CPU per audio second vs buffer length and library
query-by-example latency at 100k patterns. Prints JSON lines and markdown tables; writes plots to ``--plots``.

    OPENBLAS_NUM_THREADS=1 nice python bench/matcher_eval.py --quick
    OPENBLAS_NUM_THREADS=1 nice python bench/matcher_eval.py --model ~/.cache/ostinato/models/random-base-int8
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from matcher_baselines import SelfSimilarity, Stumpi  # noqa: E402
from matcher_scoring import Detection, Score, score_stream  # noqa: E402
from matcher_streams import BROADCAST_CONDITIONS, CONDITIONS, CORE_CONDITIONS, Stream, make_control_stream, make_stream  # noqa: E402

from ostinato.runtime.logmel import LogMel  # noqa: E402
from ostinato.stream.events import MatchEvent  # noqa: E402
from ostinato.stream.matcher import FeatureBlock, MatcherConfig, PatternMatcher  # noqa: E402

CACHE = Path.home() / ".cache" / "ostinato" / "matcher_eval"
# Seeds: reported runs use --seed-base (default TEST_SEED = seeds B; 30000 = seeds C and
# 40000 = seeds D, first run on 2026-11-26); the log-mel defaults of 2026-11-25/26 were tuned
# on streams 7001-7006 and controls 7101-7120 (TUNING_SEEDS; streams 7007-7012 added in the
# fifth round to study the remaining 10 dB misses), which a report must not reuse; baseline
# thresholds are calibrated on CAL_SEED.
TEST_SEED, CAL_SEED = 20000, 5000
TUNING_SEEDS = (*range(7001, 7013), *range(7101, 7121))


def emit(record: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")


def run_matcher(frames: np.ndarray, energy: np.ndarray, config: MatcherConfig, name: str) -> tuple[list[Detection], float]:
    m = PatternMatcher(config, stream=name)
    events = []
    t0 = time.process_time()
    for i in range(0, len(frames), 5):  # 0.1 s blocks, as a live source delivers them
        events += m.push(FeatureBlock(frames[i : i + 5], energy[i : i + 5]))
    events += m.flush()
    cpu = time.process_time() - t0
    dets = [Detection(e.first_start_s, e.first_end_s, e.start_s, e.end_s, e.score, e.detected_at_s) for e in events if isinstance(e, MatchEvent)]
    return dets, cpu


def unit_frames(frames: np.ndarray, energy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The matcher's normalised frames and activity, for the baselines."""
    c = MatcherConfig.for_features("logmel")
    gate = c.activity_gate()
    norm = c.frame_normalizer(frames.shape[1])
    units, acts = [], []
    for i in range(0, len(frames), 10):
        a = gate.update(energy[i : i + 10])
        units.append(norm.normalize(frames[i : i + 10], a))
        acts.append(a)
    return np.concatenate(units), np.concatenate(acts)


def run_baseline(kind: str, threshold: float, unit: np.ndarray, active: np.ndarray, buffer_s: float, profile: Any = None) -> tuple[list[Detection], float]:
    """Detections of a baseline; for stumpi pass ``profile`` from :func:`stumpi_profile`."""
    t0 = time.process_time()
    if kind == "selfsim":
        b = SelfSimilarity(buffer_s, threshold)
        for i in range(0, len(unit), 5):
            b.push(unit[i : i + 5], active[i : i + 5])
        return b.flush(), time.process_time() - t0
    dist, nn, first, cpu = profile
    return Stumpi().detect(dist, nn, first, threshold, len(unit)), cpu + time.process_time() - t0


def stumpi_profile(unit: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, float]:
    t0 = time.process_time()
    dist, nn, first = Stumpi().profile(unit)
    return dist, nn, first, time.process_time() - t0


class Features:
    """Frames of a stream per method (log-mel always; Wav2Vec2 with --model)."""

    def __init__(self, model_dir: Path | None, layer: int | None) -> None:
        self.logmel = LogMel()
        self.model = None
        self.layer = layer
        if model_dir is not None:
            from ostinato.runtime.wav2vec2 import Wav2Vec2Model

            self.model = Wav2Vec2Model.from_dir(model_dir, intra_op_threads=1)

    def compute(self, stream: Stream) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        lm = self.logmel.compute(stream.audio)
        out = {"logmel": (lm.features.frames, lm.energy_db)}
        if self.model is not None:
            output = f"hidden_state_{self.layer}" if self.layer is not None else None
            w = self.model.features(stream.audio, 16000, output=output).frames
            n = min(len(w), len(lm))
            out["wav2vec2"] = (w[:n], lm.energy_db[:n])
        return out


def calibrate(args: argparse.Namespace, feats: Features) -> dict[str, float]:
    """Baseline thresholds with the best F1 on calibration seeds (clean + snr10 + control)."""
    grids = {"selfsim": [0.45, 0.55, 0.65, 0.75], "stumpi": [0.5, 0.8, 1.2, 1.6, 2.0]}
    streams = [make_stream(CAL_SEED + i, CONDITIONS[c], args.duration_s, CACHE) for i, c in enumerate(("clean", "snr10"))]
    streams.append(make_control_stream(CAL_SEED + 9, args.duration_s, CACHE))
    lm = LogMel()
    prepared = []
    for s in streams:
        out = lm.compute(s.audio)
        prepared.append((s, *unit_frames(out.features.frames, out.energy_db)))
    best: dict[str, float] = {}
    for kind in args.baselines:
        scores = []
        profiles = [stumpi_profile(unit) if kind == "stumpi" else None for _, unit, _ in prepared]
        for thr in grids[kind]:
            total = Score()
            for (s, unit, active), prof in zip(prepared, profiles, strict=True):
                dets, _ = run_baseline(kind, thr, unit, active, args.buffer_s, prof)
                total.add(score_stream(s, dets))
            scores.append((total.f1, thr))
            emit({"calibration": kind, "threshold": thr, "f1": round(total.f1, 3), "tp": total.tp, "fp": total.fp, "fn": total.fn}, args.out)
        best[kind] = max(scores)[1]
    return best


def evaluate(args: argparse.Namespace) -> dict[tuple[str, str], Score]:
    feats = Features(args.model, args.layer)
    thresholds = calibrate(args, feats) if args.baselines else {}
    results: dict[tuple[str, str], Score] = {}
    conditions = [*args.conditions, "control"]
    for cond in conditions:
        for k in range(args.control_seeds if cond == "control" else args.seeds):
            seed = args.seed_base + 10 * conditions.index(cond) + k
            if seed in TUNING_SEEDS:
                raise SystemExit(f"seed {seed} was used to tune the defaults; pick another --seed-base")
            if cond == "control":
                stream = make_control_stream(seed, args.control_s, CACHE)
            else:
                stream = make_stream(seed, CONDITIONS[cond], args.duration_s, CACHE)
            frames = feats.compute(stream)
            for kind, (x, e) in frames.items():
                method = f"ostinato-{kind}" + ("-random-weights" if kind == "wav2vec2" else "") + args.label
                config = MatcherConfig.for_features(kind, buffer_s=args.buffer_s, **args.overrides)
                dets, cpu = run_matcher(x, e, config, stream.name)
                _record(results, args, cond, method, stream, dets, cpu)
            if thresholds:
                unit, active = unit_frames(*frames["logmel"])
                for kind, thr in thresholds.items():
                    prof = stumpi_profile(unit) if kind == "stumpi" else None
                    dets, cpu = run_baseline(kind, thr, unit, active, args.buffer_s, prof)
                    _record(results, args, cond, f"{kind}-logmel", stream, dets, cpu)
    return results


def _record(results: dict[tuple[str, str], Score], args: argparse.Namespace, cond: str, method: str, stream: Stream, dets: list[Detection], cpu: float) -> None:
    score = score_stream(stream, dets)
    results.setdefault((cond, method), Score()).add(score)
    emit({"stream": stream.name, "condition": cond, "method": method, "tp": score.tp, "fp": score.fp, "fn": score.fn,
          "fp_on_negatives": score.fp_on_negatives, "audio_s": round(stream.duration_s, 1), "cpu_s": round(cpu, 2),
          "latencies_s": [round(x, 3) for x in score.latencies_s], "scored": score.scored}, args.out)


def cost_vs_buffer(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Matcher (and exhaustive self-similarity) CPU per audio second once the buffer is full."""
    lm = LogMel()
    pieces, total = [], 0.0
    seed = 9000
    need = max(args.cost_buffers) + args.cost_measure_s + 10
    while total < need:
        s = make_stream(seed, CONDITIONS["snr20"], 300, CACHE)
        out = lm.compute(s.audio)
        pieces.append((out.features.frames, out.energy_db))
        total += s.duration_s
        seed += 1
    frames = np.concatenate([p[0] for p in pieces])
    energy = np.concatenate([p[1] for p in pieces])
    rows = []
    measure = int(args.cost_measure_s * 50)
    for buffer_s in args.cost_buffers:
        m = PatternMatcher(MatcherConfig.for_features("logmel", buffer_s=buffer_s, **args.overrides), stream="cost")
        fill = int(buffer_s * 50) + 500
        for i in range(0, fill, 500):
            m.push(FeatureBlock(frames[i : i + 500], energy[i : i + 500]))
        t0 = time.process_time()
        for i in range(fill, fill + measure, 5):
            m.push(FeatureBlock(frames[i : i + 5], energy[i : i + 5]))
        cpu = time.process_time() - t0
        row = {"cost": f"ostinato-logmel{args.label}", "buffer_s": buffer_s, "core_fraction": round(cpu / args.cost_measure_s, 5), "memory_mb": round(m.nbytes / 1e6, 1)}
        rows.append(row)
        emit(row, args.out)
        if buffer_s <= args.selfsim_cost_max_s:
            unit, active = unit_frames(frames[: fill + measure], energy[: fill + measure])
            b = SelfSimilarity(buffer_s, 0.65)
            b.frames = np.zeros((b.capacity, unit.shape[1]), np.float32)
            b.frames[:] = unit[fill - b.capacity : fill][: b.capacity]
            b.count = fill
            t0 = time.process_time()
            b.push(unit[fill : fill + measure // 5], active[fill : fill + measure // 5])
            cpu = (time.process_time() - t0) * 5
            row = {"cost": "selfsim-logmel", "buffer_s": buffer_s, "core_fraction": round(cpu / args.cost_measure_s, 5)}
            rows.append(row)
            emit(row, args.out)
    return rows


def library_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Query by example at ``--library-patterns`` patterns in a real library file."""
    import tempfile

    from ostinato.stream.embedding import clip_frame_dim, embedding_dim, pattern_feature_name
    from ostinato.stream.library import LibraryConfig, PatternLibrary

    frame_dim = clip_frame_dim(LogMel().dim, MatcherConfig.for_features("logmel"))
    dim, feature = embedding_dim(frame_dim), pattern_feature_name("logmel", frame_dim)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((2000, dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lib.db"
        t0 = time.perf_counter()
        with PatternLibrary(path, LibraryConfig(batch_size=5000, batch_interval_s=60)) as lib:
            for i in range(args.library_patterns):
                v = centres[i % 2000] + 0.5 * rng.standard_normal(dim).astype(np.float32)
                lib.add_pattern(v, feature, 2.0)
        insert_s = time.perf_counter() - t0
        with PatternLibrary(path, readonly=True) as lib:
            t0 = time.perf_counter()
            lib.query_vector(centres[0], 10)
            build_s = time.perf_counter() - t0
            lat = []
            for i in range(200):
                q = centres[(7 * i) % 2000] + 0.5 * rng.standard_normal(dim).astype(np.float32)
                t0 = time.perf_counter()
                lib.query_vector(q, 10)
                lat.append((time.perf_counter() - t0) * 1e3)
            kind = lib.index_kind
        with PatternLibrary(path, readonly=True) as lib:  # a new process: loads the persisted index
            t0 = time.perf_counter()
            lib.query_vector(centres[1], 10)
            load_s, loaded = time.perf_counter() - t0, lib.index_loaded
        size_mb = path.stat().st_size / 1e6
        index_mb = lib.index_path.stat().st_size / 1e6 if lib.index_path.exists() else 0.0
    row = {"library": kind, "patterns": args.library_patterns, "dim": dim, "insert_s": round(insert_s, 1), "index_build_s": round(build_s, 1),
           "first_query_after_reopen_s": round(load_s, 2), "index_loaded_from_file": loaded, "index_file_mb": round(index_mb, 1),
           "query_ms_p50": round(float(np.percentile(lat, 50)), 3), "query_ms_p95": round(float(np.percentile(lat, 95)), 3), "db_mb": round(size_mb, 1)}
    emit(row, args.out)
    return row


def tables(results: dict[tuple[str, str], Score], cost: list[dict[str, Any]], library: dict[str, Any] | None) -> str:
    lines = ["| condition | method | P | R | F1 | latency p50 / p95 s | FA/h | TP/FP/FN |", "|---|---|---|---|---|---|---|---|"]
    for (cond, method), s in sorted(results.items()):
        fa = f"{s.false_alarms_per_hour:.1f}" if cond == "control" else "-"
        lines.append(f"| {cond} | {method} | {s.precision:.2f} | {s.recall:.2f} | {s.f1:.2f} | {s.latency(50):.2f} / {s.latency(95):.2f} | {fa} | {s.tp}/{s.fp}/{s.fn} |")
    if cost:
        lines += ["", "| cost of | buffer | share of one core | memory MB |", "|---|---|---|---|"]
        lines += [f"| {r['cost']} | {r['buffer_s'] / 60:.0f} min | {r['core_fraction']:.4f} | {r.get('memory_mb', '-')} |" for r in cost]
    if library:
        lines += ["", f"library query by example: {library['patterns']} patterns ({library['library']}, dim {library['dim']}): "
                      f"p50 {library['query_ms_p50']} ms, p95 {library['query_ms_p95']} ms"]
    return "\n".join(lines)


def plots(results: dict[tuple[str, str], Score], cost: list[dict[str, Any]], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    order = [("clean", 40), ("snr20", 20), ("snr10", 10), ("snr5", 5)]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in sorted({m for _, m in results}):
        pts = [(snr, results[(c, method)].f1) for c, snr in order if (c, method) in results]
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xlabel("SNR of repeats (dB; 40 = clean), gain -12..+6 dB, tempo ±5 %")
    ax.set_ylabel("F1")
    ax.set_ylim(0, 1.02)
    ax.axhline(0.95, color="grey", ls=":", lw=1)
    ax.axhline(0.85, color="grey", ls=":", lw=1)
    ax.legend(fontsize=7)
    ax.set_title("Repeat detection F1 vs SNR (shared 2-core machine)")
    fig.tight_layout()
    fig.savefig(folder / "matcher_f1_vs_snr.png", dpi=120)
    if cost:
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in sorted({r["cost"] for r in cost}):
            rows = [r for r in cost if r["cost"] == name]
            ax.plot([r["buffer_s"] / 60 for r in rows], [100 * r["core_fraction"] for r in rows], marker="o", label=name)
        ax.axhline(5, color="grey", ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("buffer (minutes of audio searched)")
        ax.set_ylabel("% of one core per real-time stream")
        ax.legend(fontsize=7)
        ax.set_title("Matcher cost vs buffer length")
        fig.tight_layout()
        fig.savefig(folder / "matcher_cost_vs_buffer.png", dpi=120)


def from_jsonl(paths: list[Path]) -> tuple[dict[tuple[str, str], Score], list[dict[str, Any]]]:
    """Per-stream records and cost rows of earlier runs (``--out``), merged."""
    results: dict[tuple[str, str], Score] = {}
    cost: list[dict[str, Any]] = []
    for path in paths:
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if "stream" in r and "method" in r:
                s = Score(r["tp"], r["fp"], r["fn"], list(r["latencies_s"]), [tuple(x) for x in r["scored"]], r["fp_on_negatives"], r["audio_s"])
                results.setdefault((r["condition"], r["method"]), Score()).add(s)
            elif "cost" in r:
                cost.append(r)
    return results, cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="short streams, 1 seed, small cost/library runs")
    ap.add_argument("--conditions", default=",".join(CORE_CONDITIONS),
                    help=f"comma list of {', '.join(CONDITIONS)} (broadcast channels: {','.join(BROADCAST_CONDITIONS)})")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--control-seeds", type=int, default=None, help="control streams (default: --seeds)")
    ap.add_argument("--seed-base", type=int, default=TEST_SEED, help="first seed of the reported streams (not a tuning seed)")
    ap.add_argument("--duration-s", type=float, default=240.0)
    ap.add_argument("--control-s", type=float, default=900.0, help="length of each control stream")
    ap.add_argument("--buffer-s", type=float, default=600.0)
    ap.add_argument("--baselines", default="selfsim,stumpi", help="comma list or ''")
    ap.add_argument("--model", type=Path, default=None, help="exported Wav2Vec2 dir (evaluated as well; random weights are labelled)")
    ap.add_argument("--layer", type=int, default=None)
    ap.add_argument("--cost-buffers", default="60,600,1800,3600")
    ap.add_argument("--cost-measure-s", type=float, default=120.0)
    ap.add_argument("--selfsim-cost-max-s", type=float, default=600.0)
    ap.add_argument("--library-patterns", type=int, default=100_000)
    ap.add_argument("--overrides", type=json.loads, default={}, help='MatcherConfig overrides as JSON, e.g. \'{"detection_z": 6.3}\'')
    ap.add_argument("--label", default="", help="suffix of the matcher's method name (with --overrides)")
    ap.add_argument("--skip", default="", help="comma list of: eval,cost,library")
    ap.add_argument("--out", type=Path, default=None, help="append JSON lines here")
    ap.add_argument("--plots", type=Path, default=Path(__file__).parent / "plots")
    ap.add_argument("--from-jsonl", type=Path, nargs="*", default=None,
                    help="no run: tables and plots from the JSON lines of earlier runs (--out files)")
    args = ap.parse_args()
    args.conditions = [c for c in args.conditions.split(",") if c]
    args.baselines = [b for b in args.baselines.split(",") if b]
    args.cost_buffers = [float(x) for x in args.cost_buffers.split(",") if x]
    if args.quick:
        args.seeds, args.duration_s, args.control_s = 1, 120.0, 300.0
        args.cost_buffers, args.cost_measure_s, args.library_patterns = [60.0, 600.0], 30.0, 20_000
    if args.control_seeds is None:
        args.control_seeds = args.seeds
    skip = set(args.skip.split(","))
    if args.from_jsonl is not None:
        results, cost = from_jsonl(args.from_jsonl)
        print(tables(results, cost, None))
        plots(results, cost, args.plots)
        return
    emit({"run": "matcher_eval", "argv": sys.argv[1:], "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "note": "shared 2-core machine"}, args.out)
    results = evaluate(args) if "eval" not in skip else {}
    cost = cost_vs_buffer(args) if "cost" not in skip else []
    library = library_latency(args) if "library" not in skip else None
    print()
    print(tables(results, cost, library))
    plots(results, cost, args.plots)


if __name__ == "__main__":
    main()
