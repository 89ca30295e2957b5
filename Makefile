# The two commands: `make run` and `make test`. Both create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test install bench typecheck clean chaos

# One line per phase, and pip's own progress for the long one (about a minute on a fresh machine).
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || { echo "==> [1/3] creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "==> [2/3] upgrading pip"
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@echo "==> [3/3] installing Orchestra and its dependencies into $(VENV)"
	@$(BIN)/python -m pip install --progress-bar on -e ".[dev]"
	@touch $(STAMP)
	@echo "==> installed: \`make run\` starts the stack, \`make test\` runs the tests"

install: $(STAMP)

run: $(STAMP)
	$(BIN)/orchestra up

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

# The randomized fault test (tests/chaos): `make chaos` runs CHAOS_SEEDS (200) and prints a table;
# `make chaos SEED=17` replays one seed (or SEED=3,17). CHAOS_BUDGET bounds the seconds spent.
CHAOS_SEEDS ?= 1-200
CHAOS_BUDGET ?= 2400
chaos: $(STAMP)
	SEED="$(SEED)" CHAOS_SEEDS="$(CHAOS_SEEDS)" CHAOS_BUDGET="$(CHAOS_BUDGET)" $(BIN)/pytest -q tests/chaos

bench: $(STAMP)
	$(BIN)/python bench/overhead.py

clean:
	rm -rf var .pytest_cache .mypy_cache
