"""Strategies of different Alpaca accounts processed at once: one thread and one database
connection per account.

Within an account its strategies are decided one after another (`engine._run_account`) under
the account's row lock, so risk stays serialised per account and the account's reads carry
forward from one strategy to the next. Accounts share nothing a minute writes (their own day
rows, account rows, mirrors and orders), so their transactions run side by side on separate
connections; their intents commit on one side connection for the whole invocation
(`IntentLog`, thread-safe), as each of them is a short statement and a new connection costs the
database more than the statement. Exactly-once is the same per-strategy claim as before.
Simulated accounts stay on the caller's connection, one after another: their work is the
database's, which a second connection on the same small server does not make faster, and the
tick's statement counts stay those of one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from strategy_engine import execution
from strategy_engine.concurrency import awaiting
from strategy_engine.core.models import StrategyRun
from strategy_engine.store import Session
from strategy_engine.store.intents import IntentLog
from strategy_engine.store.session import sibling

P = TypeVar("P")
# Accounts processed at once: each holds a database connection for the length of its
# strategies (and all share one more, the intents').
MAX_ACCOUNTS_AT_ONCE = 10

Run = Callable[[Session, execution.Invocation, list[P]], list[StrategyRun]]


def run_all(
    s: Session,
    planned: Sequence[P | StrategyRun],
    run: Run[P],
    account: Callable[[P], tuple[Hashable, bool]],
    sending: Callable[[IntentLog], execution.Invocation],
) -> list[StrategyRun]:
    """Every planned strategy's run, in `planned` order (a StrategyRun there is already one).

    `account(p)` is (account key, on a real broker); `run(conn, shared, ps)` runs the strategies
    of one account (in `planned` order) and returns their runs in that order. Real-broker accounts,
    when there are two or more, run on threads with connections of their own; every other
    account runs here on `s`, one after another. All threads end before this returns; the first
    exception an account raised (in `planned` order: `run` catches a strategy's own failures,
    so only a refusal of the whole tick) is raised then.

    `sending(log)` makes a group's shared state around the invocation's intent log, one side
    connection of `s`'s for every group, opened ahead when any account is on a real broker and
    closed once every group has ended.
    """
    accounts: dict[Hashable, list[int]] = {}
    real: set[Hashable] = set()
    for i, p in enumerate(planned):
        if not isinstance(p, StrategyRun):
            key, on_real = account(p)
            accounts.setdefault(key, []).append(i)
            real.update({key} if on_real else set())
    threaded = [key for key in accounts if key in real] if len(real) >= 2 else []
    local = [key for key in accounts if key not in threaded]
    out: dict[int, StrategyRun] = {}

    intents = IntentLog(s)

    def group(keys: Sequence[Hashable], conn: Session) -> None:
        shared = sending(intents)
        with awaiting(lambda: shared.in_flight):  # whatever failed, no POST outlives the tick
            for key in keys:
                indices = accounts[key]
                runs = run(conn, shared, [planned[i] for i in indices])  # type: ignore[misc]
                out.update(zip(indices, runs, strict=True))

    def own_connection(key: Hashable) -> None:
        with sibling(s, application_name="strategy-engine-account") as conn:
            group([key], conn)

    futures: list[Future[None]] = []
    if real:
        intents.open_ahead()  # an order's intent then never waits for a connection
    try:
        with ThreadPoolExecutor(max_workers=max(1, min(len(threaded), MAX_ACCOUNTS_AT_ONCE))) as pool:
            futures = [pool.submit(own_connection, key) for key in threaded]
            try:
                group(local, s)
            finally:
                for f in futures:
                    f.exception()  # wait for every account before raising anything
    finally:
        intents.close()
    for f in futures:
        f.result()
    return [p if isinstance(p, StrategyRun) else out[i] for i, p in enumerate(planned)]
