"""Attacks on five recent changes (atk-d): the paper-only URL, a full open-orders list, split-
adjusted prices for manual trades and working orders, the migrations' preflight, and `serve`'s
signals. Each docstring starts HELD (the change stood) or BROKE (it fell, and was fixed).

Real Postgres, the real alpaca-py client and the loopback Alpaca (`tests/fake_alpaca`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from strategy_engine import engine
from strategy_engine import manual_trade as mt
from strategy_engine.brokers.alpaca import LIST_LIMIT, AlpacaPaperBroker
from strategy_engine.core.errors import BrokerUnavailable, InputError, LiveTradingRefused
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.settings import PAPER_BASE_URL, Settings
from strategy_engine.store import Session, connect
from strategy_engine.store.migrations import migrate
from tests import test_accounts_at_once_attacks, test_alpaca_broker
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_accounts_at_once_attacks import (
    MIDDLE,
    Accounts,
    check_books,
    done_at,
    layout,
    policy,
    rows,
)
from tests.test_alpaca_accounts import at, outcomes
from tests.test_exactly_once import T
from tests.test_existing_databases import db_migrate, refused_line
from tests.test_manual_trade import spy_bar_a_minute_ago

P = StrategyOutcome.PROCESSED
alpaca = test_accounts_at_once_attacks.alpaca  # fixtures, under their names here
sockets = test_alpaca_broker.sockets


def test_an_account_with_a_full_open_orders_list_fails_its_own_minute_alone_and_retries(
    session: Session, alpaca: Accounts
) -> None:
    """HELD: acct1 (middle of three) holds 500 open orders, Alpaca's most per list. Its two
    strategies fail retryably naming the full list; nothing is sent on acct1 and nothing of its
    minute is written (no decision, no order row, no intent, the strategies not marked done);
    a and c on the healthy accounts trade. Once one order is canceled (499 working), the
    scheduler's retry of the same minute runs b1 and b2, with the 499 counted as working."""
    fakes = alpaca.make(3)
    layout(session, MIDDLE)
    ids = fakes[1].hold_open(LIST_LIMIT)
    result = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    got = outcomes(result)
    assert (got["a"], got["c"]) == ((P, None), (P, None)), got
    for name in ("b1", "b2"):
        outcome, error = got[name]
        assert outcome is StrategyOutcome.FAILED
        assert error == "BrokerUnavailable: Alpaca lists 500 open orders, a full answer: more may work"
    assert {r.strategy: r.retryable for r in result.strategies if r.strategy.startswith("b")} == {
        "b1": True,
        "b2": True,
    }
    assert fakes[1].requests["POST /v2/orders"] == 0
    assert len(fakes[1].orders) == LIST_LIMIT
    assert sorted((r[0], r[1]) for r in rows(session)) == [("acct0", "a"), ("acct2", "c")]
    assert done_at(session) == {"a": T, "b1": None, "b2": None, "c": T}
    logged = session.fetchall(
        "select d.name from strategy_logs l join strategy_definitions d on d.id = l.strategy_id"
        " where d.name in ('b1', 'b2')"
    )
    assert logged == []
    intents = session.fetchall(
        "select t.client_order_id from paper_trades t join broker_accounts a on a.id = t.account_id"
        " where a.name = 'acct1'"
    )
    assert intents == []

    assert fakes[1].cancel(ids[0])[0] == 204
    fakes[1].tick(5)  # pending_cancel -> canceled
    assert len(fakes[1].open_orders()) == LIST_LIMIT - 1
    again = engine.tick(session, T, deps=replace(at(T), policy=policy()))
    assert {r.strategy: r.outcome for r in again.strategies if r.strategy.startswith("b")} == {
        "b1": P,
        "b2": P,
    }
    assert done_at(session) == {"a": T, "b1": T, "b2": T, "c": T}
    check_books(session, fakes[:1])
    placed = {
        o["client_order_id"]: o["id"]
        for o in fakes[1].orders.values()
        if o["client_order_id"].startswith("se-")
    }
    assert len(placed) == 2  # b1 and b2, once each
    assert {r[2]: r[3] for r in rows(session) if r[0] == "acct1"} == placed


