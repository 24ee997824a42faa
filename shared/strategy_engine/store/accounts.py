"""Broker accounts and their mirrored positions and balances.

For an Alpaca account these tables mirror the broker (the broker is the truth; dashboards read
the mirror). For a simulated account they *are* the truth. Either way one function writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import psycopg

from strategy_engine.core.cash_account import cash_account
from strategy_engine.core.data_quality import split_position
from strategy_engine.core.errors import AccountConflict, NotFound
from strategy_engine.core.models import Account, BrokerAccount, Position, RowId
from strategy_engine.store.session import Later, Session
from strategy_engine.store.values import exact, row_id


def ensure_account(s: Session, name: str, broker: str) -> RowId:
    row = s.fetchone(
        "insert into public.broker_accounts (name, broker, is_paper) values (%s, %s, true)"
        " on conflict (name) do update set broker = excluded.broker returning id",
        (name, broker),
    )
    if row is None:  # RETURNING always yields a row; this guards a broken driver
        raise RuntimeError("upsert returned no row")
    return row_id(row[0])


def find_account(s: Session, name: str) -> tuple[BrokerAccount, bool] | None:
    """(account, is_paper) by name."""
    row = s.fetchone(
        "select id, broker, coalesce(is_paper, true), credentials_ref from public.broker_accounts"
        " where name = %s",
        (name,),
    )
    if row is None:
        return None
    return BrokerAccount(row_id(row[0]), name, row[1], row[3]), bool(row[2])


def check_alpaca_account(s: Session, account: BrokerAccount, reached: str | None) -> None:
    """Hold `account` to the one Alpaca account its credentials reach (`reached`, its number).

    The first use records the number; later uses must reach the same one, and no other row may
    hold it (a unique index backs this against a concurrent first use). One statement, two on
    first use. Raises AccountConflict (one line) otherwise; nothing is written then.
    """
    if not reached:
        raise AccountConflict(f"broker account {account.name!r}: Alpaca answered without an account number")
    row = s.fetchone(
        """
        select a.alpaca_account_number,
               (select o.name from public.broker_accounts o
                where o.alpaca_account_number = %(n)s and o.id <> a.id order by o.name limit 1)
        from public.broker_accounts a where a.id = %(id)s
        """,
        {"id": account.id, "n": reached},
    )
    recorded, other = row if row is not None else (None, None)
    if other is not None:
        raise _conflict(account, reached, other)
    if recorded is not None and recorded != reached:
        raise AccountConflict(
            f"broker account {account.name!r} is Alpaca account {recorded}, but its credentials"
            f" ({account.credentials_ref or 'default'}) now reach {reached}: refused"
        )
    if recorded is None:
        try:
            s.execute(
                "update public.broker_accounts set alpaca_account_number = %s where id = %s",
                (reached, account.id),
            )
        except psycopg.errors.UniqueViolation:
            raise _conflict(account, reached, "another broker account") from None


def _conflict(account: BrokerAccount, reached: str, other: str) -> AccountConflict:
    return AccountConflict(
        f"broker account {account.name!r} reaches Alpaca account {reached}, already used by {other!r}:"
        f" give it its own credentials (credentials_ref); refused"
    )


# A position row the engine can read: a symbol and a quantity. The engine's own rows always have
# both; a table from an older shape may not (the migrations add `symbol` and `qty` as nullable
# columns to keep its rows). A row without a symbol names nothing that can be priced, traded or
# mirrored, so every reader leaves it out, as it leaves out a null quantity (`qty <> 0` is not
# true then); it is left in place (no writer deletes it), for its owner to name or delete
# (docs/operations.md, "What the migrations change").
_HELD = "p.symbol is not null and p.qty <> 0"

# The New York date of now: what "as of" means for a caller that does not name a minute.
_TODAY_NY = "(now() at time zone 'America/New_York')::date"

# The positions as of New York date %(as_of)s (default today), each with the split ratios of
# `corporate_actions` that took effect since it was saved (ex date after its
# `split_applied_through`, up to %(as_of)s), in ex-date order.
_POSITIONS = f"""
  select p.symbol, p.qty::float8 as qty, coalesce(p.avg_entry_price, 0)::float8 as avg,
    (select array_agg(a.split_ratio::float8 order by a.ex_date) from public.corporate_actions a
     where a.symbol = p.symbol and a.ex_date > p.split_applied_through
       and a.ex_date <= coalesce(%(as_of)s::date, {_TODAY_NY})) as ratios
  from public.broker_positions p
  where p.account_id = %(id)s and {_HELD}
