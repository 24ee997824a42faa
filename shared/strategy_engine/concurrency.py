"""Concurrency helpers for the engine's broker I/O (issue 17): one client per account, reads at once.

A broker request is a network round trip (tens of milliseconds) that holds no database lock of
its own, so the requests a minute needs that do not depend on each other go out together on
threads; the database work stays on the caller's thread and connection.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from typing import Any, TypeVar

from strategy_engine.brokers.base import Broker
from strategy_engine.core.models import BrokerAccount, RowId

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
R = TypeVar("R")
X = TypeVar("X")
# Requests in flight at once per call of `each`: within requests' default pool of 10 connections
# per host, so every request reuses a kept-alive connection.
MAX_AT_ONCE = 10


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


def _gather(*calls: Callable[[], object]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=len(calls), thread_name_prefix="broker-read") as pool:
        futures = [pool.submit(call) for call in calls]
    return [f.result() for f in futures]


def gather2(a: Callable[[], A], b: Callable[[], B]) -> tuple[A, B]:
    """`gather4` of two calls."""
    ra, rb = _gather(a, b)
    return ra, rb


def gather4(
    a: Callable[[], A], b: Callable[[], B], c: Callable[[], C], d: Callable[[], D]
) -> tuple[A, B, C, D]:
    """The four calls at once; their results in order. Every call ends before this returns, and
    the first error (in argument order) is raised then, so nothing is left running."""
    ra, rb, rc, rd = _gather(a, b, c, d)
    return ra, rb, rc, rd


def each(fn: Callable[[X], R], items: Sequence[X]) -> list[R]:
    """`fn` over the items at once (at most MAX_AT_ONCE threads); the results in order. Every
    call ends before this returns; the first error (in order) is raised then. One item runs on
    the caller's thread."""
    if len(items) <= 1:
        return [fn(x) for x in items]
    return launch(fn, items)()


def launch(fn: Callable[[X], R], items: Sequence[X]) -> Callable[[], list[R]]:
    """`fn` over the items, started now on threads (at most MAX_AT_ONCE); the answer waits for
    every call to end and gives the results in order (the first error, in order, raised then).
    Call the answer: until then the calls run on while the caller does other work."""
    if not items:
        return list
    pool = ThreadPoolExecutor(max_workers=min(len(items), MAX_AT_ONCE), thread_name_prefix="broker-post")
    futures = [pool.submit(fn, x) for x in items]
    pool.shutdown(wait=False)  # the submitted calls still run; the threads end after them

    def results() -> list[R]:
        wait(futures)
        return [f.result() for f in futures]

    return results


def once(fn: Callable[[], R]) -> Callable[[], R]:
    """`fn`, called at most once: later calls give the same result (or raise the same error)."""
    done: list[R] = []
    failed: list[BaseException] = []
    lock = threading.Lock()

    def call() -> R:
        with lock:
            if not done and not failed:
                try:
                    done.append(fn())
                except BaseException as exc:
                    failed.append(exc)
            if failed:
                raise failed[0]
            return done[0]

    return call


@contextmanager
def awaiting(calls: Callable[[], Sequence[Callable[[], object]]]) -> Iterator[None]:
    """On the way out of the block, whatever happened in it, each of `calls()` is called (the
    answers of requests under way: no request outlives the block); their errors are not raised
    here (each is its caller's to report)."""
    try:
        yield
    finally:
        for call in calls():
            with suppress(Exception):
                call()
