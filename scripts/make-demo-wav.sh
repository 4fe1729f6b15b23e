#!/usr/bin/env bash
# Rebuilds ostinato/data/demo.wav (16 kHz mono s16, ~20 s, < 1 MB): speech by espeak-ng with a
# phrase and a three-tone jingle that each come back later, for the demo and the matcher.
set -euo pipefail
out=${1:-ostinato/data/demo.wav}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
say() { espeak-ng -v "$1" -s "$2" -w "$tmp/$3.wav" "$4"; sox "$tmp/$3.wav" -r 16000 -c 1 -b 16 "$tmp/$3r.wav"; }
say en-us 150 a "Welcome back to the evening news on radio ostinato."
say en-gb 165 b "Traffic is heavy on the northern bridge, and rain is expected after midnight."
say en-us 140 c "In sports, the home team won again in extra time."
sox -n -r 16000 -c 1 -b 16 "$tmp/j.wav" synth 0.25 sine 660 : synth 0.25 sine 880 : synth 0.4 sine 990 fade 0.01 0.4 0.05 gain -6
sox -n -r 16000 -c 1 -b 16 "$tmp/s.wav" trim 0 0.6
sox "$tmp/ar.wav" "$tmp/s.wav" "$tmp/j.wav" "$tmp/s.wav" "$tmp/br.wav" "$tmp/s.wav" "$tmp/ar.wav" \
    "$tmp/s.wav" "$tmp/cr.wav" "$tmp/s.wav" "$tmp/j.wav" "$tmp/s.wav" "$out"
soxi "$out" | grep -E "Duration|Sample Rate|File Size"
