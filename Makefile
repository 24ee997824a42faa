# Two commands: `make demo` runs the zero-config demo, `make test` runs the whole check.
# Both bootstrap .venv from requirements.lock (hash-checked) when it is missing or stale.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The tests also start Debian's PostgreSQL 15 with pg_cron, and run the pinned Supabase CLI.
PG15   := /usr/lib/postgresql/15/bin/initdb /usr/lib/postgresql/15/lib/pg_cron.so
NODE   := node_modules/.installed
# sudo only when not root, and only when it exists (a container running as root has none)
SUDO   := $(if $(filter 0,$(shell id -u)),,$(shell command -v sudo 2>/dev/null))

.PHONY: demo test test-tools pg15 lint bench clean mutation prescreen

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Quick when present: apt runs only when a file is missing. Without apt-get (or, when not root,
# without sudo), one line says what to install by hand.
pg15:
	@for f in $(PG15); do test -e $$f || missing=1; done; \
	if [ -n "$$missing" ]; then \
		if ! command -v apt-get >/dev/null 2>&1; then \
			echo "make: PostgreSQL 15 with pg_cron is needed at /usr/lib/postgresql/15 and apt-get is not available: install postgresql-15 and postgresql-15-cron from your system's packages or https://www.postgresql.org/download/ (the PGDG repositories carry both), then run make test again" >&2; exit 1; \
		fi; \
		if [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; then \
			echo "make: installing postgresql-15 and postgresql-15-cron needs root: run as root, install sudo, or run: apt-get install -y postgresql-15 postgresql-15-cron" >&2; exit 1; \
		fi; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y --no-install-recommends postgresql-15 postgresql-15-cron; \
	fi

# package-lock.json pins the Supabase CLI; npm ci reinstalls exactly that when the lock changes.
$(NODE): package.json package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "make: node and npm are needed to install the pinned Supabase CLI (package-lock.json): install Node.js 18 or later, e.g. apt-get install nodejs npm or https://nodejs.org/en/download" >&2; exit 1; }
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
	# One worker per core (pytest-xdist): each starts its own servers (tests/conftest.py), as
	# two runs at once do (tests/test_hermetic.py); most of a test's time is waiting on them.
	$(BIN)/pytest -q -n auto

bench: $(STAMP)
	$(BIN)/python benchmarks/tick.py
	$(BIN)/python benchmarks/latency.py
	$(BIN)/python benchmarks/workers.py
	$(BIN)/python benchmarks/backfill.py
	$(BIN)/python benchmarks/cold_start.py

# Mutation testing (mutmut, configured in pyproject [tool.mutmut]); slow: not part of `make test`.
# MUTANTS narrows the run, e.g. make mutation MUTANTS='strategy_engine.brokers.simulated*'
# (several globs, space-separated); docs/mutation.md lists what was run and what survived.
MUTANTS ?=
mutation: $(STAMP)
	rm -rf build/mutation && mkdir -p build/mutation/infra/supabase
	ln -s ../../shared build/mutation/src
	ln -s ../../tests build/mutation/tests
	ln -s ../../functions build/mutation/functions
	ln -s ../../../../infra/supabase/migrations build/mutation/infra/supabase/migrations
	cp pyproject.toml build/mutation/
	cd build/mutation && ../../$(BIN)/mutmut run $(MUTANTS); ../../$(BIN)/mutmut results | { grep -v ': not checked$$' || true; }

# A fast first pass over many mutants in one pytest process (tests/mutation_prescreen.py):
# MUTANTS globs, each mutant against its fastest covering tests up to BUDGET seconds of them.
# Needs a mutmut run's stats first (made here, with one mutant, when missing). Resumable: run
# it again to continue; `rm build/mutation/prescreen*` to start over.
BUDGET ?= 3.5
PRESCREEN := PRESCREEN_PLAN=../prescreen-plan.json PRESCREEN_OUT=../prescreen.jsonl PYTHONPATH=src
prescreen: $(STAMP)
	test -n "$(MUTANTS)" || { echo "make: give MUTANTS='glob ...'" >&2; exit 2; }
	test -f build/mutation/mutants/mutmut-stats.json || $(MAKE) mutation MUTANTS='strategy_engine.core.risk.x_signed_qty__mutmut_1'
	cd build/mutation/mutants && ../../../$(BIN)/python tests/mutation_prescreen.py plan $(BUDGET) $(MUTANTS) > ../prescreen-plan.json
	cd build/mutation/mutants && $(PRESCREEN) ../../../$(BIN)/python -m pytest --rootdir=. -q -p no:randomly \
		-p tests.mutation_prescreen -k "not pg15" $$(../../../$(BIN)/python tests/mutation_prescreen.py files ../prescreen-plan.json)
	@python3 -c 'import collections, json; c = collections.Counter(json.loads(l)["verdict"] for l in open("build/mutation/prescreen.jsonl")); print(dict(c))'

clean:
	rm -rf $(VENV) node_modules build *.egg-info shared/*.egg-info
