"""One broker account per credential: each Alpaca row reaches its own Alpaca account, or nothing.

The engine runs with its default dependencies (keys from the environment, by each row's
`credentials_ref`) against one loopback Alpaca server holding two accounts with different keys.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from pydantic import SecretStr

from strategy_engine import engine
from strategy_engine.brokers.alpaca import AlpacaPaperBroker, BrokerAuthError
from strategy_engine.brokers.base import Broker
from strategy_engine.core.errors import AccountConflict, InputError
from strategy_engine.core.models import BrokerAccount, RunResult, StrategyOutcome
from strategy_engine.manual_trade import manual_trade
from strategy_engine.settings import Settings, alpaca_keys, get_settings, is_credential_setting
from strategy_engine.store import Session
from tests.conftest import seed
from tests.fake_alpaca import KEY, SECRET, FakeAlpaca
from tests.test_exactly_once import T, entry_setup

KEY2, SECRET2 = "PKFAKEKEY0002", "fake-secret-0002"


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeAlpaca, FakeAlpaca]]:
    with FakeAlpaca() as first:
        second = first.add_account(KEY2, SECRET2, "PA3FAKE0002")
        monkeypatch.setenv("ALPACA_BASE_URL", first.url)
        monkeypatch.setenv("ALPACA_API_KEY", KEY)
        monkeypatch.setenv("ALPACA_SECRET_KEY", SECRET)
        monkeypatch.setenv("ALPACA_SECOND_API_KEY", KEY2)
        monkeypatch.setenv("ALPACA_SECOND_SECRET_KEY", SECRET2)
        monkeypatch.setenv("ALPACA_TIMEOUT_SECONDS", "2")
        get_settings.cache_clear()
        yield first, second
    get_settings.cache_clear()


def two_strategies(s: Session, refs: tuple[str | None, str | None]) -> None:
    """Strategy a on account alpaca-a (IWM), b on alpaca-b (SPY), each entering long at T."""
    for name, sym, ref in (("a", "IWM", refs[0]), ("b", "SPY", refs[1])):
        seed(s, name=name, account=f"alpaca-{name}", broker="alpaca", config={"symbols": [sym]})
        s.execute("update broker_accounts set credentials_ref = %s where name = %s", (ref, f"alpaca-{name}"))
    entry_setup(s, ("IWM", "SPY"), T)


def at(minute: datetime) -> engine.Deps:
    """The default dependencies (keys from the environment), with the host clock just after `minute`."""
    return engine.Deps(clock=lambda: minute + timedelta(seconds=2))


def recorded(s: Session) -> list[tuple[str, str | None]]:
    return [
        (r[0], r[1]) for r in s.fetchall("select name, alpaca_account_number from broker_accounts order by 1")
    ]


def outcomes(result: RunResult) -> dict[str, tuple[StrategyOutcome, str | None]]:
    return {r.strategy: (r.outcome, r.error) for r in result.strategies}


def test_each_row_trades_its_own_alpaca_account(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    two_strategies(session, (None, "SECOND"))
    result = engine.tick(session, T, deps=at(T))
    assert result.status == "ok"
    assert [o["symbol"] for o in first.orders.values()] == ["IWM"]
    assert [o["symbol"] for o in second.orders.values()] == ["SPY"]
    assert recorded(session) == [("alpaca-a", "PA3FAKE0001"), ("alpaca-b", "PA3FAKE0002")]
    engine.tick(
        session, T + timedelta(minutes=1), deps=at(T + timedelta(minutes=1))
    )  # the next minute mirrors the positions
    mirrored = session.fetchall(
        "select a.name, p.symbol from broker_positions p join broker_accounts a on a.id = p.account_id order by 1"
    )
    assert mirrored == [("alpaca-a", "IWM"), ("alpaca-b", "SPY")]


def test_a_second_row_reaching_the_same_alpaca_account_is_refused(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    two_strategies(session, (None, None))  # both rows on the default keys: one Alpaca account
    result = engine.tick(session, T, deps=at(T))
    assert result.status == "failed"
    got = outcomes(result)
    # The two accounts run at once: whichever records the number first keeps it.
    (winner,) = [k for k, v in got.items() if v == (StrategyOutcome.PROCESSED, None)]
    loser = "b" if winner == "a" else "a"
    outcome, error = got[loser]
    assert outcome is StrategyOutcome.FAILED
    assert error is not None
    assert error.startswith(
        f"AccountConflict: broker account 'alpaca-{loser}' reaches Alpaca account PA3FAKE0001, already used by "
    )
    assert error.endswith(": give it its own credentials (credentials_ref); refused")
    assert "\n" not in error
    symbol = {"a": "IWM", "b": "SPY"}
    assert [o["symbol"] for o in first.orders.values()] == [symbol[winner]]  # nothing sent for the loser
    assert second.orders == {}
    assert recorded(session) == sorted([(f"alpaca-{winner}", "PA3FAKE0001"), (f"alpaca-{loser}", None)])
    assert session.fetchone(
        "select count(*) from strategy_logs l join strategy_definitions d on d.id = l.strategy_id"
        " where d.name = %s",
        (loser,),
    ) == (0,)


def test_credentials_that_now_reach_another_account_are_refused(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    first, second = fakes
    two_strategies(session, (None, "SECOND"))
    session.execute("update broker_accounts set alpaca_account_number = 'PA3OTHER' where name = 'alpaca-b'")
    result = engine.tick(session, T, deps=at(T))
    outcome, error = outcomes(result)["b"]
    assert outcome is StrategyOutcome.FAILED
    assert error == (
        "AccountConflict: broker account 'alpaca-b' is Alpaca account PA3OTHER, but its credentials (SECOND)"
        " now reach PA3FAKE0002: refused"
    )
    assert second.orders == {}
    assert [o["symbol"] for o in first.orders.values()] == ["IWM"]


def test_unset_credentials_fail_their_row_only_and_name_the_settings(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    first, _ = fakes
    two_strategies(session, (None, "THIRD"))
    monkeypatch.chdir(tmp_path)  # no .env file here to fall back on
    result = engine.tick(session, T, deps=at(T))
    outcome, error = outcomes(result)["b"]
    assert outcome is StrategyOutcome.FAILED
    assert error == "BrokerAuthError: ALPACA_THIRD_API_KEY and ALPACA_THIRD_SECRET_KEY must both be set"
    assert outcomes(result)["a"][0] is StrategyOutcome.PROCESSED
    assert len(first.orders) == 1


def test_a_manual_trade_goes_to_the_alpaca_account_of_the_rows_credentials(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    """`strategy-engine trade` on a row with `credentials_ref` trades with that key pair: the order
    lands in the second Alpaca account, whose number the row records; the default one sees nothing."""
    first, second = fakes
    two_strategies(session, (None, "SECOND"))
    order = manual_trade(session, "alpaca-b", "SPY", "buy", 1, deps=at(T))
    assert [(o["symbol"], o["client_order_id"]) for o in second.orders.values()] == [
        ("SPY", order.client_order_id)
    ]
    assert first.orders == {}
    assert recorded(session) == [("alpaca-a", None), ("alpaca-b", "PA3FAKE0002")]
    # alpaca-a pointed at the same pair: refused by name, before any order
    session.execute("update broker_accounts set credentials_ref = 'SECOND' where name = 'alpaca-a'")
    with pytest.raises(AccountConflict) as refused:
        manual_trade(session, "alpaca-a", "IWM", "buy", 1, deps=at(T))
    assert str(refused.value) == (
        "broker account 'alpaca-a' reaches Alpaca account PA3FAKE0002, already used by 'alpaca-b':"
        " give it its own credentials (credentials_ref); refused"
    )
    assert (len(first.orders), len(second.orders)) == (0, 1)


def test_credentials_ref_is_a_name_never_a_key(session: Session) -> None:
    seed(session, account="alpaca-x", broker="alpaca")
    with pytest.raises(psycopg.errors.CheckViolation):
        session.execute("update broker_accounts set credentials_ref = %s where name = 'alpaca-x'", (SECRET,))


def test_keys_by_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALPACA_PAPER2_API_KEY", "k2")
    monkeypatch.setenv("ALPACA_PAPER2_SECRET_KEY", "s2")
    settings = Settings(_env_file=None, alpaca_api_key=SecretStr("k1"), alpaca_secret_key=SecretStr("s1"))
    assert [x.get_secret_value() for x in alpaca_keys(settings, None)] == ["k1", "s1"]
    assert [x.get_secret_value() for x in alpaca_keys(settings, "PAPER2")] == ["k2", "s2"]
    with pytest.raises(InputError, match="invalid credentials_ref"):
        alpaca_keys(settings, "paper2")
    with pytest.raises(BrokerAuthError, match="ALPACA_NOPE_API_KEY and ALPACA_NOPE_SECRET_KEY"):
        AlpacaPaperBroker.from_settings(settings, "NOPE")
    assert is_credential_setting("alpaca_paper2_secret_key")
    assert not is_credential_setting("ALPACA_API_KEY_X")


def test_one_client_per_account_per_invocation(
    session: Session, fakes: tuple[FakeAlpaca, FakeAlpaca]
) -> None:
    _, second = fakes
    two_strategies(session, (None, "SECOND"))
    seed(session, name="c", account="alpaca-b", broker="alpaca", config={"symbols": ["QQQ"]})
    entry_setup(session, ("QQQ",), T)
    built: list[str] = []
    default = engine.Deps().alpaca_broker

    def counting(account: BrokerAccount) -> Broker:
        built.append(account.name)
        return default(account)

    result = engine.tick(session, T, deps=engine.Deps(alpaca_broker=counting, clock=lambda: T))
    assert result.status == "ok" and result.orders == 3
    assert sorted(built) == ["alpaca-a", "alpaca-b"]  # b's two strategies share one client
    assert sorted(o["symbol"] for o in second.orders.values()) == ["QQQ", "SPY"]
