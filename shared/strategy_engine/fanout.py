"""Strategies of different Alpaca accounts processed at once: one thread and one database
connection per account.

Within an account nothing changes: its strategies run one after another, each in its own
transaction that takes the account's row lock, so risk stays serialised per account and the
account's reads carry forward from one strategy to the next. Accounts share nothing a minute
writes (their own day rows, account rows, mirrors and orders), so their transactions run side by
side on separate connections, each with its own intent connection; exactly-once is the same
per-strategy claim as before. Simulated accounts stay on the caller's connection, one after
another: their work is the database's, which a second connection on the same small server does
not make faster, and the tick's statement counts stay those of one connection.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from strategy_engine import execution
from strategy_engine.core.models import StrategyRun
from strategy_engine.store import Session
from strategy_engine.store.session import sibling

P = TypeVar("P")
# Accounts processed at once: each holds two database connections (the minute's and the
# intents') for the length of its strategies.
MAX_ACCOUNTS_AT_ONCE = 10

Run = Callable[[Session, execution.Invocation, P], StrategyRun]


def run_all(
    s: Session,
    planned: Sequence[P | StrategyRun],
    run: Run[P],
    account: Callable[[P], tuple[Hashable, bool]],
    sending: Callable[[Session], execution.Invocation],
) -> list[StrategyRun]:
    """Every planned strategy's run, in `planned` order (a StrategyRun there is already one).

    `account(p)` is (account key, on a real broker); `sending(conn)` makes a group's shared
    state (its intent connection beside `conn`). Real-broker accounts, when there are two or
    more, run on threads with connections of their own; every other strategy runs here on `s`.
    All threads end before this returns; the first exception a strategy raised (in `planned`
    order: `run` catches a strategy's own failures, so only a refusal of the whole tick) is
    raised then.
    """
    groups: dict[Hashable, list[int]] = {}
    local: list[int] = []
    for i, p in enumerate(planned):
        if isinstance(p, StrategyRun):
            continue
        key, real = account(p)
        groups.setdefault(key, []).append(i) if real else local.append(i)
    if len(groups) < 2:
        local = sorted(local + [i for g in groups.values() for i in g])
        groups = {}
    out: dict[int, StrategyRun] = {}

    def group(indices: Sequence[int], conn: Session) -> None:
        shared = sending(conn)
        try:
            for i in indices:
                out[i] = run(conn, shared, planned[i])  # type: ignore[arg-type]
        finally:
            shared.intents.close()

    def own_connection(indices: Sequence[int]) -> None:
        with sibling(s, application_name="strategy-engine-account") as conn:
            group(indices, conn)

    futures: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=max(1, min(len(groups), MAX_ACCOUNTS_AT_ONCE))) as pool:
        futures = [pool.submit(own_connection, g) for g in groups.values()]
        try:
            group(local, s)
        finally:
            for f in futures:
                f.exception()  # wait for every account before raising anything
    for f in futures:
        f.result()
    return [p if isinstance(p, StrategyRun) else out[i] for i, p in enumerate(planned)]
