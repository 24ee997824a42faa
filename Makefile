# Two commands: `make demo` runs the zero-config demo, `make test` runs the whole check.
# Both bootstrap .venv from requirements.lock (hash-checked) when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The tests also start Debian's PostgreSQL 15 with pg_cron, and run the pinned Supabase CLI.
PG15   := /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/lib/pg_cron.so
NODE   := node_modules/.installed
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test test-tools pg15 lint bench clean

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Quick when present: apt runs only when a file is missing.
pg15:
	@for f in $(PG15); do test -e $$f || missing=1; done; \
	if [ -n "$$missing" ]; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends postgresql-15 postgresql-15-cron; \
	fi

# package-lock.json pins the Supabase CLI; npm ci reinstalls exactly that when the lock changes.
$(NODE): package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $(NODE)

test-tools: pg15 $(NODE)

demo: $(STAMP)
	$(BIN)/strategy-engine demo

test: $(STAMP) test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/tick.py
	$(BIN)/python benchmarks/backfill.py
	$(BIN)/python benchmarks/cold_start.py

clean:
	rm -rf $(VENV) node_modules build *.egg-info shared/*.egg-info
