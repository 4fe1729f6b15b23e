"""``ostinato doctor``: what this machine offers and what ostinato will actually use."""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["register", "collect_report", "DEFAULT_MODEL_DIRS"]

DEFAULT_MODEL_DIRS = (Path.home() / ".cache" / "ostinato" / "models",)
_PACKAGES = ("numpy", "onnxruntime", "onnxruntime-gpu", "aiohttp", "msgpack", "prometheus-client",
             "soxr", "soundfile", "sounddevice", "torch", "transformers", "optimum-onnx", "onnx")
_CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni",
              "amx_int8", "asimd", "asimddp", "i8mm", "sve")


def register(sub: Any) -> None:
    """Add the ``doctor`` subcommand."""
    p = sub.add_parser("doctor", help="report versions, providers, CPU features and models")
    p.add_argument("--model", type=Path, action="append", default=[], help="also check this model dir")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=run)


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _cpu() -> dict[str, Any]:
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("flags", "Features"):
                flags.update(value.split())
            elif key.strip() == "model name":
                model = value.strip()
    except OSError:
        pass
    return {
        "machine": platform.machine(),
        "model": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "features": [f for f in _CPU_FLAGS if f in flags],
    }


def _models(extra: list[Path]) -> list[dict[str, Any]]:
    from ostinato.runtime.errors import SessionError
    from ostinato.runtime.manifest import MANIFEST_NAME, Manifest

    dirs = list(extra)
    for root in DEFAULT_MODEL_DIRS:
        if root.is_dir():
            dirs.extend(sorted(p.parent for p in root.glob(f"*/{MANIFEST_NAME}")))
    found = []
    for d in dict.fromkeys(dirs):
        try:
            m = Manifest.read(d)
            found.append({"dir": str(d), "label": m.label, "random_init": m.random_init,
                          "precision": m.precision, "ok": (d / m.files.get("model", "")).is_file()})
        except SessionError as e:
            found.append({"dir": str(d), "error": str(e), "ok": False})
    return found


def collect_report(model_dirs: list[Path]) -> dict[str, Any]:
    """Gather the doctor report as a JSON-ready dictionary."""
    from ostinato.runtime.providers import fallbacks, probe_providers

    probe = probe_providers()
    will_use = next((p for p in probe.loadable if p != "CPUExecutionProvider"), "CPUExecutionProvider")
    return {
        "versions": _versions(),
        "cpu": _cpu(),
        "providers": {
            "available": list(probe.available),
            "loadable": list(probe.loadable),
            "errors": probe.errors,
            "auto_will_use": will_use,
            "fallbacks_this_process": [f.reason for f in fallbacks()],
        },
        "models": _models(model_dirs),
    }


def run(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when a listed model is broken."""
    report = collect_report(args.model)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        _print_text(report)
    return 0 if all(m.get("ok") for m in report["models"] if str(m["dir"]) in map(str, args.model)) else 1


def _print_text(report: dict[str, Any]) -> None:
    v = report["versions"]
    print("ostinato doctor")
    print("  versions:  " + ", ".join(f"{k} {val}" for k, val in v.items() if val))
    missing = [k for k in ("torch", "transformers", "optimum-onnx") if not v.get(k)]
    if missing:
        print(f"             (export extra not installed: {', '.join(missing)}; pip install 'ostinato[export]')")
    cpu = report["cpu"]
    print(f"  cpu:       {cpu['model']} ({cpu['machine']}), {cpu['usable_cores']}/{cpu['cores']} cores usable")
    print(f"             features: {' '.join(cpu['features']) or 'none of interest'}")
    if cpu["machine"] == "x86_64" and "avx512_vnni" not in cpu["features"] and "avx_vnni" not in cpu["features"]:
        print("             no VNNI: int8 speed-ups over fp32 will be smaller than on VNNI CPUs")
    prov = report["providers"]
    print(f"  providers: compiled in: {', '.join(prov['available'])}")
    print(f"             loadable:    {', '.join(prov['loadable'])}")
    for name, err in prov["errors"].items():
        print(f"             {name} does NOT load: {err}")
    print(f"             --provider auto will use: {prov['auto_will_use']}")
    print("  models:" + ("" if report["models"] else "    none found in ~/.cache/ostinato/models (make demo exports one)"))
    for m in report["models"]:
        status = m.get("label") or f"BROKEN: {m.get('error')}"
        if m.get("label") and not m["ok"]:
            status += "  [ONNX file missing]"
        print(f"    {m['dir']}: {status}")
