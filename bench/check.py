"""Performance regression check: compare a results folder's RATIOS against bench/baseline.json.

    python bench/check.py bench/results/<timestamp>/         # exit 1 naming each regressed metric
    python bench/check.py RESULTS --baseline X.json --require-all
    python bench/check.py RESULTS --write-baseline X.json    # seed a baseline from a run

Only ratios measured within one run against a reference on the same input are compared (ORT
int8 vs PyTorch eager, pipeline vs raw ``run_batch``, GAMA ORT vs PyTorch, matcher vs the
exhaustive self-similarity baseline), plus a few quality figures that do not depend on timing
(cosine vs offline, matcher F1). Absolute times are never compared: the machine may be shared.

Each baseline metric has a ``direction`` (``higher`` or ``lower`` is better) and a tolerance:
``tolerance_rel`` (a fraction of the baseline value) and/or ``tolerance_abs`` (in the metric's
unit); the larger allowed band wins. A metric absent from the run is reported as missing; it fails
the check only with ``--require-all``. Exit status: 0 pass, 1 regression (or missing with
``--require-all``), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EXTRACTORS", "Verdict", "compare", "extract_metrics", "load_rows", "main"]

BENCH = Path(__file__).resolve().parent
Rows = dict[str, list[dict[str, Any]]]


def load_rows(folder: Path) -> Rows:
    """Every ``<script>.jsonl`` of a results folder, as lists of dicts."""
    out: Rows = {}
    for path in sorted(folder.glob("*.jsonl")):
        out[path.stem] = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _w2v_speedup(engine: str) -> Callable[[Rows], float | None]:
    def get(rows: Rows) -> float | None:
        # The fastest run of each engine is the least disturbed by other processes.
        return _median([float(r["speedup_vs_torch_min"]) for r in rows.get("bench_wav2vec2", [])
                        if r.get("engine") == engine and r.get("speedup_vs_torch_min") is not None])
    return get


def _stream_overhead(rows: Rows) -> float | None:
    return _median([float(r["overhead_pct_min"]) for r in rows.get("bench_stream", []) if r.get("bench") == "stream_overhead"])


def _gama_speedup(engine: str) -> Callable[[Rows], float | None]:
    def get(rows: Rows) -> float | None:
        audio = {r.get("engine"): r for r in rows.get("bench_gama", []) if r.get("unit") == "audio"}
        ref, ours = audio.get("pytorch-eager-fp32"), audio.get(engine)
        if not ref or not ours or not ours.get("min_s"):
            return None
        return float(ref["min_s"]) / float(ours["min_s"])
    return get


def _matcher_cost_ratio(rows: Rows) -> float | None:
    """Exhaustive self-similarity CPU / ostinato matcher CPU at the same buffer (median over buffers)."""
    cost = [r for r in rows.get("matcher_eval", []) if "cost" in r and "core_fraction" in r]
    ours = {r["buffer_s"]: float(r["core_fraction"]) for r in cost if r["cost"] == "ostinato-logmel"}
    ref = {r["buffer_s"]: float(r["core_fraction"]) for r in cost if r["cost"] == "selfsim-logmel"}
    return _median([ref[b] / ours[b] for b in ours if b in ref and ours[b] > 0])


def _matcher_f1(method_prefix: str) -> Callable[[Rows], float | None]:
    def get(rows: Rows) -> float | None:
        tp = fp = fn = 0
        for r in rows.get("matcher_eval", []):
            if str(r.get("method", "")).startswith(method_prefix) and "tp" in r and "condition" in r:
                tp, fp, fn = tp + int(r["tp"]), fp + int(r["fp"]), fn + int(r["fn"])
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None
    return get


def _fidelity_cos_min(rows: Rows) -> float | None:
    vals = [float(r["cos_min"]) for r in rows.get("bench_fidelity_stream", []) + rows.get("fidelity_stream", [])
            if r.get("cos_min") is not None]
    return max(vals) if vals else None


def _service_p99_growth(rows: Rows) -> float | None:
    svc = sorted((r for r in rows.get("bench_service", []) if r.get("bench") == "service" and r.get("feature_latency_p99_ms")),
                 key=lambda r: r["clients"])
    if len(svc) < 2:
        return None
    return float(svc[-1]["feature_latency_p99_ms"]) / float(svc[0]["feature_latency_p99_ms"])


def _plan_cpu_error(rows: Rows) -> float | None:
    """|measured / predicted - 1| of ``ostinato plan``'s CPU prediction, in % (worst stream count)."""
    vals = [float(r["cpu_error_pct"]) for r in rows.get("bench_plan", []) if r.get("bench") == "plan_vs_run"]
    return max(vals) if vals else None


