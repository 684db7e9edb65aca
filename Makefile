# Every target installs what it needs into .venv, so a fresh clone only
# needs Python 3.11+ and pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch 2.13.0 has a CPU build on these machines' local wheel cache; pinning
# it stops pip from pulling a multi-gigabyte CUDA build from the index.
TORCH ?= torch==2.13.0

.PHONY: venv test lint typecheck check demo bench bench-pickle peers eval-peers clean

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

# The peer scanners (the `bench` extra) need older rich and python-dateutil
# than the gate's environment, so they get their own virtual environment,
# where peers.py finds them through ATTESTGATE_PEERS_BIN.
PEERS_VENV ?= .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.peers-installed

$(PEERS_STAMP): pyproject.toml
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install --quiet --upgrade pip
	$(PEERS_VENV)/bin/pip install --quiet '.[bench]'
	touch $@

peers: $(PEERS_STAMP)

bench-pickle: venv peers
	ATTESTGATE_PEERS_BIN=$(PEERS_VENV)/bin $(BIN)/python bench/bench_pickle.py

eval-peers: venv peers
	ATTESTGATE_PEERS_BIN=$(PEERS_VENV)/bin $(BIN)/attestgate eval --peers --out eval-out

clean:
	rm -rf $(VENV) $(PEERS_VENV) .pytest_cache .mypy_cache .ruff_cache
