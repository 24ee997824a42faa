"""Broker accounts and their mirrored positions and balances.

For an Alpaca account these tables mirror the broker (the broker is the truth; dashboards read
the mirror). For a simulated account they *are* the truth. Either way one function writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import psycopg

from strategy_engine.core.data_quality import split_position
from strategy_engine.core.errors import AccountConflict, NotFound
from strategy_engine.core.models import Account, BrokerAccount, Position, RowId
from strategy_engine.store.session import Session, exact, row_id


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


# The New York date of now: what "as of" means for a caller that does not name a minute.
_TODAY_NY = "(now() at time zone 'America/New_York')::date"


def positions(s: Session, account_id: RowId, as_of: date | None = None) -> list[Position]:
    """The account's positions as of New York date `as_of` (default today), with the splits of
    `corporate_actions` that took effect since they were saved (ex date after the row's
    `split_applied_through`, up to `as_of`) applied in ex-date order by `split_position`. One
    statement; `save_mirror` with the same `as_of` records them as applied."""
    rows = s.fetchall(
        f"""
        select p.symbol, p.qty::float8, coalesce(p.avg_entry_price, 0)::float8,
          (select array_agg(a.split_ratio::float8 order by a.ex_date) from public.corporate_actions a
           where a.symbol = p.symbol and a.ex_date > p.split_applied_through
             and a.ex_date <= coalesce(%s::date, {_TODAY_NY}))
        from public.broker_positions p
        where p.account_id = %s and p.qty <> 0 order by p.symbol
        """,
        (as_of, account_id),
    )
    out = []
    for symbol, qty, avg, ratios in rows:
        p = Position(symbol, qty, avg)
        for r in ratios or ():
            p = split_position(p, r)
        out.append(p)
    return out


def lock_account(s: Session, account_id: RowId) -> Account | None:
    """Lock the account's own row until commit and read its balance (None before the first one).

    The lock is on `broker_accounts`, a row that exists as long as the account does, so the
    strategies sharing an account serialise from their very first minute (a `broker_balances`
    row does not exist until the first mirror is written). Under the transaction's
    `lock_timeout` a worker that waits too long raises `Busy`.
    """
    if s.fetchone("select 1 from public.broker_accounts where id = %s for update", (account_id,)) is None:
        raise NotFound(f"account {account_id} no longer exists")
    # A second statement, so the balance is read after the lock is granted: in READ COMMITTED a
    # statement that waited for a lock still reads the other tables as of its own start, which
    # would hand this strategy the balance from before the previous holder's fills.
    row = s.fetchone(
        "select cash::float8, buying_power::float8, equity::float8 from public.broker_balances"
        " where account_id = %s",
        (account_id,),
    )
    return None if row is None else Account(row[0], row[1], row[2])


def save_mirror(
    s: Session, account_id: RowId, acct: Account, pos: Sequence[Position], as_of: date | None = None
) -> None:
    """Replace the account's positions and balance in three statements, whatever their number.

    The positions are as of New York date `as_of` (default today): every split up to it is in
    them (`positions` applied it, or the broker did), so `split_applied_through` becomes `as_of`.
    """
    s.execute(
        """
        insert into public.broker_balances (account_id, cash, buying_power, equity, updated_at)
        values (%s, %s, %s, %s, now())
        on conflict (account_id) do update set cash = excluded.cash,
          buying_power = excluded.buying_power, equity = excluded.equity, updated_at = now()
        """,
        (account_id, exact(acct.cash), exact(acct.buying_power), exact(acct.equity)),
    )
    symbols = [p.symbol for p in pos]
    s.execute(
        "delete from public.broker_positions where account_id = %s and not (symbol = any(%s))",
        (account_id, symbols),
    )
    s.execute(
        f"""
        insert into public.broker_positions
          (account_id, symbol, qty, avg_entry_price, split_applied_through, updated_at)
        select %s, u.symbol, u.qty, u.avg, coalesce(%s::date, {_TODAY_NY}), now()
        from unnest(%s::text[], %s::numeric[], %s::numeric[]) as u(symbol, qty, avg)
        on conflict (account_id, symbol) do update set qty = excluded.qty,
          avg_entry_price = excluded.avg_entry_price,
          split_applied_through = excluded.split_applied_through, updated_at = now()
        """,
        (account_id, as_of, symbols, [exact(p.qty) for p in pos], [exact(p.avg_entry_price) for p in pos]),
    )


def overview(s: Session) -> list[tuple[Any, ...]]:
    """(account, broker, cash, buying_power, equity, updated_at) for status."""
    return s.fetchall(
        """
        select a.name, a.broker, b.cash::float8, b.buying_power::float8, b.equity::float8, b.updated_at
        from public.broker_accounts a left join public.broker_balances b on b.account_id = a.id
        order by a.name
        """
    )


def all_positions(s: Session) -> list[tuple[Any, ...]]:
    return s.fetchall(
        """
        select a.name, p.symbol, p.qty::float8, p.avg_entry_price::float8
        from public.broker_positions p join public.broker_accounts a on a.id = p.account_id
        where p.qty <> 0 order by a.name, p.symbol
        """
    )
