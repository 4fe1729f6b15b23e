# ostinato — the newcomer's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/ostinato
DEMO_MODEL := $(CACHE)/models/random-base-int8
DEMO_WAV := ostinato/data/demo.wav

.PHONY: setup demo test typecheck check-wheels bench bench-full clean-cache

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup-system.sh
	bash scripts/setup-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[export,dev,bench,mic]'
	touch $@

# Exports random:base (random weights, same architecture as wav2vec2-base) as int8 once,
# then extracts features from the shipped demo WAV and prints a summary, then streams the same
# WAV through the live pipeline at real-time pace (status line, then the run summary).
demo: setup
	test -f $(DEMO_MODEL)/ostinato.json || $(PY) -m ostinato export wav2vec2 --model random:base --precision int8 --layers 6,12 --out $(DEMO_MODEL)
	$(PY) -m ostinato features $(DEMO_WAV) --model $(DEMO_MODEL) --out $(CACHE)/demo-features.npy
	$(PY) -m ostinato run --source file:$(DEMO_WAV) --realtime --model $(DEMO_MODEL) --out $(CACHE)/demo-live.npy

test: setup
	$(PY) -m pytest -q

typecheck: setup
	bash scripts/typecheck.sh

# Every runtime dependency has a binary wheel for aarch64/x86_64 Linux on Python 3.11-3.13.
check-wheels: setup
	$(PY) scripts/check_wheels.py

bench: setup
	$(PY) bench/bench_wav2vec2.py --quick

bench-full: setup
	$(PY) bench/bench_wav2vec2.py

clean-cache:
	rm -rf $(CACHE)
