# Two entry points for a fresh clone: `make run` (embedded demo) and `make test` (full suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The pinned CPU wheel; an unpinned torch would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install run test lint typecheck imports unit bench load clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt examples/dfp_mixer_plugin/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -c constraints.txt -e ".[dev]"
	# The example model plugin (entry-point group dfp.models), used by the tests.
	$(BIN)/python -m pip install -q -c constraints.txt -e examples/dfp_mixer_plugin
	touch $@

# The main job: the service in embedded mode (API + worker; SQLite and a file queue, nothing else).
run: install
	$(BIN)/dfp serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

# The import rules of pyproject.toml's [tool.importlinter] (engine, API, worker boundaries).
imports: install
	$(BIN)/lint-imports --no-cache

# The service tests need PostgreSQL and Redis (started here if they are not running) and the
# browser tests Debian's chromium (installed here if it is missing).
unit: install
	scripts/ensure-services.sh
	scripts/ensure-chromium.sh
	$(BIN)/pytest -q

test: lint typecheck imports unit

bench: install
	$(BIN)/python benchmarks/frequency_bench.py
	scripts/ensure-services.sh
	$(BIN)/python benchmarks/submit_bench.py

# 2 x 1000 experiments from 50 clients, the second time with a worker killed (RELIABILITY.md).
load: install
	scripts/ensure-services.sh
	$(BIN)/python benchmarks/load_test.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
