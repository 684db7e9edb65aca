# Every target installs what it needs into .venv, so a fresh clone only
# needs Python 3.11+ and pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 has a CPU build on these machines' local wheel cache; pinning
# it stops pip from pulling a multi-gigabyte CUDA build from the index.
TORCH ?= torch==2.13.0

.PHONY: venv test lint typecheck check demo bench clean

# The stamp, not the console script, marks a complete install: a .venv made
# by hand with `pip install -e .` has the script but no test tools.
STAMP := $(VENV)/.attestgate-dev-installed

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '$(TORCH)'
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests bench scripts
	$(BIN)/ruff format --check src tests bench scripts

typecheck: venv
	$(BIN)/mypy

check: lint typecheck test

demo: venv
	$(BIN)/python scripts/demo.py

bench: venv
	$(BIN)/python bench/bench_admit.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
