"""Concurrency helpers for the engine's I/O (issue 17): one client per account, reads at once.

A broker request is a network round trip (tens of milliseconds) that holds no database lock of
its own, so the requests a minute needs that do not depend on each other go out together on
threads; the database work stays on the caller's thread and connection. Those threads are the
process's I/O pool (`launch`, `submit`), kept between invocations; `busy()` counts the calls
under way on it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, suppress
from typing import Any, Generic, TypeVar

from strategy_engine.brokers.base import Broker
from strategy_engine.core.models import BrokerAccount, RowId

A = TypeVar("A")
B = TypeVar("B")
C = TypeVar("C")
D = TypeVar("D")
R = TypeVar("R")
X = TypeVar("X")
# Requests in flight at once per call of `launch`: within requests' default pool of 10 connections
# per host, so every request reuses a kept-alive connection.
MAX_AT_ONCE = 10
# Threads of the process's I/O pool. Only leaf calls run on it (a request, a connection being
# opened: nothing that waits for another task of the pool), so a full pool queues, never
# deadlocks. Kept between invocations: a pool per call cost about 0.7 ms of interpreter time for
# four threads, and a tick of ten accounts started some hundred of them (issue 17).
IO_THREADS = 64
_pool: list[ThreadPoolExecutor] = []
_pool_lock = threading.Lock()
_running = [0]  # leaf calls under way: `busy()`


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


def _io() -> ThreadPoolExecutor:
    with _pool_lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="broker-io"))
        return _pool[0]


def _forget_pool() -> None:  # a forked child inherits the pool's object but none of its threads
    _pool.clear()
    _running[0] = 0


os.register_at_fork(after_in_child=_forget_pool)


def busy() -> int:
    """How many calls `launch` (or a gather) started are running now: 0 after an invocation
    that awaited its answers (no request outlives the tick)."""
    with _pool_lock:
        return _running[0]


def submit(fn: Callable[[], R]) -> Future[R]:
    """`fn` on the I/O pool, now; its future. For leaf calls only (one that waits for another
    task of the pool could wait forever when the pool is full)."""
    return launch(lambda call: call(), [fn]).futures[0]


class Launched(Generic[R]):
    """The calls `launch` started: call it for their results (waits for every one)."""

    def __init__(self, futures: list[Future[R]]) -> None:
        self.futures = futures

    def __call__(self) -> list[R]:
        """The results in order, once every call has ended; the first error (in order) raised then."""
        wait(self.futures)
        return [f.result() for f in self.futures]


def launch(fn: Callable[[X], R], items: Sequence[X]) -> Launched[R]:
    """`fn` over the items, started now on the I/O pool, at most MAX_AT_ONCE at a time (runners
    that take the next item as they finish one); the answer waits for every call to end and
    gives the results in order (the first error, in order, raised then). Call the answer: until
    then the calls run on while the caller does other work."""
    futures: list[Future[R]] = [Future() for _ in items]
    queue = iter(list(zip(items, futures, strict=True)))
    take = threading.Lock()

    def runner() -> None:
        while True:
            with take:
                nxt = next(queue, None)
            if nxt is None:
                return
            item, future = nxt
            if not future.set_running_or_notify_cancel():
                continue
            with _pool_lock:
                _running[0] += 1
            try:
                outcome: tuple[R] | BaseException = (fn(item),)
            except BaseException as exc:  # the caller's to raise, in order
                outcome = exc
            with _pool_lock:  # before the answer is set: whoever it wakes finds the call ended
                _running[0] -= 1
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome[0])

    pool = _io()
    for _ in range(min(len(items), MAX_AT_ONCE)):
        pool.submit(runner)
    return Launched(futures)


def _gather(*calls: Callable[[], object]) -> list[Any]:
    return launch(lambda call: call(), calls)()


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
