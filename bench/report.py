"""Gather a bench/run_all.py results folder into bench/REPORT.md and PNG plots.

    python bench/report.py bench/results/<timestamp>/            # -> bench/REPORT.md, bench/plots/report/*.png
    python bench/report.py RESULTS --report X.md --plots DIR

The report is generated (do not edit it by hand; bench/RESULTS.md keeps the hand-written notes).
It has the machine, versions and command of the run, each script's status, and one table per
script built from its JSON lines. Plots are drawn only when their data is present:

- ``rtf_vs_window.png``: RTF vs window length per engine/precision (bench_wav2vec2 rows)
- ``latency_vs_streams.png``: latency p50/p99 vs concurrent streams (bench_stream, bench_service)
- ``matcher_f1_vs_snr.png``: matcher F1 vs SNR per method (matcher_eval per-stream rows)
- ``matcher_cost_vs_buffer.png``: matcher CPU vs buffer length (matcher_eval cost rows)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = ["load_results", "build_report", "make_plots", "f1_by_snr", "main"]

BENCH = Path(__file__).resolve().parent
MAX_TABLE_ROWS = 60


def load_results(folder: Path) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """Read ``run.json`` (may be absent: ``{}``) and every ``<script>.jsonl`` of a results folder."""
    run_path = folder / "run.json"
    run = json.loads(run_path.read_text()) if run_path.exists() else {}
    rows: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(folder.glob("*.jsonl")):
        lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        rows[path.stem] = [x for x in lines if isinstance(x, dict)]
    return run, rows


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, dict)):
        s = json.dumps(v)
        return s if len(s) <= 40 else s[:37] + "..."
    return "" if v is None else str(v).replace("|", "\\|")


def _table(rows: list[dict[str, Any]]) -> list[str]:
    """One markdown table per group of rows that share the same keys (first MAX_TABLE_ROWS rows each)."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[tuple(r)].append(r)
    out: list[str] = []
    for keys, group in groups.items():
        keys = tuple(k for k in keys if k not in ("latencies_s", "argv", "machine"))
        out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        out += ["| " + " | ".join(_cell(r.get(k)) for k in keys) + " |" for r in group[:MAX_TABLE_ROWS]]
        if len(group) > MAX_TABLE_ROWS:
            out.append(f"\n({len(group) - MAX_TABLE_ROWS} more rows in the .jsonl file)")
        out.append("")
    return out


