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

import psycopg
import pytest

from strategy_engine import engine, runtime
from strategy_engine.backtest import synthetic
from strategy_engine.core.errors import DatabaseUnavailable
from strategy_engine.http.services import Services
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect, embedded
from tests.conftest import DAY, _drop, fresh_database, load_market, seed

SYMS = ("IWM", "QQQ", "SPY")
POOLER = "postgresql://postgres.ref:pw@aws-0-us-east-1.pooler.supabase.com:6543/postgres"
SESSION_POOLER = POOLER.replace(":6543/", ":5432/")


def test_a_database_url_prepares_only_when_the_operator_says_it_is_direct(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not runtime.prepared(SESSION_POOLER)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "true")
    get_settings.cache_clear()
    assert runtime.prepared(SESSION_POOLER)
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "not-a-boolean")
    get_settings.cache_clear()
    with pytest.raises(ValueError, match="db_prepared_statements"):
        runtime.prepared(SESSION_POOLER)


@pytest.mark.parametrize("url", [POOLER, POOLER.replace("pooler.supabase.com", "example.org")])
def test_the_transaction_poolers_port_never_prepares(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """DB_PREPARED_STATEMENTS=true with the transaction pooler's URL (port 6543, the documented
    DATABASE_URL): a statement prepared there may be missing on the next transaction's server
    connection, or another client's may stand under its name. The setting does not prepare there."""
    monkeypatch.setenv("DB_PREPARED_STATEMENTS", "true")
    get_settings.cache_clear()
    assert not runtime.prepared(url)
    assert runtime.prepared(url.replace(":6543/", ":6542/"))


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


def _lose(s: Session, like: str = "%") -> int:
    """What a transaction pooler does when it hands the next transaction to another server
    connection: the prepared statements (those whose text is `like`) are gone, and psycopg is
    not told (the DEALLOCATE goes to libpq directly). Returns how many were lost."""
    names = s.fetchall("select name from pg_prepared_statements where statement like %s", (like,))
    for (name,) in names:
        s.conn.pgconn.exec_(f"deallocate {name}".encode())
    return len(names)


def test_prepared_statements_lost_behind_a_pooler_fail_one_minute_clearly_and_the_next_recovers(
    db_url: str, second_db_url: str
) -> None:
    """DB_PREPARED_STATEMENTS=true behind a transaction pooler: the minute whose statements are
    gone raises an outage that tells the operator what to do, writes nothing, and the same
    session runs that minute again, unprepared from then on, deciding as an unprepared session."""
    journals = []
    for url, prepare in ((db_url, False), (second_db_url, True)):
        with connect(url, prepare=prepare) as s:
            seed(s, config={"symbols": list(SYMS), "min_flow_premium": 20_000, "order_qty": 5})
            data = load_market(s, synthetic.MarketSpec(SYMS, DAY, DAY, seed=11))
            for i, t in enumerate(data.minutes[:60]):
                if prepare and i == 10:
                    assert _lose(s) > 0
                    before = _journal(s), s.fetchall("select count(*) from engine_runs")
                    with pytest.raises(DatabaseUnavailable, match="DB_PREPARED_STATEMENTS"):
                        engine.tick(s, t)
                    assert (_journal(s), s.fetchall("select count(*) from engine_runs")) == before
                    assert s.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
                assert engine.tick(s, t).status == "ok"
            journals.append(_journal(s))
            assert s.fetchall("select name from pg_prepared_statements") == []  # it prepares no more
    assert journals[0] == journals[1]
    assert len(journals[0][0]) == 60 * len(SYMS) and len(journals[0][1]) > 0


def test_a_statement_lost_in_the_minutes_writes_fails_that_strategy_clearly_and_writes_none_of_it(
    session: Session,
) -> None:
    """Only the day state's update is gone (a pooler's other server connection has the rest):
    the strategy fails with the operator's hint, none of its minute is written, and the next
    minute on the same session writes its decisions."""
    session.conn.prepare_threshold = 0  # every statement prepared at once: the session's own
    sid = seed(session, config={"symbols": list(SYMS), "min_flow_premium": 20_000, "order_qty": 5})
    data = load_market(session, synthetic.MarketSpec(SYMS, DAY, DAY, seed=11))
    engine.tick(session, data.minutes[0])
    assert _lose(session, "%set trades_today%") == 1
    before = _journal(session)
    result = engine.tick(session, data.minutes[1])
    assert result.status == "failed" and "DB_PREPARED_STATEMENTS" in (result.strategies[0].error or "")
    assert _journal(session) == before
    assert engine.tick(session, data.minutes[2]).status == "ok"
    logged = session.fetchall(
        "select decision_minute from strategy_logs where strategy_id = %s group by 1 order by 1", (sid,)
    )
    assert [m for (m,) in logged] == [data.minutes[0], data.minutes[2]]
