#!/usr/bin/env bash
# mypy --strict over the whole package: ostinato.runtime, ostinato.stream and the CLI/service
# modules of ostinato/ (ostinato.export, which imports torch, is followed silently). The folders are mapped into the
# ostinato package by setuptools (package-dir), which mypy cannot follow, so this builds the
# installed layout out of symlinks in .cache/typecheck and checks that.
set -euo pipefail
cd "$(dirname "$0")/.."
root=.cache/typecheck
rm -rf "$root" && mkdir -p "$root/ostinato"
for f in ostinato/*.py; do ln -s "$PWD/$f" "$root/ostinato/"; done
for pkg in runtime stream export; do ln -s "$PWD/$pkg" "$root/ostinato/$pkg"; done
MYPYPATH="$root" exec "${PYTHON:-.venv/bin/python}" -m mypy --strict --follow-imports=silent \
    --cache-dir .cache/mypy -p ostinato.runtime -p ostinato.stream \
    $(for f in ostinato/*.py; do m=$(basename "$f" .py); [ "$m" = __init__ ] || [ "$m" = __main__ ] || echo "-m ostinato.$m"; done) "$@"
