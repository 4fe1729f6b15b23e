#!/usr/bin/env bash
# Installs the Debian packages ostinato's tests and demo use, only those missing.
# Idempotent: a second run installs nothing. Skips quietly where apt-get is absent
# (the Python package itself needs none of these).
set -euo pipefail
pkgs=(espeak-ng sox libsndfile1 libportaudio2 chromium)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "setup-system: apt-get not found; install these yourself: ${missing[*]}" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "setup-system: installing ${missing[*]}"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
