"""The tick on an Alpaca account: real Postgres, real alpaca-py, the loopback Alpaca server.

What is proved here is the exactly-once promise under the broker's failures: an outage or a
crash leaves the minute either absent or whole, and the retry leaves one order per signal at the
broker and one row per order in `paper_trades`.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr

from strategy_engine import engine, logs, manual_trade
from strategy_engine.brokers.alpaca import AlpacaPaperBroker
from strategy_engine.core.errors import InputError, LiveTradingRefused
from strategy_engine.core.models import StrategyOutcome
from strategy_engine.invocation import TickPolicy
from strategy_engine.settings import get_settings
from strategy_engine.store import Session, connect
from tests.conftest import REPO, seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_exactly_once import SYMS, T, entry_setup

POST = "POST /v2/orders"
REPLAY = TickPolicy(max_lag_seconds=0)  # T is a past session: replayed on purpose
ACCOUNT = "alpaca-paper"


def deps(fake: FakeAlpaca) -> engine.Deps:
    return engine.Deps(
        alpaca_broker=lambda _account: AlpacaPaperBroker(
            SecretStr(KEY),
            SecretStr(SECRET),
            fake.url,
            timeout_seconds=0.5,
            retry_budget_seconds=1.0,
            backoff_seconds=0.01,
            backoff_max_seconds=0.05,
        ),
        policy=REPLAY,
    )


def setup(s: Session, symbols: tuple[str, ...] = SYMS) -> None:
    """An active strategy on the Alpaca account whose every symbol wants to enter long at T."""
    seed(s, account=ACCOUNT, broker="alpaca", config={"symbols": list(symbols)})
    entry_setup(s, symbols, T)


def trades(s: Session) -> list[tuple[Any, ...]]:
    return s.fetchall(
        "select symbol, client_order_id, broker_order_id, status, filled_qty::float8,"
        " filled_avg_price::float8, source from paper_trades order by symbol"
    )


def assert_minute_absent(s: Session, intents: tuple[str, ...] = ()) -> None:
    """Nothing of the minute but the write-ahead intents of the orders it tried to send."""
    assert s.fetchone("select count(*) from strategy_logs") == (0,)
    assert [(r[0], r[3]) for r in trades(s)] == [(sym, "intent") for sym in intents]
    assert s.fetchone("select last_run_minute from strategy_state") in (None, (None,))
    assert s.fetchone("select cash::float8 from broker_balances") == (100_000.0,)  # mirror not refreshed


def assert_one_order_per_row(s: Session, fake: FakeAlpaca) -> None:
    rows = trades(s)
    assert len(rows) == len(fake.orders) == fake.orders_accepted
    for _symbol, cid, broker_id, *_ in rows:
        placed = fake.by_client_id(cid)
        assert placed is not None
        assert placed["id"] == broker_id


FILLED = pytest.mark.parametrize(  # the fake's fill policy: inside the POST, on its own schedule, never
    "fill",
    [
        pytest.param("instant", id="filled-at-once"),
        pytest.param("realistic", id="filled-later"),
        pytest.param("manual", id="left-accepted"),
    ],
)


@FILLED
def test_outage_on_submission_fails_the_minute_whole_and_the_retry_places_each_order_once(
    session: Session, fake: FakeAlpaca, fill: str
) -> None:
    setup(session)
    fake.set_policy(fill)
    fake.fail(POST, 503, times=10_000, after=1)  # IWM lands, then Alpaca goes down
    failed = engine.tick(session, T, deps=deps(fake))
    assert failed.status == "failed"
    assert failed.strategies[0].outcome is StrategyOutcome.FAILED
    assert "503" in (failed.strategies[0].error or "")
    assert fake.orders_accepted == 1
    # Every intent is committed before the three orders go out at once; one of them landed.
    assert_minute_absent(session, ("IWM", "QQQ", "SPY"))
    (landed,) = [o["symbol"] for o in fake.orders.values()]
    # Written ahead as the strategy's (a manual order's intent says `manual`).
    assert session.fetchall("select distinct source from paper_trades") == [("strategy",)]
    # The two whose sends gave up say so, with the error's kind: no attempt of them starts again.
    gave_up = session.fetchall("select symbol, error from paper_trades where error is not null order by 1")
    assert [sym for sym, _ in gave_up] == sorted({"IWM", "QQQ", "SPY"} - {landed})
    assert all(e.startswith("BrokerUnavailable: ") and "503" in e for _, e in gave_up), gave_up

    fake.heal()
    retry = engine.tick(session, T, deps=deps(fake))
    again = engine.tick(session, T, deps=deps(fake))
    # The one that landed is found at Alpaca and reconciled; the others are not there (void) and
    # are sent again
    assert (retry.status, retry.orders, retry.strategies[0].reconciled) == ("ok", 2, 1)
    assert session.fetchall(
        "select symbol, outcome from strategy_logs where outcome <> 'held' order by 1"
    ) == [(sym, "reconciled" if sym == landed else "ordered") for sym in ("IWM", "QQQ", "SPY")]
    assert again.strategies[0].outcome is StrategyOutcome.ALREADY_PROCESSED
    assert fake.orders_accepted == 3
    assert_one_order_per_row(session, fake)
    assert session.fetchone("select last_run_minute from strategy_state") == (T,)


KILLER = textwrap.dedent(
    """
    import os, sys
    from datetime import datetime
    from pydantic import SecretStr
    from strategy_engine import engine
    from strategy_engine.brokers.alpaca import AlpacaPaperBroker
    from strategy_engine.invocation import TickPolicy
    from strategy_engine.store import connect

    class DiesAfterAlpacaAccepts(AlpacaPaperBroker):
        def submit(self, intent):
            super().submit(intent)
            os._exit(137)  # killed between the broker's answer and the commit

    db, minute, url, key, secret = sys.argv[1:]
    broker = lambda _account: DiesAfterAlpacaAccepts(SecretStr(key), SecretStr(secret), url, timeout_seconds=5, retry_budget_seconds=20)
    with connect(db) as s:
        replay = TickPolicy(max_lag_seconds=0)
        engine.tick(s, datetime.fromisoformat(minute), deps=engine.Deps(alpaca_broker=broker, policy=replay))
    """
)


@FILLED
def test_a_process_killed_after_alpaca_accepted_leaves_one_order_and_one_row_after_the_retry(
    db_url: str, fake: FakeAlpaca, fill: str
) -> None:
    with connect(db_url) as s:
        setup(s, ("SPY",))
    fake.set_policy(fill)
    killed = subprocess.run(
        [sys.executable, "-c", KILLER, db_url, T.isoformat(), fake.url, KEY, SECRET],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert killed.returncode == 137, killed.stderr
    assert fake.orders_accepted == 1
    with connect(db_url) as s:
        assert_minute_absent(s, ("SPY",))
        retry = engine.tick(s, T, deps=deps(fake))
        assert (retry.orders, retry.strategies[0].reconciled) == (0, 1)
        assert (fake.requests[POST], fake.orders_accepted) == (1, 1)  # reconciled: never sent again
        assert_one_order_per_row(s, fake)
        # the row keeps what reconciliation read: filled unless the order never fills
        status = ("accepted", 0.0, None) if fill == "manual" else ("filled", 1.0, 100.0)
        assert [r[3:] for r in trades(s)] == [(*status, "strategy")]


def test_429_then_success_places_one_order_per_signal(session: Session, fake: FakeAlpaca) -> None:
    setup(session)
    fake.fail(POST, 429, retry_after="0")
    result = engine.tick(session, T, deps=deps(fake))
    assert (result.status, result.orders) == ("ok", 3)
    assert (fake.requests[POST], fake.orders_accepted) == (4, 3)
    assert_one_order_per_row(session, fake)


def test_a_rejected_order_is_logged_with_the_brokers_words_and_the_others_go_on(
    session: Session, fake: FakeAlpaca, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=logs.LOGGER.name)
    setup(session)
    fake.prices["IWM"] = Decimal(10**9)  # Alpaca values it above the account's buying power
    result = engine.tick(session, T, deps=deps(fake))
    run = result.strategies[0]
    assert (run.outcome, run.orders, run.failed) == (StrategyOutcome.PROCESSED, 2, 1)
    logged = session.fetchone(
        "select outcome, signal_payload->>'error' from strategy_logs where symbol = 'IWM'"
    )
    assert logged is not None
    assert logged[0] == "failed"
    assert "(40310000): insufficient buying power" in logged[1]
    # each `order` line says what became of its order, the refusal in the journal's words
    lines = [r.fields for r in caplog.records if r.getMessage() == "order"]  # type: ignore[attr-defined]
    assert sorted((x["symbol"], x["outcome"], x["risk_code"], x["error"]) for x in lines) == [
        ("IWM", "failed", None, logged[1]),
        ("QQQ", "ordered", None, None),
        ("SPY", "ordered", None, None),
    ]
    assert [(r[0], r[3]) for r in trades(session)] == [  # Alpaca answers a POST before it fills
        ("IWM", "rejected"),
        ("QQQ", "accepted"),
        ("SPY", "accepted"),
    ]
    assert session.fetchone("select last_run_minute from strategy_state") == (T,)


def test_the_mirror_is_refreshed_before_deciding_and_open_orders_later(
    session: Session, fake: FakeAlpaca
) -> None:
    setup(session)
    fake.set_policy("manual")
    fake.cash = Decimal("54321.5")
    fake.positions["TSLA"] = (Decimal(2), Decimal("250.5"))
    engine.tick(session, T, deps=deps(fake))
    assert session.fetchone("select cash::float8 from broker_balances") == (54321.5,)
    # As of the minute's New York date (not the wall clock's): a split recorded after it is
    # applied when the mirror is read for a later date (`acct_store.positions`).
    mirrored = (
        "select symbol, qty::float8, avg_entry_price::float8, split_applied_through from broker_positions"
    )
    assert session.fetchall(mirrored) == [("TSLA", 2.0, 250.5, date(2025, 6, 13))]
    assert {r[3:6] for r in trades(session)} == {("accepted", 0.0, None)}

    fake.fill()
    later = engine.tick(session, T + timedelta(minutes=1), deps=deps(fake))
    assert later.orders == 0  # now long everywhere: hold
    assert {r[3:6] for r in trades(session)} == {("filled", 1.0, 100.0)}
    held = session.fetchall("select symbol from broker_positions order by symbol")
    assert [r[0] for r in held] == ["IWM", "QQQ", "SPY", "TSLA"]
    assert fake.orders_accepted == 3


def test_manual_trade_on_alpaca_goes_through_the_same_path(session: Session, fake: FakeAlpaca) -> None:
    seed(session, account=ACCOUNT, broker="alpaca")
    entry_setup(session, ("SPY",), T)
    d = deps(fake)
    d.clock = lambda: T  # the last bar (T-1) is fresh
    order = manual_trade.manual_trade(session, ACCOUNT, "spy", "buy", 2, deps=d)
    assert (order.symbol, order.qty, order.status) == ("SPY", 2.0, "accepted")  # fills after the POST
    assert [r[3:] for r in trades(session)] == [("accepted", 0.0, None, "manual")]
    assert fake.by_client_id(order.client_order_id) is not None
    with pytest.raises(InputError):
        manual_trade.manual_trade(session, ACCOUNT, "SPY", "buy", 0, deps=deps(fake))
    assert fake.requests[POST] == 1


def test_a_manual_order_alpaca_refuses_names_alpaca_and_is_journalled_rejected(
    session: Session, fake: FakeAlpaca
) -> None:
    """Alpaca's own refusal (a status) is worded as Alpaca's: an order refused on our side before
    sending is not (test_manual_trade: "refused before sending")."""
    seed(session, account=ACCOUNT, broker="alpaca")
    entry_setup(session, ("SPY",), T)
    d = deps(fake)
    d.clock = lambda: T
    fake.fail(POST, 403)
    with pytest.raises(InputError) as refused:
        manual_trade.manual_trade(session, ACCOUNT, "SPY", "buy", 2, deps=d)
    assert str(refused.value) == "refused by Alpaca: insufficient buying power"
    assert [r[3:] for r in trades(session)] == [("rejected", 0.0, None, "manual")]
    assert fake.requests[POST] == 1


@pytest.fixture
def live_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ALPACA_BASE_URL", "https://API.alpaca.markets:443/")
    monkeypatch.setenv("ALPACA_API_KEY", KEY)
    monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.mark.usefixtures("live_settings")
def test_settings_pointing_at_the_live_host_refused_before_any_request(session: Session) -> None:
    setup(session)
    with pytest.raises(LiveTradingRefused):
        engine.tick(session, T, deps=engine.Deps(policy=REPLAY))  # the broker is built from settings
    assert session.fetchone("select count(*) from strategy_logs") == (0,)
    assert trades(session) == []
