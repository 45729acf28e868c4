"""Handlers over the wire: the thread pool, user handlers, static files, status.

This file: the in-process tests; tests/e2e/test_apps_e2e.py has those with
server processes, subprocesses and sockets."""

import os
import threading

import pytest

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


def test_pool_hands_nothing_back_for_a_job_without_done(caplog):
    """A job that hands back its own results (a WSGI call) is submitted with
    done=None: the loop is not woken for a no-op; a failure is logged."""
    handed = []
    pool = ThreadPool(lambda fn, *a: handed.append(fn), threads=1, queue_size=4)
    ran = threading.Event()
    try:
        assert pool.submit(lambda _: ran.set(), None, None)
        assert pool.submit(lambda _: 1 / 0, None, None)
        wait_until(lambda: ran.is_set() and pool.pending() == 0 and pool.busy() == 0, what="both jobs run")
        wait_until(lambda: "a pool job failed" in caplog.text, what="the failure logged")
        assert handed == []
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


def test_pool_wakes_a_thread_when_the_loop_has_finished_its_round():
    """With the loop's call_soon, a submit only queues: one wake-up (the
    kick) is scheduled for the end of the loop's round, however many jobs
    came in it, so no thread is woken to wait for the GIL the loop holds."""
    soon = []
    got = []
    pool = ThreadPool(lambda fn, *a: fn(*a), threads=2, queue_size=8, call_soon=lambda fn, *a: soon.append(fn))
    try:
        wait_until(lambda: len(pool._idle) == 2, what="both threads asleep")
        for i in range(3):
            assert pool.submit(lambda x: x, i, lambda r, e: got.append(r))
        assert len(soon) == 1 and pool.pending() == 3  # nobody woken yet
        soon.pop()()  # the loop's round ends: the kick
        wait_until(lambda: len(got) == 3, what="the three jobs done")
        assert sorted(got) == [0, 1, 2]
        wait_until(lambda: len(pool._idle) == 2, what="both threads asleep again")
        assert pool.submit(lambda x: x, 3, lambda r, e: got.append(r))
        assert len(soon) == 1  # a new round, a new kick
        soon.pop()()
        wait_until(lambda: len(got) == 4, what="the fourth job done")
    finally:
        pool.shutdown()


def test_pool_never_leaves_a_job_with_every_thread_asleep():
    """Many small jobs from a submitter racing threads that go idle: each is
    run (a thread going idle looks at the queue again once it is on the idle
    stack), and a blocked job does not hold up the others."""
    got = []
    gate = threading.Event()
    pool = ThreadPool(lambda fn, *a: fn(*a), threads=3, queue_size=100000)
    try:
        assert pool.submit(lambda _: gate.wait(5), None, lambda r, e: None)  # holds one thread
        for i in range(20000):
            while not pool.submit(lambda x: x, i, lambda r, e: got.append(r)):
                pass
        wait_until(lambda: len(got) == 20000, what="every job run while one thread is blocked")
        assert sorted(got) == list(range(20000))
    finally:
        gate.set()
        pool.shutdown()


@pytest.mark.parametrize("batch, policy", [(True, os.SCHED_BATCH), (False, os.SCHED_OTHER)])
def test_pool_threads_make_themselves_sched_batch(batch, policy):
    """With sched_batch each thread is SCHED_BATCH (a job sees it on its own
    thread); without, the threads keep the policy they were started with."""
    got = []
    done = threading.Event()
    pool = ThreadPool(lambda fn, *a: fn(*a), threads=2, queue_size=4, sched_batch=batch)
    try:
        for _ in range(2):
            assert pool.submit(lambda _: os.sched_getscheduler(0), None, lambda r, e: (got.append(r), len(got) == 2
                                                                                        and done.set()))
        assert done.wait(5)
        assert got == [policy, policy]
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the caller's thread is left alone
    finally:
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
