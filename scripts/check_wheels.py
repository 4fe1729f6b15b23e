#!/usr/bin/env python3
"""Check that every runtime dependency installs from a binary wheel on edge targets.

For each (platform, Python version) pair, ``pip download --only-binary=:all: --no-deps``
resolves the runtime requirements of ``pyproject.toml`` (with the environment markers
evaluated for that target) into a temporary directory. A requirement with no wheel for a
target fails the check, naming the target, so an edge board never falls back to a source
build. Needs access to the package index; CI runs it only with OSTINATO_CHECK_WHEELS=1.

Usage: python scripts/check_wheels.py [--python 3.11 3.12 3.13] [--platform ...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# (pip --platform tag, platform_machine, platform_system) of the targets we promise.
TARGETS = {
    # glibc 2.31: Debian 11, Ubuntu 20.04, Raspberry Pi OS and Jetson images of those years.
    "manylinux_2_31_aarch64": ("aarch64", "Linux"),
    "manylinux_2_31_x86_64": ("x86_64", "Linux"),
}


def requirements_for(machine: str, system: str, python: str) -> list[Requirement]:
    """Runtime requirements of the project whose markers hold on the given target."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    env = default_environment()
    env.update(platform_machine=machine, platform_system=system, sys_platform="linux",
               python_version=python, python_full_version=f"{python}.0")
    reqs = [Requirement(r) for r in project["dependencies"]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate(env)]


def platform_flags(platform: str) -> list[str]:
    """``--platform`` flags for every manylinux tag a system with this glibc accepts.

    pip does not expand ``manylinux_2_31`` to the older tags it implies, so list them all.
    """
    _, _, glibc_minor, arch = platform.split("_", 3)
    tags = [f"manylinux_2_{m}_{arch}" for m in range(17, int(glibc_minor) + 1)]
    tags.append(f"manylinux2014_{arch}")
    return [flag for tag in tags for flag in ("--platform", tag)]


def check(platform: str, python: str) -> list[dict[str, str]]:
    """Download each requirement's wheel for one target; return one result per requirement."""
    machine, system = TARGETS[platform]
    results = []
    for req in requirements_for(machine, system, python):
        spec = f"{req.name}{req.specifier}"
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                 *platform_flags(platform), "--python-version", python, "-d", tmp, spec],
                capture_output=True, text=True,
            )
            wheel = next((p.name for p in Path(tmp).glob("*.whl")), "")
        results.append({"platform": platform, "python": python, "requirement": spec,
                        "ok": str(proc.returncode == 0 and bool(wheel)).lower(), "wheel": wheel,
                        "error": "" if proc.returncode == 0 else proc.stderr.strip().splitlines()[-1]})
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", nargs="+", default=["3.11", "3.12", "3.13"])
    parser.add_argument("--platform", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    args = parser.parse_args()
    failures = 0
    for platform in args.platform:
        for python in args.python:
            for row in check(platform, python):
                print(json.dumps(row))
                failures += row["ok"] != "true"
    print(f"{'OK' if failures == 0 else 'FAIL'}: {failures} requirement(s) without a wheel", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