def test_a_manual_trade_on_an_account_with_a_full_open_orders_list_is_an_outage_writing_nothing(
    db_url: str,
) -> None:
    """HELD: `strategy-engine trade` on an account holding 500 open orders: exit 3 with one
    stderr line naming the full list, nothing sent, nothing written (not even the default
    account its first use creates); once one order is canceled, the same command places it."""
    spy_bar_a_minute_ago(db_url)
    with FakeAlpaca() as fake:
        ids = fake.hold_open(LIST_LIMIT)
        env = {**os.environ, "ALPACA_API_KEY": KEY, "ALPACA_SECRET_KEY": SECRET, "ALPACA_BASE_URL": fake.url}
        env["ALPACA_RETRY_BUDGET_SECONDS"] = "1"
        args = [sys.executable, "-m", "strategy_engine.cli", "trade", "--symbol", "SPY", "--side", "buy"]
        args += ["--qty", "1", "--client-order-id", "se-m-desk-full", "--database-url", db_url]

        def run() -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                args, capture_output=True, text=True, cwd=REPO, env=env, check=False, timeout=120
            )

        first = run()
        assert first.returncode == 3, first.stderr
        assert first.stderr == "error: Alpaca lists 500 open orders, a full answer: more may work\n"
        assert fake.requests["POST /v2/orders"] == 0
        with connect(db_url) as s:
            assert s.fetchall("select name from broker_accounts") == []
            assert s.fetchall("select client_order_id from paper_trades") == []
        assert fake.cancel(ids[0])[0] == 204
        fake.tick(5)
        second = run()
        assert second.returncode == 0, second.stderr
        assert fake.requests["POST /v2/orders"] == 1
        assert fake.by_client_id("se-m-desk-full") is not None


# ---------------------------------------------------------------------------------------------
# 1. The paper-only URL.
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", [None, "K1"])
def test_names_that_other_alpaca_tools_read_never_move_the_client_off_the_paper_host(
    ref: str | None, monkeypatch: pytest.MonkeyPatch, sockets: list[object]
) -> None:
    """HELD: the live host under names alpaca-trade-api and the Alpaca CLI read
    (APCA_API_BASE_URL, APCA_ENDPOINT), under a per-credential spelling of ours
    (ALPACA_K1_BASE_URL, ALPACA_K1_ENDPOINT) and in TRADING_URL: none is a setting, and the
    client built for the default pair or for credentials_ref K1 still connects to the paper host
    only (the connection is refused here and the lookup it tried is what is checked)."""
    live = "https://api.alpaca.markets"
    for name in (
        "APCA_API_BASE_URL",
        "APCA_ENDPOINT",
        "ALPACA_K1_BASE_URL",
        "ALPACA_K1_ENDPOINT",
        "TRADING_URL",
    ):
        monkeypatch.setenv(name, live)
    monkeypatch.delenv("ALPACA_BASE_URL", raising=False)
    monkeypatch.setenv("ALPACA_K1_API_KEY", "PKK1")
    monkeypatch.setenv("ALPACA_K1_SECRET_KEY", "k1-secret")
    settings = Settings(_env_file=None, alpaca_api_key=SecretStr(KEY), alpaca_secret_key=SecretStr(SECRET),
                        alpaca_retry_budget_seconds=0.05)  # fmt: skip
    b = AlpacaPaperBroker.from_settings(settings, ref)
    assert b.base_url == PAPER_BASE_URL
    with pytest.raises(BrokerUnavailable):
        b.account()
    hosts = {args[0] for args in sockets if isinstance(args, tuple) and args and isinstance(args[0], str)}
    assert hosts == {"paper-api.alpaca.markets"}, sockets


@pytest.mark.parametrize("name", ["alpaca_base_url", "Alpaca_Base_Url"])
def test_the_base_url_setting_in_any_letter_case_is_checked(
    name: str, monkeypatch: pytest.MonkeyPatch, sockets: list[object]
) -> None:
    """HELD: pydantic-settings reads ALPACA_BASE_URL in any letter case; each spelling is the one
    setting, checked like it: the live host is refused before any socket opens."""
    monkeypatch.delenv("ALPACA_BASE_URL", raising=False)
    monkeypatch.setenv(name, "https://api.alpaca.markets")
    settings = Settings(_env_file=None, alpaca_api_key=SecretStr(KEY), alpaca_secret_key=SecretStr(SECRET))
    with pytest.raises(LiveTradingRefused, match="live host"):
        AlpacaPaperBroker.from_settings(settings)
    assert sockets == []


