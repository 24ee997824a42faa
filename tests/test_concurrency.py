"""The I/O pool (`concurrency.launch`, `gather2`/`gather4`, `submit`, `busy`): results in order,
the first error in order once every call has ended, at most MAX_AT_ONCE calls of one launch at
once, threads kept between calls, and a forked child that gets a pool of its own."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from concurrent.futures import CancelledError

import pytest

from strategy_engine import concurrency

WAIT = 30.0  # seconds an event may take before the test gives up (never a measured duration)


def io_threads() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("broker-io") and t.ident is not None}


def test_results_come_in_the_order_of_the_items_whatever_order_the_calls_end_in() -> None:
    first_may_end = threading.Event()
    ended: list[int] = []

    def call(n: int) -> int:
        if n == 0:
            assert first_may_end.wait(WAIT)
        ended.append(n)
        if n == 2:
            first_may_end.set()  # the last item ends before the first
        return n * 10

    assert concurrency.launch(call, [0, 1, 2])() == [0, 10, 20]
    assert ended[-1] == 0


def test_the_first_error_in_item_order_is_raised_once_every_call_has_ended() -> None:
    later_error_raised = threading.Event()
    slow_done = threading.Event()

    def call(n: int) -> int:
        if n == 0:  # the first error, raised after the other error
            assert later_error_raised.wait(WAIT)
            raise ValueError("zero")
        if n == 1:
            later_error_raised.set()
            raise KeyError("one")
        assert later_error_raised.wait(WAIT)
        slow_done.set()
        return n

    answer = concurrency.launch(call, [0, 1, 2])
    with pytest.raises(ValueError, match="zero"):
        answer()
    assert slow_done.is_set()  # raised only after the third call had ended
    assert concurrency.busy() == 0


def test_one_launch_runs_at_most_max_at_once_calls_and_busy_counts_them() -> None:
    n_items = concurrency.MAX_AT_ONCE * 2 + 5
    release = threading.Event()
    lock = threading.Lock()
    running, most, started = [0], [0], threading.Semaphore(0)

    def call(n: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        started.release()
        assert release.wait(WAIT)
        with lock:
            running[0] -= 1
        return n

    answer = concurrency.launch(call, list(range(n_items)))
    for _ in range(concurrency.MAX_AT_ONCE):
        assert started.acquire(timeout=WAIT)
    assert not started.acquire(timeout=0.2)  # an eleventh call has not started: all runners wait
    assert concurrency.busy() == concurrency.MAX_AT_ONCE
    release.set()
    assert answer() == list(range(n_items))
    assert most[0] == concurrency.MAX_AT_ONCE
    assert concurrency.busy() == 0


def test_the_pool_runs_io_threads_calls_at_once_across_launches_and_queues_the_next() -> None:
    """Launches made together (the accounts of a tick) share IO_THREADS threads: that many calls
    run at once, whatever the machine's core count; the next one waits for a thread."""
    release = threading.Event()
    started = threading.Semaphore(0)

    def call(n: int) -> int:
        started.release()
        assert release.wait(WAIT)
        return n

    sizes = [concurrency.MAX_AT_ONCE] * (concurrency.IO_THREADS // concurrency.MAX_AT_ONCE)
    sizes.append(concurrency.IO_THREADS % concurrency.MAX_AT_ONCE)
    answers = [concurrency.launch(call, list(range(size))) for size in sizes]
    try:
        for _ in range(concurrency.IO_THREADS):
            assert started.acquire(timeout=WAIT)
        extra = concurrency.submit(lambda: call(-1))
        assert not started.acquire(timeout=0.2)  # the pool is full: the extra call waits its turn
        assert concurrency.busy() == concurrency.IO_THREADS
    finally:
        release.set()  # a failed check leaves no call waiting
    assert [answer() for answer in answers] == [list(range(size)) for size in sizes]
    assert extra.result(WAIT) == -1
    assert concurrency.busy() == 0


def test_a_cancelled_call_is_skipped_and_its_runner_goes_on_with_the_next_item() -> None:
    """A future cancelled before its call started (`Launched.futures`, `submit`'s future) is not
    called; the runner that meets it takes the next item, so the items after it still run."""
    n = concurrency.MAX_AT_ONCE
    release = threading.Event()
    started = threading.Semaphore(0)
    ran: list[int] = []

    def call(i: int) -> int:
        if i < n:
            started.release()
            assert release.wait(WAIT)
        ran.append(i)
        return i * 10

    answer = concurrency.launch(call, list(range(2 * n + 1)))
    for _ in range(n):
        assert started.acquire(timeout=WAIT)  # every runner holds a call: the rest wait
    assert all(f.cancel() for f in answer.futures[n : 2 * n])  # as many as there are runners
    release.set()
    assert answer.futures[2 * n].result(WAIT) == 2 * n * 10
    with pytest.raises(CancelledError):  # the first cancelled one, in item order
        answer()
    assert sorted(ran) == [*range(n), 2 * n]
    assert concurrency.busy() == 0


def test_no_items_is_an_empty_answer() -> None:
    assert concurrency.launch(lambda n: n, [])() == []


def test_the_pools_threads_serve_the_next_calls_instead_of_new_ones() -> None:
    concurrency.gather4(lambda: 1, lambda: 2, lambda: 3, lambda: 4)  # the pool warmed
    before = io_threads()
    assert len(before) >= 4
    for _ in range(20):
        assert concurrency.gather4(lambda: 1, lambda: "b", lambda: 3.0, lambda: None) == (1, "b", 3.0, None)
        assert concurrency.gather2(lambda: "x", lambda: "y") == ("x", "y")
    assert io_threads() == before  # not one thread started (a pool per call started 120)


def test_gather_raises_the_first_error_in_argument_order() -> None:
    def boom(msg: str) -> Callable[[], int]:
        def call() -> int:
            raise RuntimeError(msg)

        return call

    with pytest.raises(RuntimeError, match="second"):
        concurrency.gather4(lambda: 1, boom("second"), lambda: 3, boom("fourth"))
    with pytest.raises(RuntimeError, match="first"):
        concurrency.gather2(boom("first"), boom("other"))


def test_submit_runs_one_call_on_the_pool() -> None:
    here = threading.get_ident()
    future = concurrency.submit(threading.get_ident)
    assert future.result(WAIT) != here
    assert future.result() in io_threads()


def _child(out: multiprocessing.Queue[object]) -> None:
    busy_at_start = concurrency.busy()
    out.put((busy_at_start, concurrency.launch(lambda n: n + 1, [1, 2, 3])(), concurrency.busy()))


def test_a_forked_child_gets_a_pool_of_its_own() -> None:
    """A child forked while a call of the parent's pool runs inherits the pool object but none of
    its threads, nor that call: its launch must not wait forever on workers that do not exist in
    it, and its `busy()` counts only its own calls."""
    running, release = threading.Event(), threading.Event()

    def parents_call() -> int:
        running.set()
        assert release.wait(WAIT)
        return 1

    parents = concurrency.submit(parents_call)
    assert running.wait(WAIT)
    assert concurrency.busy() == 1
    ctx = multiprocessing.get_context("fork")
    out: multiprocessing.Queue[object] = ctx.Queue()
    child = ctx.Process(target=_child, args=(out,))
    try:
        child.start()
        child.join(WAIT)
    finally:
        release.set()
    assert child.exitcode == 0
    assert out.get(timeout=WAIT) == (0, [2, 3, 4], 0)
    assert parents.result(WAIT) == 1


def test_once_calls_at_most_once_and_gives_every_caller_the_same_result_or_error() -> None:
    calls: list[str] = []

    def fine() -> list[int]:
        calls.append("fine")
        return [1, 2]

    def broken() -> int:
        calls.append("broken")
        raise LookupError("the broker's answer")

    ok, bad = concurrency.once(fine), concurrency.once(broken)
    first = ok()
    assert first == [1, 2] and ok() is first
    for _ in range(2):
        with pytest.raises(LookupError, match="the broker's answer"):
            bad()
    assert calls == ["fine", "broken"]
