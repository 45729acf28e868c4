"""Handlers over the wire: the thread pool, user handlers, static files, status.

This file: the in-process tests; tests/e2e/test_apps_e2e.py has those with
server processes, subprocesses and sockets."""

import threading

from conftest import wait_until
from prefork.apps.static import _parse_range
from prefork.pool import ThreadPool


def test_pool_unit_full_queue_and_results():
    results = []
    done = threading.Event()
    gate = threading.Event()
    pool = ThreadPool(lambda fn, *a: fn(*a), threads=1, queue_size=1)
    try:
        assert pool.submit(lambda _: gate.wait(5), None, lambda r, e: results.append(("first", r, e)))
        wait_until(lambda: pool.pending() == 0, what="the first job taken")
        assert pool.submit(lambda x: x * 2, 21, lambda r, e: (results.append(("second", r, e)), done.set()))
        assert not pool.submit(lambda x: x, 0, lambda r, e: None)  # queue full
        assert pool.rejected == 1
        gate.set()
        assert done.wait(5)
        assert results == [("first", True, None), ("second", 42, None)]
        boom = []
        ev = threading.Event()
        pool.submit(lambda _: 1 / 0, None, lambda r, e: (boom.append(e), ev.set()))
        assert ev.wait(5) and isinstance(boom[0], ZeroDivisionError)
    finally:
        pool.shutdown()


def test_pool_busy_counts_threads_running_jobs():
    """busy() is the threads inside a job: up while jobs run (queued ones do
    not count), down when they return or raise."""
    pool = ThreadPool(lambda fn, *a: fn(*a), threads=3, queue_size=4)
    gate = threading.Event()
    finished = []
    try:
        assert pool.busy() == 0
        for _ in range(2):
            assert pool.submit(lambda _: gate.wait(5), None, lambda r, e: finished.append(e))
        wait_until(lambda: pool.busy() == 2, what="two threads busy")
        assert pool.submit(lambda _: (gate.wait(5), 1 / 0), None, lambda r, e: finished.append(e))
        assert pool.submit(lambda _: None, None, lambda r, e: finished.append(e))  # queued: no thread free
        wait_until(lambda: pool.busy() == 3, what="three threads busy")
        assert pool.pending() == 1 and pool.busy() == 3
        gate.set()
        wait_until(lambda: len(finished) == 4, what="every job done")
        assert pool.busy() == 0
        assert sum(isinstance(e, ZeroDivisionError) for e in finished) == 1
    finally:
        gate.set()
        pool.shutdown()


def test_parse_range_unit():
    assert _parse_range(b"bytes=0-0", 10) == (0, 0)
    assert _parse_range(b"bytes=5-", 10) == (5, 9)
    assert _parse_range(b"bytes=-4", 10) == (6, 9)
    assert _parse_range(b"bytes=-40", 10) == (0, 9)
    assert _parse_range(b"bytes=8-100", 10) == (8, 9)
    assert _parse_range(b"bytes=10-", 10) == "unsatisfiable"
    assert _parse_range(b"bytes=-0", 10) == "unsatisfiable"
    assert _parse_range(b"bytes=0-1,3-4", 10) is None  # several ranges: served whole
    assert _parse_range(b"items=0-1", 10) is None
    assert _parse_range(b"bytes=x-1", 10) is None
    assert _parse_range(b"bytes=5-2", 10) is None
    for invalid in (b"bytes=--5", b"bytes=-+5", b"bytes=+5-", b"bytes=1_0-", b"bytes=1-1_0", b"bytes= 5-",
                    b"bytes=5- 9", b"bytes=-", b"bytes=5", b"bytes=\xd9\xa1-", b"bytes=-5-"):
        assert _parse_range(invalid, 10) is None, invalid
    assert _parse_range(b"BYTES=-0", 10) == "unsatisfiable"  # the unit is case-insensitive
    assert _parse_range(b"bytes=0-" + b"9" * 5000, 10) is None  # past int()'s digit limit: ignored
