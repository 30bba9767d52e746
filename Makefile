# The two commands of the README: `make demo` and `make test`. Both set up .venv first (idempotent).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: setup demo test lint bench

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/trialscreen demo

lint: setup
	$(VENV)/bin/ruff check .

test: lint
	$(VENV)/bin/pytest

bench: setup
	for b in bench/[a-z]*.py; do $(PY) $$b || exit 1; done