"""


def _split(symbol: str, qty: float, avg: float, ratios: Sequence[float] | None) -> Position:
    p = Position(symbol, qty, avg)
    for r in ratios or ():
        p = split_position(p, r)
    return p


def positions(s: Session, account_id: RowId, as_of: date | None = None) -> list[Position]:
    """The account's positions as of New York date `as_of` (default today), with the splits of
    `corporate_actions` that took effect since they were saved applied in ex-date order by
    `split_position`. One statement; `save_mirror` with the same `as_of` records them as applied."""
    rows = s.fetchall(_POSITIONS + " order by p.symbol", {"id": account_id, "as_of": as_of})
    return [_split(*r) for r in rows]


@dataclass(frozen=True, slots=True)
class Locked:
    """The account's balance and positions as the tables hold them, read under its row lock.

    `positions` are as of the New York date asked for (`positions`). `stamp` is the balance row's
    `updated_at` (the statement's clock, not the transaction's): each transaction that mirrors
    the account moves it, so an invocation that finds
    the stamp it wrote last knows no one else touched the account since (None before the first
    balance)."""

    balance: Account | None
    positions: list[Position]
    stamp: datetime | None
    sending: bool = False  # the account has intents: orders some minute may have placed unrecorded
    # A balance row whose cash is NULL (an older shape): unknown, not $0; `balance` is None (another
    # tool's buying power or equity, margin or at market prices, never stand in for cash).
    cash_missing: bool = False


def lock_account_later(s: Session, account_id: RowId, as_of: date | None = None) -> Later[Locked]:
    """Lock the account's own row until commit, then read its balance and positions as of New
    York date `as_of`: two statements, pipelined with the caller's if it has one (read the
    answer after it).

    The lock is on `broker_accounts`, a row that exists as long as the account does, so the
    strategies sharing an account serialise from their very first minute (a `broker_balances`
    row does not exist until the first mirror is written). Under the transaction's
    `lock_timeout` a worker that waits too long raises `Busy`. The answer raises NotFound when
    the account no longer exists.
    """
    lock = s.execute("select 1 from public.broker_accounts where id = %s for update", (account_id,))
    # A second statement, so the balance is read after the lock is granted: in READ COMMITTED a
    # statement that waited for a lock still reads the other tables as of its own start, which
    # would hand this strategy the balance from before the previous holder's fills.
    read = s.execute(
        f"""
        select b.cash::float8, b.buying_power::float8, b.equity::float8, b.updated_at,
          exists (select 1 from public.paper_trades t where t.account_id = %(id)s and t.status = 'intent'),
          b.account_id is not null and b.cash is null, p.symbol, p.qty, p.avg, p.ratios
        from (select 1) one
        left join public.broker_balances b on b.account_id = %(id)s
        left join lateral ({_POSITIONS}) p on true
        order by p.symbol
        """,
        {"id": account_id, "as_of": as_of},
    )

    def answer() -> Locked:
        if lock.fetchone() is None:
            raise NotFound(f"account {account_id} no longer exists")
        rows = read.fetchall()
        first = rows[0]  # the (select 1) row is always there
        held = [_split(*r[6:]) for r in rows if r[6] is not None]
        balance = None if first[0] is None else _balance(first[0], first[1], first[2], held)
        return Locked(balance, held, first[3], bool(first[4]), bool(first[5]))

    return answer


def _balance(cash: float, power: float | None, equity: float | None, held: Sequence[Position]) -> Account:
    """The balance row read as an `Account`: its own figures, and for a figure it lacks, the cash
    account's (`cash_account`: buying power max(cash, 0), equity cash + held at entry prices).

    Only a table from an older shape lacks them (the migrations add `buying_power` and `equity`
    as nullable columns to keep its rows; `save_mirror` always writes all three). Why this
    reading: for a simulated account the tables are the truth and its broker derives both from
    the cash and positions this very way, so the row reads as the figures the account's first
    mirror will write; an Alpaca account's balance is never decided on from here (the broker is
    read under the lock and the mirror replaced first). Read as no balance instead, the
    simulated account would trade from $0 and its cash be overwritten with 0; refused, an account
    whose every figure is known would stop. (Left None, a figure broke the type: a TypeError at
    the first subtraction, in `execution.risk_context`.)"""
    if power is not None and equity is not None:
        return Account(cash, power, equity)
    derived = cash_account(cash, held)
    return Account(
        cash,
        derived.buying_power if power is None else power,
        derived.equity if equity is None else equity,
    )


def stamps(s: Session, account_ids: Sequence[RowId]) -> dict[RowId, datetime]:
    """The balance rows' stamps (`Locked.stamp`) of these accounts, without any lock; an account
    with no balance row yet is absent."""
    rows = s.fetchall(
        "select account_id, updated_at from public.broker_balances where account_id = any(%s)",
        (list(account_ids),),
    )
    return {r[0]: r[1] for r in rows}


def lock_account(s: Session, account_id: RowId) -> Account | None:
    """`lock_account_later`'s balance, at once (None before the first balance). Not pipelined: the
    caller may do slow things while it holds the lock (see `Session.pipeline`)."""
    return lock_account_later(s, account_id)().balance


def save_mirror(
    s: Session, account_id: RowId, acct: Account, pos: Sequence[Position], as_of: date | None = None
) -> Later[datetime]:
    """Replace the account's positions and balance in one statement, whatever their number; the
    answer is the new stamp (`Locked.stamp`).

    The positions are as of New York date `as_of` (default today): every split up to it is in
    them (`positions` applied it, or the broker did), so `split_applied_through` becomes `as_of`.
    """
    symbols = [p.symbol for p in pos]
    # One statement: its parts see the same snapshot and touch disjoint rows (the positions
    # deleted are exactly those not upserted).
    cur = s.execute(
        f"""
        with gone as (
          delete from public.broker_positions where account_id = %(id)s and not (symbol = any(%(sym)s))
        ), held as (
          insert into public.broker_positions
            (account_id, symbol, qty, avg_entry_price, split_applied_through, updated_at)
          select %(id)s, u.symbol, u.qty, u.avg, coalesce(%(as_of)s::date, {_TODAY_NY}), now()
          from unnest(%(sym)s::text[], %(qty)s::numeric[], %(avg)s::numeric[]) as u(symbol, qty, avg)
          on conflict (account_id, symbol) do update set qty = excluded.qty,
            avg_entry_price = excluded.avg_entry_price,
            split_applied_through = excluded.split_applied_through, updated_at = now()
        )
        insert into public.broker_balances (account_id, cash, buying_power, equity, updated_at)
        values (%(id)s, %(cash)s, %(bp)s, %(eq)s, clock_timestamp())
        on conflict (account_id) do update set cash = excluded.cash,
          buying_power = excluded.buying_power, equity = excluded.equity, updated_at = clock_timestamp()
        returning updated_at
        """,
        {
            "id": account_id,
            "as_of": as_of,
            "sym": symbols,
            "qty": [exact(p.qty) for p in pos],
            "avg": [exact(p.avg_entry_price) for p in pos],
            "cash": exact(acct.cash),
            "bp": exact(acct.buying_power),
            "eq": exact(acct.equity),
        },
    )

    def stamp() -> datetime:
        row = cur.fetchone()
        assert row is not None  # noqa: S101 - RETURNING of an upsert always yields the row
        stamped: datetime = row[0]
        return stamped

    return stamp


def overview(s: Session) -> list[tuple[Any, ...]]:
    """(account, broker, cash, buying_power, equity, updated_at) for status, as the rows hold them:
    None where an account has no balance row, or a row from an older shape lacks a figure."""
    return s.fetchall(
        """
        select a.name, a.broker, b.cash::float8, b.buying_power::float8, b.equity::float8, b.updated_at
        from public.broker_accounts a left join public.broker_balances b on b.account_id = a.id
        order by a.name
        """
    )


def all_positions(s: Session) -> list[tuple[Any, ...]]:
    """(account, symbol, qty, avg_entry_price) of every readable position (`_HELD`), for status;
    avg_entry_price may be None (a table from an older shape)."""
    return s.fetchall(
        f"""
        select a.name, p.symbol, p.qty::float8, p.avg_entry_price::float8
        from public.broker_positions p join public.broker_accounts a on a.id = p.account_id
        where {_HELD} order by a.name, p.symbol
        """
    )
