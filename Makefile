# One task runner for people and CI: `make demo`, `make test`, `make lint`, `make bench`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)  ## one cycle on embedded defaults; prints where the rendered email is
	$(BIN)/digest demo

test: $(STAMP)  ## the whole test suite, on TinyDB and again on PostgreSQL (where its binaries are installed)
	$(BIN)/python -m pytest
	$(BIN)/python -m pytest --store postgresql

lint: $(STAMP)  ## ruff and mypy, as CI runs them
	$(BIN)/ruff check digest tests scripts bench
	$(BIN)/ruff format --check digest tests scripts bench
	$(BIN)/mypy digest

format: $(STAMP)
	$(BIN)/ruff format digest tests scripts bench
	$(BIN)/ruff check --fix digest tests scripts bench

bench: $(STAMP)  ## benchmarks: figures, never assertions
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
