"""A cash account's figures (pure): what buying power and equity are when only cash and positions
are known.

The simulated broker keeps no margin: its buying power is its cash (never below 0) and its
equity its cash plus its positions at their entry prices. `brokers.simulated` computes its
account with this function alone, and `store.accounts` reads a balance row that has cash but no
buying power or equity (a table from an older shape, see there) with it too, so such a row reads
as the very figures the simulated broker would write for it.
"""

from __future__ import annotations

from collections.abc import Iterable

from strategy_engine.core.models import Account, Position


def cash_account(cash: float, positions: Iterable[Position]) -> Account:
    """Account(cash, buying_power=max(cash, 0), equity=cash + sum of qty x avg_entry_price), in
    dollars; no account number (not a broker's)."""
    equity = cash + sum(p.qty * p.avg_entry_price for p in positions)
    return Account(cash=cash, buying_power=max(cash, 0.0), equity=equity)
