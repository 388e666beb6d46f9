# walrus: the two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXTRAS ?= train,serve,dev
MOVIELENS ?= $(abspath ../shared/data/ml-latest-small)
export WALRUS_MOVIELENS_DIR ?= $(if $(wildcard $(MOVIELENS)/ratings.csv),$(MOVIELENS),)
comma := ,
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test lint format bench clean

# Re-install only when pyproject.toml changes.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

demo: install
	$(BIN)/walrus data synthetic --size small --out artifacts/data/synthetic-small
	$(BIN)/walrus train wals -c configs/demo.toml
	$(BIN)/walrus eval -c configs/demo.toml --json artifacts/demo/eval.json

test: install lint
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check models export service bench tests
	$(BIN)/ruff format --check models export service bench tests
	$(BIN)/mypy

format: install
	$(BIN)/ruff format models export service bench tests
	$(BIN)/ruff check --fix models export service bench tests

bench: install
	$(BIN)/python -m bench.wals_vs_implicit $(if $(WALRUS_MOVIELENS_DIR),--movielens $(WALRUS_MOVIELENS_DIR),)

clean:
	rm -rf artifacts bench/results .pytest_cache .mypy_cache .ruff_cache
