# ostinato — the newcomer's two commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CACHE ?= $(HOME)/.cache/ostinato
DEMO_MODEL := $(CACHE)/models/random-base-int8
DEMO_WAV := ostinato/data/demo.wav

.PHONY: setup demo test test-ts typecheck check-wheels bench bench-full bench-check clean-cache

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
	test -f $(DEMO_MODEL)/encoder_cached.onnx || $(PY) -m ostinato export wav2vec2 --model random:base --precision int8 --layers 6,12 --out $(DEMO_MODEL)
	$(PY) -m ostinato features $(DEMO_WAV) --model $(DEMO_MODEL) --out $(CACHE)/demo-features.npy
	rm -rf $(CACHE)/demo-events.jsonl $(CACHE)/demo-library.db*  # a fresh library each demo (its index and clips too)
	$(PY) -m ostinato run --source file:$(DEMO_WAV) --realtime --model $(DEMO_MODEL) \
		--match --events $(CACHE)/demo-events.jsonl --library $(CACHE)/demo-library.db
	@echo "events: $(CACHE)/demo-events.jsonl; library: $(PY) -m ostinato library list --library $(CACHE)/demo-library.db"
	$(PY) -m ostinato run --source file:$(DEMO_WAV) --realtime --model $(DEMO_MODEL) --out $(CACHE)/demo-live.npy

test: setup
	bash scripts/typecheck.sh
	$(PY) -m pytest -q
	$(MAKE) test-ts

# TypeScript client (clients/typescript): npm ci only when node_modules is missing or
# package-lock.json changed; its integration tests start `ostinato serve` with this venv's Python.
TS_DIR := clients/typescript
test-ts: setup $(TS_DIR)/node_modules/.installed
	cd $(TS_DIR) && npm run build && OSTINATO_PYTHON=$(abspath $(PY)) npm test

$(TS_DIR)/node_modules/.installed: $(TS_DIR)/package-lock.json
	@command -v npm >/dev/null || { echo "test-ts: Node.js 20+ and npm are needed for the TypeScript client" >&2; exit 1; }
	cd $(TS_DIR) && npm ci --no-audit --no-fund
	touch $@

typecheck: setup
	bash scripts/typecheck.sh

# Every runtime dependency has a binary wheel for aarch64/x86_64 Linux on Python 3.11-3.13.
check-wheels: setup
	$(PY) scripts/check_wheels.py

# Every bench/ script (quick: <= 10 min on 2 cores) into bench/results/<UTC time>/, then
# bench/REPORT.md + bench/plots/report/. bench-check compares the newest run's ratios with bench/baseline.json.
bench: setup
	$(PY) bench/run_all.py --quick; rc=$$?; $(PY) bench/report.py; exit $$rc

bench-full: setup
	$(PY) bench/run_all.py --full; rc=$$?; $(PY) bench/report.py; exit $$rc

bench-check: setup
	$(PY) bench/check.py

clean-cache:
	rm -rf $(CACHE)
