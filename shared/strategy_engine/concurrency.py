"""Concurrency helpers for the engine's broker I/O (issue 17): one client per account, reads at once.

A broker request is a network round trip (tens of milliseconds) that holds no database lock of
its own, so the requests a minute needs that do not depend on each other go out together on
threads; the database work stays on the caller's thread and connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from strategy_engine.brokers.base import Broker
from strategy_engine.core.models import BrokerAccount, RowId

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")


def one_per_account(make: Callable[[BrokerAccount], Broker]) -> Callable[[BrokerAccount], Broker]:
    """`make`, called once per account id: its client (and connection pool) serves the invocation.

    Thread-safe; the client is built on first use, so an account the invocation never reaches
    costs nothing. An error building it is not cached (the next strategy tries again).
    """
    built: dict[RowId, Broker] = {}
    lock = threading.Lock()

    def get(account: BrokerAccount) -> Broker:
        with lock:
            if account.id not in built:
                built[account.id] = make(account)
            return built[account.id]

    return get


def gather3(a: Callable[[], A], b: Callable[[], B], c: Callable[[], C]) -> tuple[A, B, C]:
    """The three calls at once; their results in order. Every call ends before this returns, and
    the first error (in argument order) is raised then, so nothing is left running."""
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="broker-read") as pool:
        fa, fb, fc = pool.submit(a), pool.submit(b), pool.submit(c)
    return fa.result(), fb.result(), fc.result()