def f1_by_snr(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Pool matcher_eval per-stream rows into F1 per (method, SNR dB); conditions named ``snrNN``."""
    pooled: dict[tuple[str, float], list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        m = re.fullmatch(r"snr(-?\d+(?:\.\d+)?)", str(r.get("condition", "")))
        if m is None or "method" not in r or "tp" not in r:
            continue
        acc = pooled[(r["method"], float(m.group(1)))]
        acc[0] += int(r["tp"])
        acc[1] += int(r["fp"])
        acc[2] += int(r["fn"])
    out: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for (method, snr), (tp, fp, fn) in sorted(pooled.items()):
        out[method].append((snr, 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0))
    return dict(out)


def _line_plot(plt: Any, path: Path, series: dict[str, list[tuple[float, float]]], *, xlabel: str, ylabel: str,
               title: str, **axes: Any) -> bool:
    """One PNG with a line per series (points sorted by x); False when there is nothing to draw."""
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, pts in sorted(series.items()):
        pts = sorted(pts)
        style = {"marker": "^", "linestyle": "--"} if name.endswith(" p99") else {"marker": "o"}
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name, **style)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title, **axes)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _plot_rtf(rows: list[dict[str, Any]], plt: Any, path: Path) -> bool:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if "rtf" in r and "window_s" in r and "engine" in r:
            series[f"{r['engine']} ({r.get('threads', '?')} thr)"].append((float(r["window_s"]), float(r["rtf"])))
    return _line_plot(plt, path, series, xlabel="window length (s)", ylabel="real-time factor (p50 / window)",
                      title="Wav2Vec2 RTF vs window")


def _plot_latency(results: dict[str, list[dict[str, Any]]], plt: Any, path: Path) -> bool:
    series: dict[str, list[tuple[float, float]]] = {}
    stream = [r for r in results.get("bench_stream", []) if r.get("bench") == "stream_latency"]
    service = [r for r in results.get("bench_service", []) if r.get("bench") == "service" and r.get("feature_latency_p50_ms") is not None]
    for name, rows, n, key in (("bench_stream (pipeline)", stream, "streams", "latency_{}_ms"),
                               ("bench_service (WebSocket)", service, "clients", "feature_latency_{}_ms")):
        for q in ("p50", "p99") if rows else ():
            series[f"{name} {q}"] = [(r[n], r[key.format(q)]) for r in rows]
    return _line_plot(plt, path, series, xlabel="concurrent real-time streams", ylabel="latency (ms)",
                      title="Latency vs concurrent streams")


def _plot_f1(rows: list[dict[str, Any]], plt: Any, path: Path) -> bool:
    return _line_plot(plt, path, dict(f1_by_snr(rows)), xlabel="SNR (dB)", ylabel="F1", title="Matcher F1 vs SNR",
                      ylim=(0, 1.05))


def _plot_cost(rows: list[dict[str, Any]], plt: Any, path: Path) -> bool:
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in rows:
        if "cost" in r and "buffer_s" in r and "core_fraction" in r:
            series[r["cost"]].append((float(r["buffer_s"]) / 60, 100 * float(r["core_fraction"])))
    return _line_plot(plt, path, series, xlabel="buffer (minutes)", ylabel="% of one core per stream",
                      title="Matcher cost vs buffer length")


def make_plots(results: dict[str, list[dict[str, Any]]], folder: Path) -> dict[str, str | None]:
    """Draw each plot whose data is present; return ``{png name: None if drawn else why skipped}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    matcher = results.get("matcher_eval", [])
    plots = {
        "rtf_vs_window.png": (lambda p: _plot_rtf(results.get("bench_wav2vec2", []), plt, p), "no bench_wav2vec2 rows"),
        "latency_vs_streams.png": (lambda p: _plot_latency(results, plt, p), "no bench_stream/bench_service latency rows"),
        "matcher_f1_vs_snr.png": (lambda p: _plot_f1(matcher, plt, p), "no matcher_eval rows with snr conditions"),
        "matcher_cost_vs_buffer.png": (lambda p: _plot_cost(matcher, plt, p), "no matcher_eval cost rows"),
    }
    return {name: None if draw(folder / name) else why for name, (draw, why) in plots.items()}


def build_report(run: dict[str, Any], results: dict[str, list[dict[str, Any]]], plots: dict[str, str | None],
                 source: Path, plots_rel: str) -> str:
    """The markdown text of the report."""
    machine = run.get("machine", {})
    lines = ["# Benchmark report (generated by bench/report.py — do not edit)", "",
             f"Results folder: `{source}`; mode: {run.get('mode', '?')}; started {run.get('started_utc', '?')} UTC; "
             f"git {machine.get('git_commit', '?')}.", "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores, ISA {machine.get('isa', '?')}, "
             f"{machine.get('memory_gib', '?')} GiB; load average at start {run.get('loadavg_start', '?')}, at end "
             f"{run.get('loadavg_end', '?')}. {run.get('note', '')}", "",
             f"Versions: {json.dumps(machine.get('versions', {}))}; "
             f"Python {machine.get('python', '?')}.", "", f"Command: `{run.get('command', '?')}`", "",
             "## Scripts", "", "| script | status | JSON lines | wall s | load before → after | command |", "|---|---|---|---|---|---|"]
    for s in run.get("scripts", []):
        status = "ok" if s.get("ok") else s.get("skipped") or ("timed out" if s.get("timed_out") else f"failed rc={s.get('rc')}")
        load = f"{_cell((s.get('loadavg_before') or ['?'])[0])} → {_cell((s.get('loadavg_after') or ['?'])[0])}"
        lines.append(f"| {s.get('script')} | {status} | {s.get('json_lines', 0)} | {s.get('wall_s', '')} | {load} | "
                     f"`{s.get('command', '')}` |")
    lines += ["", "## Plots", ""]
    for name, why in plots.items():
        lines.append(f"![{name}]({plots_rel}/{name})" if why is None else f"- {name}: skipped ({why})")
    for script, rows in results.items():
        lines += ["", f"## {script}", ""]
        lines += _table(rows) if rows else ["(no JSON lines)", ""]
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", type=Path, nargs="?", default=None, help="results folder (default: the newest run in bench/results)")
    p.add_argument("--report", type=Path, default=BENCH / "REPORT.md")
    p.add_argument("--plots", type=Path, default=BENCH / "plots" / "report")  # bench/plots/: full-run plots
    args = p.parse_args(argv)
    folder = args.results
    if folder is None:
        found = sorted((d for d in (BENCH / "results").glob("*") if (d / "run.json").exists()), key=lambda d: (d / "run.json").stat().st_mtime)
        if not found:
            print("report: no results folder found; run bench/run_all.py first", file=sys.stderr)
            return 2
        folder = found[-1]
    if not folder.is_dir():
        print(f"report: {folder} is not a folder; give a bench/run_all.py results folder", file=sys.stderr)
        return 2
    run, results = load_results(folder)
    try:
        folder = folder.resolve().relative_to(BENCH.parent)
    except ValueError:
        pass
    plots = make_plots(results, args.plots)
    try:
        rel = str(args.plots.resolve().relative_to(args.report.resolve().parent))
    except ValueError:
        rel = str(args.plots.resolve())
    args.report.write_text(build_report(run, results, plots, folder, rel))
    skipped = {k: v for k, v in plots.items() if v}
    print(f"report: wrote {args.report} and {len(plots) - len(skipped)} plot(s) in {args.plots}; skipped: {skipped or 'none'}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
