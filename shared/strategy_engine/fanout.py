"""The order an invocation's strategies run in, and on which connection: every Alpaca account's
strategies in one batch, then each simulated account's, all on the caller's connection.

The batch (`engine._run_batch`) is one transaction: each strategy staged in a savepoint of its
own (claim, snapshot, decide, intents committed, orders posted), its orders left in flight while
the next strategy is staged, then every answer recorded and one COMMIT. So the accounts' broker
I/O overlaps (their reads were sent as the tick began, every order travels while the next
strategy is decided) while their database work, a few milliseconds a strategy, runs one
strategy after another on one connection. Risk stays serialised per account (its row lock is
held to the COMMIT) and the accounts' reads carry forward from one strategy to the next.

Accounts are taken in ascending order of their id (as text), so two invocations lock the
accounts they share in the same order and never deadlock; within an account, strategies keep
`planned` order. An invocation holds two database connections whatever the number of accounts:
the minute's and the intents' (a connection per account would take a Supabase project's
connection slots ten at a time, and each costs TLS and authentication round trips to open).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

from strategy_engine import execution
from strategy_engine.concurrency import awaiting
from strategy_engine.core.models import StrategyRun
from strategy_engine.store import Session

P = TypeVar("P")

Run = Callable[[Session, execution.Invocation, list[P]], list[StrategyRun]]


def run_all(
    s: Session,
    planned: Sequence[P | StrategyRun],
    run: Run[P],
    account: Callable[[P], tuple[Hashable, bool]],
    sending: Callable[[Session], execution.Invocation],
) -> list[StrategyRun]:
    """Every planned strategy's run, in `planned` order (a StrategyRun there is already one).

    `account(p)` is (account key, on a real broker); `run(conn, shared, ps)` runs a batch of
    strategies and returns their runs in that order: first all the real-broker accounts'
    strategies (accounts by key as text, strategies in `planned` order within each), then each
    other account's. `sending(conn)` makes the invocation's shared state (its intent connection
    beside `s`). Every order's answer is awaited before this returns or raises: an exception
    (`run` catches a strategy's own failures, so only a refusal of the whole tick) leaves no
    request running.
    """
    accounts: dict[Hashable, list[int]] = {}
    real: set[Hashable] = set()
    for i, p in enumerate(planned):
        if not isinstance(p, StrategyRun):
            key, on_real = account(p)
            accounts.setdefault(key, []).append(i)
            real.update({key} if on_real else set())
    batch = [i for key in sorted(real, key=str) for i in accounts[key]]
    batches = ([batch] if batch else []) + [accounts[key] for key in accounts if key not in real]
    out: dict[int, StrategyRun] = {}
    shared = sending(s)
    if batch:
        shared.intents.open_ahead()  # an order's intent then never waits for a connection
    try:
        with awaiting(lambda: shared.in_flight):  # whatever failed, no POST outlives the tick
            for indices in batches:
                runs = run(s, shared, [planned[i] for i in indices])  # type: ignore[misc]
                out.update(zip(indices, runs, strict=True))
    finally:
        shared.intents.close()
    return [p if isinstance(p, StrategyRun) else out[i] for i, p in enumerate(planned)]
