"""Strategy definitions, limits and the day-state row that makes each minute happen once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from psycopg.types.json import Jsonb

from strategy_engine.core.errors import InputError
from strategy_engine.core.models import BrokerAccount, DayState, Limits, RowId, StrategyDef
from strategy_engine.core.strategies.base import check_text
from strategy_engine.store.session import Session
from strategy_engine.store.values import exact, row_id

_DEF_COLS = """
  d.id, d.name, d.strategy_type, d.is_active, d.config,
  a.id, a.name, a.broker, coalesce(a.is_paper, true),
  l.max_daily_trades, l.max_position_size, l.max_notional_per_trade, l.max_notional_per_day,
  l.max_open_positions, l.cool_down_minutes, a.credentials_ref
"""
_DEF_FROM = """
  from public.strategy_definitions d
  left join public.broker_accounts a on a.id = d.account_id
  left join public.strategy_limits l on l.strategy_id = d.id
"""


@dataclass(frozen=True, slots=True)
class StrategyRow:
    definition: StrategyDef
    account: BrokerAccount | None
    account_is_paper: bool
    limits: Limits


def _limits(r: Sequence[Any]) -> Limits:
    """Limits from the six limit columns, in `_DEF_COLS` order."""
    return Limits(
        max_daily_trades=r[0],
        max_position_size=r[1],
        max_notional_per_trade=r[2],
        max_notional_per_day=r[3],
        max_open_positions=r[4],
        cool_down_minutes=r[5],
    )


def _row(r: tuple[Any, ...]) -> StrategyRow:
    d = StrategyDef(row_id(r[0]), r[1], r[2], r[3], r[4] or {})
    acct = None if r[5] is None else BrokerAccount(row_id(r[5]), r[6], r[7], r[15])
    return StrategyRow(d, acct, bool(r[8]), _limits(r[9:15]))


def load_all(s: Session, name: str | None = None) -> list[StrategyRow]:
    """Every definition (active or not: an inactive one runs with its orders blocked).


    Rows without a strategy_type (a definitions table that predates the engine) are not the
    engine's and are left alone. A name with a control character is refused (InputError)
    before it reaches SQL.
    """
    try:
        check_text(name or "")
    except ValueError as exc:
        raise InputError(f"strategy name: {exc}") from None
    where, params = ("and d.name = %s", (name,)) if name else ("", ())
    rows = s.fetchall(
        f"select {_DEF_COLS} {_DEF_FROM} where d.strategy_type is not null {where} order by d.name", params
    )
    return [_row(r) for r in rows]


def ensure_day_rows(s: Session, strategy_ids: Sequence[RowId], trading_date: date) -> None:
    """Create the day rows of these strategies for `trading_date` (those missing): one statement.

    Run outside the minute's transaction (committed at once) before any strategy is claimed, so
    that no worker's claim waits on another worker's uncommitted insert of the same row: the first
    minute of a day scales with workers like any other. Ids in ascending order, so two workers
    inserting at once wait on each other's rows in the same order (no deadlock).
    """
    if not strategy_ids:
        return
    s.execute(
        "insert into public.strategy_state (strategy_id, trading_date)"
        " select d.id, %s from public.strategy_definitions d where d.id = any(%s) order by d.id"
        " on conflict (strategy_id, trading_date) do nothing",
        (trading_date, list(strategy_ids)),
    )


@dataclass(frozen=True, slots=True)
class Claim:
    """A claimed strategy-minute: its day counters, its last minute, and its switch and limits as
    committed when the claim was taken (a change made while an earlier strategy of the same
    invocation ran takes effect; a deleted strategy is inactive with no limits)."""

    day: DayState
    last_run: datetime | None
    is_active: bool
    limits: Limits


def claim(s: Session, strategy_id: RowId, trading_date: date) -> Claim | None:
    """Lock this strategy's day row FOR UPDATE SKIP LOCKED; None when another worker holds it (or
    the row does not exist: `ensure_day_rows` makes it first). One statement; never waits for a
    lock."""
    cur = s.execute(
        """
            select st.trades_today, st.notional_today::float8, st.last_run_minute,
              coalesce(d.is_active, false),
              l.max_daily_trades, l.max_position_size, l.max_notional_per_trade, l.max_notional_per_day,
              l.max_open_positions, l.cool_down_minutes
            from public.strategy_state st
            left join public.strategy_definitions d on d.id = st.strategy_id
            left join public.strategy_limits l on l.strategy_id = st.strategy_id
            where st.strategy_id = %s and st.trading_date = %s
            for update of st skip locked
            """,
        (strategy_id, trading_date),
    )
    row = cur.fetchone()
    if row is None:
        return None
    return Claim(DayState(trading_date, int(row[0]), float(row[1])), row[2], bool(row[3]), _limits(row[4:]))


def save_state(
    s: Session, strategy_id: RowId, day: DayState, minute: datetime, last_trade_at: datetime | None
) -> None:
    s.execute(
        """
        update public.strategy_state
        set trades_today = %s, notional_today = %s, last_run_minute = %s,
            last_trade_at = coalesce(%s, last_trade_at), updated_at = now()
        where strategy_id = %s and trading_date = %s
        """,
        (day.trades_today, exact(day.notional_today), minute, last_trade_at, strategy_id, day.trading_date),
    )


def upsert_definition(
    s: Session,
    name: str,
    strategy_type: str,
    config: dict[str, Any],
    *,
    is_active: bool,
    account_id: RowId | None,
) -> RowId:
    row = s.fetchone(
        """
        insert into public.strategy_definitions (name, strategy_type, is_active, config, account_id)
        values (%s, %s, %s, %s, %s)
        on conflict (name) do update set strategy_type = excluded.strategy_type,
          is_active = excluded.is_active, config = excluded.config,
          account_id = excluded.account_id, updated_at = now()
        returning id
        """,
        (name, strategy_type, is_active, Jsonb(config), account_id),
    )
    if row is None:  # only when a BEFORE trigger of the owner's skipped the write (returned NULL)
        raise RuntimeError("upsert returned no row")
    return row_id(row[0])


def set_active(s: Session, name: str, is_active: bool) -> bool:
    """The kill switch: committed to disk whatever the server's default (`Session.durable`), so a
    strategy reported stopped stays stopped through a crash of the database. One round trip."""
    with s.pipeline():
        s.durable()
        cur = s.execute(
            "update public.strategy_definitions set is_active = %s, updated_at = now() where name = %s",
            (is_active, name),
        )
    return cur.rowcount > 0


def upsert_limits(s: Session, strategy_id: RowId, limits: Limits) -> None:
    s.execute(
        """
        insert into public.strategy_limits (strategy_id, max_daily_trades, max_position_size,
          max_notional_per_trade, max_notional_per_day, max_open_positions, cool_down_minutes)
        values (%s, %s, %s, %s, %s, %s, %s)
        on conflict (strategy_id) do update set max_daily_trades = excluded.max_daily_trades,
          max_position_size = excluded.max_position_size,
          max_notional_per_trade = excluded.max_notional_per_trade,
          max_notional_per_day = excluded.max_notional_per_day,
          max_open_positions = excluded.max_open_positions,
          cool_down_minutes = excluded.cool_down_minutes
        """,
        (
            strategy_id,
            limits.max_daily_trades,
            limits.max_position_size,
            limits.max_notional_per_trade,
            limits.max_notional_per_day,
            limits.max_open_positions,
            limits.cool_down_minutes,
        ),
    )


def day_states(s: Session, trading_date: date) -> list[tuple[Any, ...]]:
    """(name, is_active, trades_today, notional_today, last_trade_at, last_run_minute) for status:
    the counts of `trading_date` (0 without a row), the times of the latest state row on or before it
    whatever its date (a strategy that last ran yesterday shows yesterday's minute, not nothing)."""
    return s.fetchall(
        """
        select d.name, d.is_active, coalesce(st.trades_today, 0), coalesce(st.notional_today, 0)::float8,
               last.last_trade_at, last.last_run_minute
        from public.strategy_definitions d
        left join public.strategy_state st on st.strategy_id = d.id and st.trading_date = %s
        left join lateral (
          select l.last_trade_at, l.last_run_minute from public.strategy_state l
          where l.strategy_id = d.id and l.trading_date <= %s order by l.trading_date desc limit 1
        ) last on true
        order by d.name
        """,
        (trading_date, trading_date),
    )
