"""Run every bench/ script in quick or full mode and collect its JSON lines.

    python bench/run_all.py --quick            # <= 10 min on 2 cores (checks the scripts, rough ratios)
    python bench/run_all.py --full             # the scripts' own defaults (an hour or more)
    python bench/run_all.py --quick --only bench_wav2vec2 --out DIR   # rerun one script into a run

Each script runs as a subprocess, one after another (never in parallel: they would time each
other), with a per-script time limit. Its stdout lines that parse as JSON objects go to
``<out>/<script>.jsonl``; the full stdout and stderr go to ``<out>/<script>.log``. ``<out>/run.json``
records the machine (CPU model, cores, load average before and after each script), package
versions, the exact commands, and each script's exit status. A script that fails or times out is
reported there and on stderr; the run goes on with the next one. Exit status: 0 when every script
succeeded, 1 when at least one failed (the results of the others are still written).

Scripts that need an exported Wav2Vec2 model share one: random:base int8 with layers 6 and 12,
exported once into ``~/.cache/ostinato/models/random-base-int8`` (the ``make demo`` model).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCRIPTS", "Script", "main", "machine_info", "run_script"]

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
DEFAULT_MODEL = Path.home() / ".cache" / "ostinato" / "models" / "random-base-int8"
QUICK_TOTAL_S = 600.0


@dataclass(frozen=True, slots=True)
class Script:
    """One bench script: its arguments and time limit per mode (``{model}``/``{out}`` are filled in)."""

    name: str
    quick_args: tuple[str, ...]
    full_args: tuple[str, ...]
    quick_limit_s: float
    full_limit_s: float
    needs_model: bool = False
    # Exports the script makes once and caches here; while absent, its limit grows by first_run_extra_s.
    cache: Path | None = None
    first_run_extra_s: float = 0.0


SCRIPTS: tuple[Script, ...] = (
    Script("bench_wav2vec2", ("--quick",), (), 240, 5400,
           cache=Path.home() / ".cache" / "ostinato" / "bench" / "random-base-int8-default", first_run_extra_s=360),
    Script(
        "bench_stream",
        ("--model", "{model}", "--repeats", "1", "--overhead-streams", "2", "--overhead-seconds", "6",
         "--rt-seconds", "6", "--latency-streams", "1,2,4", "--skip", "capacity"),
        ("--model", "{model}"), 180, 3600, needs_model=True,
    ),
    Script(
        "bench_service",
        ("--model", "{model}", "--clients", "1,2", "--duration-s", "5"),
        ("--model", "{model}"), 90, 1800, needs_model=True,
    ),
    Script(
        "fidelity_stream",
        ("--model", "{model}", "--seconds", "6", "--contexts", "0,0.5", "--extra", ""),
        ("--model", "{model}"), 60, 1800, needs_model=True,
    ),
    Script(
        "matcher_eval",
        ("--quick", "--conditions", "snr20,snr5", "--baselines", "selfsim", "--skip", "library",
         "--plots", "{out}/matcher_plots"),
        ("--plots", "{out}/matcher_plots"), 150, 7200,
    ),
    Script(
        "bench_plan",
        ("--model", "{model}", "--streams", "2", "--seconds", "8", "--calibrate-s", "2", "--batch-size", "2"),
        ("--model", "{model}"), 90, 900, needs_model=True,
    ),
    Script("bench_gama", ("--quick",), (), 90, 3600),
    Script(
        "vector_index_bench",
        ("--sizes", "5000", "--dims", "78", "--methods", "numpy-flat,hnswlib", "--queries", "50"),
        (), 45, 3600,
    ),
)


def machine_info() -> dict[str, Any]:
    """CPU model, ISA flags, cores, memory and package versions of this machine."""
    cpu, flags = platform.processor(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu in ("", platform.processor()):
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    mem_gib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    return {
        "cpu": cpu, "isa": isa, "cores": os.cpu_count(), "memory_gib": mem_gib,
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": _versions(), "git_commit": _git_commit(),
    }


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for dist in ("ostinato", "onnxruntime", "onnxruntime-gpu", "numpy", "torch", "transformers", "aiohttp", "stumpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    return out


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def ensure_model(model: Path) -> None:
    """Export random:base int8 (layers 6, 12) into ``model`` unless it is already there."""
    if (model / "ostinato.json").exists():
        return
    cmd = [sys.executable, "-m", "ostinato", "export", "wav2vec2", "--model", "random:base", "--precision", "int8",
           "--layers", "6,12", "--out", str(model)]
    print(f"run_all: exporting the shared model: {' '.join(cmd)}", file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT, timeout=900)


def _json_lines(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                rows.append(obj)
    return rows


def run_script(script: Script, mode: str, out: Path, model: Path, limit_s: float, script_dir: Path = BENCH) -> dict[str, Any]:
    """Run one script, write its .jsonl and .log; return its status record (never raises on failure)."""
    args = script.quick_args if mode == "quick" else script.full_args
    args = tuple(a.format(model=model, out=out) for a in args)
    cmd = [sys.executable, str(script_dir / f"{script.name}.py"), *args]
    record: dict[str, Any] = {"script": script.name, "command": " ".join(cmd), "limit_s": round(limit_s, 1),
                              "loadavg_before": list(os.getloadavg())}
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit_s)
        stdout, stderr, rc, timed_out = proc.stdout, proc.stderr, proc.returncode, False
    except subprocess.TimeoutExpired as exc:
        stdout = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        rc, timed_out = None, True
    rows = _json_lines(stdout)
    (out / f"{script.name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / f"{script.name}.log").write_text(f"$ {' '.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    record.update({
        "rc": rc, "timed_out": timed_out, "ok": rc == 0, "wall_s": round(time.monotonic() - started, 1),
        "json_lines": len(rows), "loadavg_after": list(os.getloadavg()),
        "stderr_tail": stderr.strip().splitlines()[-5:] if rc != 0 else [],
    })
    return record


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick", help="short runs (default)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full", help="the scripts' own defaults")
    p.set_defaults(mode="quick")
    p.add_argument("--out", type=Path, default=None, help="results folder (default bench/results/<UTC timestamp>)")
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="exported Wav2Vec2 dir for the scripts that need one")
    p.add_argument("--only", default="", help="comma list of script names to run (default: all)")
    p.add_argument("--limit-scale", type=float, default=1.0, help="multiply every per-script time limit")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    names = {n for n in args.only.split(",") if n}
    unknown = names - {s.name for s in SCRIPTS}
    if unknown:
        print(f"run_all: unknown script(s) {sorted(unknown)}; known: {[s.name for s in SCRIPTS]}", file=sys.stderr)
        return 2
    scripts = [s for s in SCRIPTS if not names or s.name in names]
    out = args.out or BENCH / "results" / dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    run: dict[str, Any] = {"mode": args.mode, "command": " ".join([sys.executable, *sys.argv]),
                           "started_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                           "machine": machine_info(), "loadavg_start": list(os.getloadavg()),
                           "note": "shared machine: compare ratios from the same run, not absolute times",
                           "model": str(args.model), "scripts": []}
    previous = out / "run.json"
    if names and previous.exists():  # --only into an existing folder: keep the other scripts' records
        kept = [s for s in json.loads(previous.read_text()).get("scripts", []) if s.get("script") not in names]
        run["scripts"] = kept
        run["command"] += f" (rerun into a folder that already held {[s['script'] for s in kept]})"
    if any(s.needs_model for s in scripts):
        ensure_model(args.model)
    started = time.monotonic()
    for script in scripts:
        limit = (script.quick_limit_s if args.mode == "quick" else script.full_limit_s) * args.limit_scale
        if args.mode == "quick":
            limit = min(limit, QUICK_TOTAL_S * args.limit_scale - (time.monotonic() - started))
        if script.cache is not None and not script.cache.exists():
            limit += script.first_run_extra_s  # first run exports its models (not counted in the quick budget)
            started += script.first_run_extra_s
        if limit < 10:
            run["scripts"].append({"script": script.name, "ok": False, "skipped": "quick time budget spent"})
            continue
        print(f"run_all: {script.name} (limit {limit:.0f} s)", file=sys.stderr, flush=True)
        record = run_script(script, args.mode, out, args.model, limit)
        run["scripts"].append(record)
        status = "ok" if record["ok"] else ("TIMED OUT" if record["timed_out"] else f"FAILED rc={record['rc']}")
        print(f"run_all: {script.name}: {status}, {record['json_lines']} JSON lines, {record['wall_s']} s",
              file=sys.stderr, flush=True)
        (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    run["loadavg_end"] = list(os.getloadavg())
    run["wall_s"] = round(time.monotonic() - started, 1)
    (out / "run.json").write_text(json.dumps(run, indent=1) + "\n")
    failed = [s["script"] for s in run["scripts"] if not s["ok"]]
    print(f"run_all: results in {out}; failed: {failed or 'none'}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
