"""Prepared statements: where the engine uses them, and that they change no decision.

A statement run often is prepared only on a server reached directly: the embedded one, or a
DATABASE_URL the operator vouches for with DB_PREPARED_STATEMENTS=true. Through a transaction
pooler (Supabase's :6543, the documented default) a prepared statement would not exist on the
next transaction's server connection, so a DATABASE_URL alone never prepares. The tick's
statements, prepared (generic plans included), must decide exactly what they decide unprepared.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from strategy_engine import engine, runtime
from strategy_engine.backtest import synthetic
from strategy_engine.http.services import Services
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect, embedded
from tests.conftest import DAY, _drop, fresh_database, load_market, seed

SYMS = ("IWM", "QQQ", "SPY")
POOLER = "postgresql://postgres.ref:pw@aws-0-us-east-1.pooler.supabase.com:6543/postgres"


def test_a_database_url_prepares_only_when_the_operator_says_it_is_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not runtime.prepared(POOLER)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "true")
    get_settings.cache_clear()
    assert runtime.prepared(POOLER)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "not-a-boolean")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="db_prepared_statements"):
        runtime.prepared(POOLER)


def test_the_embedded_servers_urls_prepare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EMBEDDED_DATA_DIR", str(tmp_path / "pg"))
    get_settings.cache_clear()
    folder = str(embedded.default_data_dir().expanduser().resolve())
    assert runtime.prepared(f"postgresql://postgres:@/demo?host={folder}")
    assert not runtime.prepared(f"postgresql://postgres:@/demo?host={folder}-other")


def test_the_functions_sessions_follow_the_setting(monkeypatch: pytest.MonkeyPatch, db_url: str) -> None:
    """The deployed entry points (Services) open their sessions by the same rule."""
    with Services.from_settings(db_url).open_session() as s:
        assert not s.prepare
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "1")
    get_settings.cache_clear()
    with Services.from_settings(db_url).open_session() as s:
        assert s.prepare


def _journal(
    s: Session,
) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]], list[tuple[object, ...]]]:
    """What the minutes decided and did, without ids (a client id derives from the strategy's)
    or times of writing."""
    return (
        s.fetchall(
            "select decision_minute, symbol, action, qty::text, reason, risk_code, outcome,"
            " client_order_id is not null, replace(signal_payload::text, coalesce(client_order_id, '-'), 'cid')"
            " from strategy_logs order by decision_minute, symbol"
        ),
        s.fetchall(
            "select decision_minute, symbol, side, qty::text, status, filled_qty::text,"
            " filled_avg_price::text from paper_trades order by decision_minute, symbol"
        ),
        s.fetchall(
            "select trading_date, trades_today, notional_today::text, last_run_minute, last_trade_at"
            " from strategy_state"
        ),
    )


@pytest.fixture
def second_db_url(server_url: str, db_url: str) -> Iterator[str]:
    """A second migrated database (`db_url` has made the template)."""
    url = fresh_database(server_url)
    yield url
    _drop(server_url, url)


def test_prepared_and_unprepared_sessions_decide_and_trade_alike(db_url: str, second_db_url: str) -> None:
    """120 minutes of a trading session on each: the same decisions, orders and day state,
    and the prepared one did prepare (so its later minutes ran on cached, generic plans)."""
    journals = []
    for url, prepare in ((db_url, False), (second_db_url, True)):
        with connect(url, prepare=prepare) as s:
            seed(s, config={"symbols": list(SYMS), "min_flow_premium": 20_000, "order_qty": 5})
            data = load_market(s, synthetic.MarketSpec(SYMS, DAY, DAY, seed=11))
            for t in data.minutes[:120]:
                engine.tick(s, t)
            prepared = s.fetchone("select count(*) from pg_prepared_statements")
            assert prepared is not None and (prepared[0] > 0) is prepare
            journals.append(_journal(s))
    assert journals[0] == journals[1]
    decisions, orders, _ = journals[0]
    assert len(decisions) == 120 * len(SYMS) and len(orders) > 0
