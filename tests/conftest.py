"""Test fixtures on real PostgreSQL servers that the suite starts itself.

PostgreSQL 16 (pgserver) serves every test; the migration, tick, exactly-once, backfill and
existing-database tests also run on Debian's PostgreSQL 15 with pg_cron (`tests/pg15.py`), as
`[pg16]` and `[pg15]` cases of the `pg_version` parameter. The schema is migrated once into a
template database per server; every test that needs a database gets its own copy (CREATE
DATABASE ... TEMPLATE), so tests never see each other's rows.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from strategy_engine.backtest import synthetic
from strategy_engine.core.models import Limits, RowId
from strategy_engine.seed import save_strategy
from strategy_engine.settings import ENV_FILE_SETTING, Settings, get_settings
from strategy_engine.store import Session, connect, embedded, market
from strategy_engine.store.journal import reset_database
from strategy_engine.store.migrations import migrate
from tests import mutation_guard, pg15
from tests.fake_alpaca import FakeAlpaca

TEMPLATE = "se_template"

# Fuzzing replays the same examples everywhere in CI (CI=... set); locally it explores.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis_settings.load_profile("ci" if os.environ.get("CI") else "default")
# No dotenv file for the processes the tests start either (the CLI runs in the repository,
# where a user's `.env` may be): in this process `no_dotenv` below does the same.
os.environ[ENV_FILE_SETTING] = ""


def pytest_configure(config: pytest.Config) -> None:
    mutant = mutation_guard.active_mutant()
    if mutant:  # a mutmut worker: see tests/mutation_guard.py
        config.pluginmanager.register(mutation_guard.MutationGuard(mutant), "mutation-guard")


@pytest.fixture(autouse=True)
def no_dotenv(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Settings never read a `.env` from the working directory in tests: only the environment."""
    monkeypatch.setitem(Settings.model_config, "env_file", None)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def pg_base_url() -> Iterator[str]:
    """The test server's URL (database `postgres`), started once per test session.

    Its folder is this session's own (mkdtemp), not under pytest's numbered basetemp, which a
    concurrent run may clean while this server still uses it. Stopped (and its folder removed)
    at the session's end, not at interpreter exit: mutmut's workers leave with `os._exit`, which
    skips pgserver's atexit hook and would leave one server running per mutant.
    """
    folder = Path(tempfile.mkdtemp(prefix="se-test-pg-"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        url = embedded.start(folder / "data")
    yield url
    if embedded.stop(folder / "data"):
        shutil.rmtree(folder, ignore_errors=True)


# Modules whose database tests run on both servers (the rest run on 16 only, to keep time).
BOTH_VERSIONS = frozenset(
    {"test_migrations", "test_tick", "test_exactly_once", "test_backfill", "test_existing_databases"}
)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if "pg_version" in metafunc.fixturenames and module in BOTH_VERSIONS:
        metafunc.parametrize("pg_version", ["16", "15"], indirect=True, ids=["pg16", "pg15"])


@pytest.fixture(scope="session")
def pg15_url() -> Iterator[str]:
    """Debian's PostgreSQL 15 with pg_cron preloaded, started once per test session."""
    why = pg15.missing()
    if why:
        pytest.fail(why)
    server = pg15.start()
    yield server.url
    server.stop()


def _migrated_template(base_url: str) -> str:
    with connect(base_url) as admin:
        reset_database(admin, TEMPLATE)
    url = embedded.database_url(base_url, TEMPLATE)
    with connect(url) as s:
        migrate(s)
    return url


@pytest.fixture(scope="session")
def template_url(pg_base_url: str) -> str:
    return _migrated_template(pg_base_url)


@pytest.fixture(scope="session")
def template15_url(pg15_url: str) -> str:
    return _migrated_template(pg15_url)


@pytest.fixture
def pg_version(request: pytest.FixtureRequest) -> str:
    """ "16", or "15" in the modules of BOTH_VERSIONS (their tests run once for each)."""
    return str(getattr(request, "param", "16"))


@pytest.fixture
def server_url(pg_version: str, request: pytest.FixtureRequest) -> str:
    """The URL (database `postgres`) of the server of this test's PostgreSQL version."""
    return str(request.getfixturevalue("pg_base_url" if pg_version == "16" else "pg15_url"))


def fresh_database(pg_base_url: str, template: str | None = TEMPLATE) -> str:
    """A new, empty (or template-cloned) database on the test server; returns its URL."""
    name = "t_" + uuid.uuid4().hex[:12]
    with connect(pg_base_url) as admin:
        tmpl = f" template {template}" if template else ""
        admin.execute(f"create database {name}{tmpl}")
    return embedded.database_url(pg_base_url, name)


def _drop(server: str, url: str) -> None:
    name = url.split("?", maxsplit=1)[0].rsplit("/", 1)[1]
    with connect(server) as admin:
        admin.execute(f"drop database if exists {name} with (force)")


@pytest.fixture
def db_url(server_url: str, pg_version: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A migrated database of the test's own."""
    request.getfixturevalue("template_url" if pg_version == "16" else "template15_url")
    url = fresh_database(server_url)
    yield url
    _drop(server_url, url)


@pytest.fixture
def empty_db_url(server_url: str) -> Iterator[str]:
    """An empty database (no migrations): for legacy-schema and migration tests."""
    url = fresh_database(server_url, template=None)
    yield url
    _drop(server_url, url)


@pytest.fixture
def fake() -> Iterator[FakeAlpaca]:
    """A loopback Alpaca (`tests/fake_alpaca`) for the test, stopped after it."""
    with FakeAlpaca() as server:
        yield server


@pytest.fixture
def session(db_url: str) -> Iterator[Session]:
    with connect(db_url) as s:
        yield s


def seed(
    s: Session,
    *,
    name: str = "nft",
    config: dict[str, Any] | None = None,
    limits: Limits | None = None,
    cash: float = 100_000.0,
    active: bool = True,
    account: str = "sim",
    broker: str = "simulated",
) -> RowId:
    """A strategy on an account with `cash`; config defaults to DESIGN's defaults."""
    return save_strategy(
        s,
        name,
        "naive_flow_trend",
        config or {},
        account=account,
        broker=broker,
        is_active=active,
        limits=limits or Limits(),
        initial_cash=cash,
    )


def load_market(s: Session, spec: synthetic.MarketSpec) -> synthetic.MarketData:
    data = synthetic.generate(spec)
    with s.transaction():
        market.insert_bars(s, data.bars)
        market.insert_flow(s, data.flow)
    return data


DAY = date(2025, 6, 13)  # a plain Friday session, 09:30-16:00 New York
REPO = Path(__file__).resolve().parents[1]
