"""Tuning runs of the pattern matcher on the tuning seeds only (``TUNING_SEEDS``).

``matcher_eval.py`` refuses to report on these seeds; this script is the other half: it runs
the log-mel matcher (with ``--overrides``) on the tuning streams and prints TP/FP/FN per
condition, false alarms on the controls, and every false alarm and miss with the labels of
the audio it covers, so a change can be judged (and traced) without touching seeds B.
Log-mel frames and labels are cached per stream (``~/.cache/ostinato/matcher_eval/tune-*``).

    OPENBLAS_NUM_THREADS=1 nice -n 10 python bench/matcher_tune.py --overrides '{"detection_z": 8}'
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from matcher_eval import CACHE, TUNING_SEEDS, run_matcher  # noqa: E402
from matcher_scoring import Score, score_stream  # noqa: E402
from matcher_streams import CONDITIONS, make_control_stream, make_stream  # noqa: E402

from ostinato.runtime.logmel import LogMel  # noqa: E402
from ostinato.stream.matcher import MatcherConfig  # noqa: E402

STREAM_SEEDS = tuple(s for s in TUNING_SEEDS if s < 7100)
CONTROL_SEEDS = tuple(s for s in TUNING_SEEDS if s >= 7100)


def _labels(stream) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    """What scoring needs of a stream (pickled beside its frames)."""
    return SimpleNamespace(name=stream.name, duration_s=stream.duration_s, occurrences=stream.occurrences,
                           negatives=stream.negatives, segments=stream.segments)


def load(cond: str, seed: int, duration_s: float) -> tuple[np.ndarray, np.ndarray, SimpleNamespace]:
    path = CACHE / f"tune-{cond}-{seed}-{duration_s:.0f}.pkl"
    if path.exists():
        with path.open("rb") as f:
            return pickle.load(f)  # noqa: S301 - our own cache
    stream = make_control_stream(seed, duration_s, CACHE) if cond == "control" else make_stream(seed, CONDITIONS[cond], duration_s, CACHE)
    out = LogMel().compute(stream.audio)
    item = (out.features.frames, out.energy_db, _labels(stream))
    with path.open("wb") as f:
        pickle.dump(item, f)
    return item


def _labels_at(labels: SimpleNamespace, a: float, b: float) -> str:
    return "; ".join(f"{name[:40]}@{s:.1f}" for name, s, e in labels.segments if min(b, e) - max(a, s) > 0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conditions", default="gain,tempo,snr10,snr5")
    ap.add_argument("--seeds", default=",".join(map(str, STREAM_SEEDS)))
    ap.add_argument("--control-seeds", default=",".join(map(str, CONTROL_SEEDS)))
    ap.add_argument("--duration-s", type=float, default=180.0)
    ap.add_argument("--control-s", type=float, default=900.0)
    ap.add_argument("--overrides", type=json.loads, default={})
    ap.add_argument("--verbose", action="store_true", help="list every false alarm and miss")
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s]
    controls = [int(s) for s in args.control_seeds.split(",") if s]
    if not set(seeds + controls) <= set(TUNING_SEEDS):
        raise SystemExit(f"tune only on TUNING_SEEDS {TUNING_SEEDS}")
    config = MatcherConfig.for_features("logmel", **args.overrides)
    jobs = [(c, s) for c in args.conditions.split(",") if c for s in seeds] + [("control", s) for s in controls]
    totals: dict[str, Score] = {}
    cpu_total = audio_total = 0.0
    for cond, seed in jobs:
        frames, energy, labels = load(cond, seed, args.control_s if cond == "control" else args.duration_s)
        dets, cpu = run_matcher(frames, energy, config, labels.name)
        cpu_total, audio_total = cpu_total + cpu, audio_total + labels.duration_s
        score = score_stream(labels, dets)
        totals.setdefault(cond, Score()).add(score)
        if args.verbose:
            repeats = [o for o in labels.occurrences if o.index >= 1]
            for d in dets:
                ok = any(min(d.end_s, r.end_s) - max(d.start_s, r.start_s) >= 0.5 * min(d.end_s - d.start_s, r.end_s - r.start_s) for r in repeats)
                if not ok:
                    print(f"  FP {labels.name} {d.start_s:.1f}-{d.end_s:.1f} <- {d.first_start_s:.1f}-{d.first_end_s:.1f} score {d.score:.3f}: "
                          f"[{_labels_at(labels, d.start_s, d.end_s)}] <- [{_labels_at(labels, d.first_start_s, d.first_end_s)}]")
            for r in repeats:
                hit = any(min(d.end_s, r.end_s) - max(d.start_s, r.start_s) >= 0.5 * min(d.end_s - d.start_s, r.end_s - r.start_s) for d in dets)
                if not hit:
                    print(f"  FN {labels.name} {r.pattern}#{r.index} {r.start_s:.1f}-{r.end_s:.1f} ({r.end_s - r.start_s:.1f} s)")
    row = {c: f"{s.tp}/{s.fp}/{s.fn}" for c, s in totals.items()}
    ctl = totals.get("control")
    print(json.dumps({"overrides": args.overrides, **row, "ctl_fa": ctl.fp if ctl else None,
                      "ctl_scores": sorted(round(x, 2) for x, _ in ctl.scored) if ctl else None,
                      "cpu_share": round(cpu_total / max(audio_total, 1e-9), 4)}))


if __name__ == "__main__":
    main()
