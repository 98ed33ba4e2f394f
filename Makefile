# make demo   generate the demo dataset, train a small CCNet on it, evaluate (CPU, < 10 min)
# make test   run the test suite
# Both create .venv on first use (scripts/setup.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup test demo bench

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt requirements-dev.txt scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q tests

demo: setup
	$(PY) demo.py

bench: setup
	$(PY) benchmarks/bench_cca.py
