"""The operator CLI's store reads and writes, direct and fast (test_cli*.py run whole commands):
`status`'s open orders, last closes and strategy accounts, and `strategy activate/pause`.

Each test writes its own rows by hand, including rows that must not be returned (final orders,
voided intents, later bars); expectations are written out by hand from those rows.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from strategy_engine.core.models import RowId
from strategy_engine.store import Session, market, queries
from strategy_engine.store import strategies as strat_store
from tests.conftest import seed


def _t(hhmm: str) -> datetime:
    hh, mm = hhmm.split(":")
    return datetime(2025, 6, 13, int(hh), int(mm), tzinfo=UTC)


def _order(s: Session, sid: RowId, hhmm: str, status: str | None, coid: str) -> None:
    s.execute(
        "insert into public.paper_trades (strategy_id, account_id, symbol, side, qty, status,"
        " client_order_id, decision_minute)"
        " select id, account_id, 'SPY', 'buy', 2, %s, %s, %s from public.strategy_definitions where id = %s",
        (status, coid, _t(hhmm), sid),
    )


def test_open_orders_lists_working_orders_and_intents_oldest_first_but_no_final_or_voided_ones(
    session: Session,
) -> None:
    sid = seed(session, name="a", account="sim-a")
    _order(session, sid, "14:05", "new", "o-new")
    _order(session, sid, "14:01", "partially_filled", "o-part")
    _order(session, sid, "14:03", "intent", "o-intent")
    _order(session, sid, "14:04", "unknown_at_broker", "o-unknown")
    for i, final in enumerate(["filled", "canceled", "expired", "rejected", "replaced", "void"]):
        _order(session, sid, f"14:1{i}", final, f"o-{final}")
    rows: list[dict[str, Any]] = queries.open_orders(session)
    assert [(r["client_order_id"], r["status"], r["time"]) for r in rows] == [
        ("o-part", "partially_filled", _t("14:01")),
        ("o-intent", "intent", _t("14:03")),
        ("o-unknown", "unknown_at_broker", _t("14:04")),
        ("o-new", "new", _t("14:05")),
    ]
    assert {(r["account"], r["strategy"], r["symbol"], r["side"], r["qty"]) for r in rows} == {
        ("sim-a", "a", "SPY", "buy", 2.0)
    }


def test_last_closes_gives_each_symbols_last_bar_time_and_close_before_the_cutoff(session: Session) -> None:
    with session.transaction():
        market.insert_bars(
            session,
            [
                ("SPY", _t("14:00"), 500, 501, 499, 500.25, 10),
                ("SPY", _t("14:01"), 500, 502, 499, 501.5, 10),
                ("SPY", _t("14:02"), 500, 503, 499, 502.75, 10),  # at the cutoff: not before it
                ("QQQ", _t("13:58"), 400, 401, 399, 400.5, 10),
            ],
        )
    assert queries.last_closes(session, ["SPY", "QQQ", "IWM"], _t("14:02")) == {
        "SPY": (_t("14:01"), 501.5),
        "QQQ": (_t("13:58"), 400.5),
    }


def test_strategy_accounts_maps_each_strategy_name_to_its_account_name(session: Session) -> None:
    seed(session, name="b", account="sim-b")
    seed(session, name="a", account="sim-a")
    seed(session, name="c", account="sim-a")
    assert queries.strategy_accounts(session) == {"a": "sim-a", "b": "sim-b", "c": "sim-a"}


def test_set_active_flips_a_known_strategy_and_reports_an_unknown_name(session: Session) -> None:
    seed(session, name="a", account="sim-a", active=True)

    def active() -> bool:
        row = session.fetchone("select is_active from public.strategy_definitions where name = 'a'")
        assert row is not None
        return bool(row[0])

    assert strat_store.set_active(session, "a", False) is True
    assert active() is False
    assert strat_store.set_active(session, "nope", True) is False  # `strategy activate nope`: exit 2
    assert active() is False
    assert strat_store.set_active(session, "a", True) is True
    assert active() is True
