# Two commands: `make demo` runs the zero-config demo, `make test` runs the whole check.
# Both bootstrap .venv from requirements.lock (hash-checked) when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean mutation

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/strategy-engine demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/tick.py
	$(BIN)/python benchmarks/backfill.py
	$(BIN)/python benchmarks/cold_start.py

# Mutation testing (mutmut, configured in pyproject [tool.mutmut]); slow: not part of `make test`.
# MUTANTS narrows the run, e.g. make mutation MUTANTS='strategy_engine.brokers.simulated*'
MUTANTS ?=
mutation: $(STAMP)
	rm -rf build/mutation && mkdir -p build/mutation/infra/supabase
	ln -s ../../shared build/mutation/src
	ln -s ../../tests build/mutation/tests
	ln -s ../../../../infra/supabase/migrations build/mutation/infra/supabase/migrations
	cp pyproject.toml build/mutation/
	cd build/mutation && ../../$(BIN)/mutmut run $(MUTANTS); ../../$(BIN)/mutmut results

clean:
	rm -rf $(VENV) build *.egg-info shared/*.egg-info