# ---------------------------------------------------------------------------------------------
# 3. Split-adjusted prices of manual orders and working orders.
# ---------------------------------------------------------------------------------------------

CLOSE = datetime(2025, 6, 12, 20, 0, tzinfo=UTC)  # Thursday 16:00 New York: the session has ended


def spy_bars(s: Session, close: float, *ends: datetime) -> None:
    for ts in ends:
        s.execute(
            "insert into market_data_1m (symbol, ts, open, high, low, close, volume)"
            " values ('SPY', %s, %s, %s, %s, %s, 1000)",
            (ts, close, close, close, close),
        )


def test_a_manual_order_queued_past_a_reverse_splits_ex_time_is_priced_after_the_split(
    session: Session,
) -> None:
    """BROKE: a manual order sent just after Thursday's close (its last bar, 15:59, is fresh) is
    a day order Alpaca queues for Friday's open; a 1:10 reverse split takes effect at midnight
    between. Priced at Thursday's $5, 1,000 shares passed the buying-power check at $5,000
    against $10,000, and fill at Friday's $50: $50,000. The check now prices the order as of
    the session it can fill in (the split applied): refused, nothing written."""
    seed(session, cash=10_000.0)
    spy_bars(session, 5.0, CLOSE - timedelta(minutes=2), CLOSE - timedelta(minutes=1))
    session.execute(
        "insert into corporate_actions (symbol, ex_date, split_ratio) values ('SPY', '2025-06-13', 0.1)"
    )
    with pytest.raises(InputError) as err:
        mt.manual_trade(session, "sim", "SPY", "buy", 1000, deps=engine.Deps(clock=lambda: CLOSE))
    assert str(err.value) == "refused: buying_power (observed 50,000.00, limit 10,000.00)"
    assert session.fetchall("select count(*) from paper_trades") == [(0,)]
    # In the session, before the split's day: no split between the order and its fill.
    ok = mt.manual_trade(
        session, "sim", "SPY", "buy", 1000, deps=engine.Deps(clock=lambda: CLOSE - timedelta(seconds=30))
    )
    assert ok.qty == 1000


# ---------------------------------------------------------------------------------------------
# 4. The migrations' preflight on shapes an existing Supabase project can have.
# ---------------------------------------------------------------------------------------------

DEFERRABLE = {
    "immediate-at-first": "deferrable initially immediate",
    "deferred": "deferrable initially deferred",
}


@pytest.mark.parametrize("shape", sorted(DEFERRABLE))
def test_a_deferrable_unique_key_on_an_upsert_key_is_refused_with_the_fix_then_upserts_work(
    empty_db_url: str, shape: str
) -> None:
    """BROKE: broker_accounts with the owner's deferrable UNIQUE (name). The preflight did not
    count it as the key (rightly) and the migration added the engine's; but PostgreSQL takes
    every unique index on the ON CONFLICT columns as an arbiter and refuses a deferrable one,
    so every upsert of the engine's on that table failed, reported as "database unavailable"
    (retried forever, never fixed by a retry). Now the preflight refuses it with one line naming
    the statement that makes it immediate; once run, the migration and the upserts work."""
    with connect(empty_db_url) as s:
        s.execute(
            "create table public.broker_accounts (id bigint generated by default as identity primary key,"
            f" name text not null, broker text, is_paper boolean default true,"
            f" constraint owner_name unique (name) {DEFERRABLE[shape]})"
        )
    line = refused_line(db_migrate(empty_db_url))
    assert "public.broker_accounts has a deferrable unique key owner_name on (name)" in line, line
    assert (
        "ALTER TABLE public.broker_accounts DROP CONSTRAINT owner_name, ADD CONSTRAINT owner_name UNIQUE (name)"
        in line
    )
    with connect(empty_db_url) as s:
        assert s.fetchall("select to_regclass('public.paper_trades')") == [(None,)]  # nothing changed
        s.execute(
            "ALTER TABLE public.broker_accounts DROP CONSTRAINT owner_name, ADD CONSTRAINT owner_name UNIQUE (name)"
        )
        migrate(s)
        seed(s, name="x", account="sim")
        seed(s, name="y", account="sim")  # the second upserts the account by name
        assert s.fetchall("select name from broker_accounts") == [("sim",)]
