"""Broker accounts and their mirrored positions and balances.

For an Alpaca account these tables mirror the broker (the broker is the truth; dashboards read
the mirror). For a simulated account they *are* the truth. Either way one function writes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

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


def positions(s: Session, account_id: RowId) -> list[Position]:
    rows = s.fetchall(
        "select symbol, qty::float8, coalesce(avg_entry_price, 0)::float8 from public.broker_positions"
        " where account_id = %s and qty <> 0 order by symbol",
        (account_id,),
    )
    return [Position(r[0], r[1], r[2]) for r in rows]


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


def save_mirror(s: Session, account_id: RowId, acct: Account, pos: Sequence[Position]) -> None:
    """Replace the account's positions and balance in three statements, whatever their number."""
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
        """
        insert into public.broker_positions (account_id, symbol, qty, avg_entry_price, updated_at)
        select %s, u.symbol, u.qty, u.avg, now()
        from unnest(%s::text[], %s::numeric[], %s::numeric[]) as u(symbol, qty, avg)
        on conflict (account_id, symbol) do update set qty = excluded.qty,
          avg_entry_price = excluded.avg_entry_price, updated_at = now()
        """,
        (account_id, symbols, [exact(p.qty) for p in pos], [exact(p.avg_entry_price) for p in pos]),
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