EXTRACTORS: dict[str, Callable[[Rows], float | None]] = {
    "wav2vec2.ort_int8_speedup_vs_torch": _w2v_speedup("ort-int8"),
    "wav2vec2.ort_fp32_speedup_vs_torch": _w2v_speedup("ort-fp32"),
    "stream.pipeline_overhead_pct_vs_raw_run_batch": _stream_overhead,
    "gama.audio_ort_fp32_speedup_vs_torch": _gama_speedup("ort-fp32"),
    "gama.audio_ort_int8_speedup_vs_torch": _gama_speedup("ort-int8 (exported)"),
    "matcher.cost_selfsim_over_ostinato": _matcher_cost_ratio,
    "matcher.f1_ostinato_logmel": _matcher_f1("ostinato"),
    "fidelity.best_cos_min_vs_offline": _fidelity_cos_min,
    "service.p99_latency_most_over_fewest_clients": _service_p99_growth,
    "plan.cpu_prediction_error_pct": _plan_cpu_error,
}


LOWER_IS_BETTER = frozenset({"stream.pipeline_overhead_pct_vs_raw_run_batch", "service.p99_latency_most_over_fewest_clients",
                             "plan.cpu_prediction_error_pct"})


def extract_metrics(rows: Rows) -> dict[str, float]:
    """Every metric whose data is present in the rows."""
    out = {}
    for name, get in EXTRACTORS.items():
        value = get(rows)
        if value is not None:
            out[name] = round(float(value), 5)
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    """One metric's comparison: ``status`` is ok, regressed or missing."""

    metric: str
    status: str
    value: float | None
    baseline: float
    limit: float

    def line(self) -> str:
        got = "absent from the run" if self.value is None else f"{self.value:.4g}"
        return f"{self.status:9s} {self.metric}: {got} (baseline {self.baseline:.4g}, limit {self.limit:.4g})"


def compare(metrics: dict[str, float], baseline: dict[str, Any]) -> list[Verdict]:
    """Compare measured metrics against ``baseline["metrics"]``; one verdict per baseline metric."""
    out = []
    for name, spec in baseline["metrics"].items():
        base = float(spec["value"])
        if spec.get("direction") not in ("higher", "lower"):
            raise ValueError(f"baseline metric {name!r}: direction must be 'higher' or 'lower', got {spec.get('direction')!r}")
        band = max(abs(base) * float(spec.get("tolerance_rel", 0.0)), float(spec.get("tolerance_abs", 0.0)))
        higher = spec["direction"] == "higher"
        limit = base - band if higher else base + band
        value = metrics.get(name)
        if value is None:
            status = "missing"
        else:
            status = "regressed" if (value < limit if higher else value > limit) else "ok"
        out.append(Verdict(name, status, value, base, limit))
    return out


def _write_baseline(path: Path, metrics: dict[str, float], source: Path, old: dict[str, Any]) -> None:
    specs = old.get("metrics", {})
    new = dict(specs)  # metrics absent from this run keep their old entry
    for name, value in metrics.items():
        default = {"direction": "lower" if name in LOWER_IS_BETTER else "higher", "tolerance_rel": 0.5}
        new[name] = {**specs.get(name, default), "value": value}
    doc = {**{k: v for k, v in old.items() if k != "metrics"}, "seeded_from": str(source), "metrics": new}
    path.write_text(json.dumps(doc, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="?", default=None, help="results folder (default: the newest run in bench/results)")
    p.add_argument("--baseline", type=Path, default=BENCH / "baseline.json")
    p.add_argument("--require-all", action="store_true", help="a baseline metric absent from the run fails the check")
    p.add_argument("--write-baseline", type=Path, default=None, help="write the run's metrics as a baseline here and exit")
    args = p.parse_args(argv)
    folder = args.results
    if folder is None:
        found = sorted((d for d in (BENCH / "results").glob("*") if (d / "run.json").exists()), key=lambda d: (d / "run.json").stat().st_mtime)
        folder = found[-1] if found else None
    if folder is None or not folder.is_dir():
        print(f"check: no results folder ({folder}); run bench/run_all.py first", file=sys.stderr)
        return 2
    metrics = extract_metrics(load_rows(folder))
    if args.write_baseline:
        old = json.loads(args.write_baseline.read_text()) if args.write_baseline.exists() else {}
        _write_baseline(args.write_baseline, metrics, folder, old)
        print(f"check: wrote {len(metrics)} metric(s) to {args.write_baseline}")
        return 0
    try:
        baseline = json.loads(args.baseline.read_text())
        verdicts = compare(metrics, baseline)
    except (OSError, ValueError, KeyError) as exc:
        print(f"check: cannot use baseline {args.baseline}: {exc}", file=sys.stderr)
        return 2
    print(f"check: {folder} against {args.baseline}")
    for v in verdicts:
        print("  " + v.line())
    bad = [v.metric for v in verdicts if v.status == "regressed" or (args.require_all and v.status == "missing")]
    if bad:
        print(f"check: REGRESSED: {', '.join(bad)}", file=sys.stderr)
        return 1
    print("check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
