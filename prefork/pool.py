"""A worker's thread pool for blocking work (disk, database).

Jobs go in through a bounded queue; ``submit`` says no when it is full (the
caller answers 503), so a slow disk or database never grows memory without
bound. Each result comes back to the reactor thread with
``call_soon_threadsafe`` (the reactor's eventfd), and the reactor thread writes
the response: a pool thread never touches a socket.

The queue is a deque and each thread sleeps on a lock of its own (held while
it sleeps, released by whoever wakes it): a submit appends the job and wakes
one idle thread, if any; a thread takes jobs until there are none, then puts
itself on the idle stack and sleeps. That costs one ``acquire`` and one
``release`` per wake-up, and none while a thread finds more work, where
``queue.Queue`` takes a ``Condition`` (several Python-level lock calls) on
every put and get. A thread going idle checks the queue again after it has
put itself on the idle stack, so a job submitted in between is never left
with every thread asleep.

When to wake: with the loop's ``call_soon`` (the worker gives it), a submit
does not wake a thread at once (it would only wait for the GIL the loop
holds, two context switches for nothing) but once the loop's round of
events is over (``_kick``), one thread for all the jobs of the round; while a
woken thread has not taken its job (``_searcher``) no other is woken. A
thread that takes a job and sees more queued wakes the next one, so jobs
that block (a database, a disk) still run side by side.

How the threads are scheduled (``sched_batch``; ``[server] threads_sched =
"batch"``, the default): each thread makes itself ``SCHED_BATCH``
(``become_batch``). A woken
batch thread does not preempt the thread running on its CPU (Linux gives
wake-up preemption to SCHED_NORMAL threads only); it runs when that thread
blocks or its time slice ends. So the thread the loop wakes at the end of its
round, or wakes by releasing the GIL on its way into ``epoll_wait``, no longer
takes the CPU from the loop at once only to find the GIL held and sleep again:
with wrk on a WSGI hello world and the worker on one CPU that was 0.21 context
switches per request, and is 0.05 as a batch thread. A batch thread has the
same share of the CPU; it is only not run ahead of the thread in front of it.

``busy()`` says how many threads are running a job (application code: a WSGI
app, an offloaded handler) right now, for ``/status``: each thread sets and
clears its own flag around the call (one writer per flag, so no lock, O(1) per
job); the reader adds up the flags, one per thread.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from typing import Any, Callable

log = logging.getLogger("prefork.worker")

Done = Callable[[Any, BaseException | None], None]


def become_batch() -> bool:
    """Make the calling thread SCHED_BATCH (Linux; pid 0 is this thread):
    False, with a line in the log, where the system does not have it."""
    try:
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        log.info("pool thread %s stays SCHED_NORMAL: %s", threading.current_thread().name, exc)
        return False
    return True


class ThreadPool:
    def __init__(self, call_soon_threadsafe: Callable[..., None], threads: int, queue_size: int,
                 name: str = "pool", call_soon: Callable[..., None] | None = None, sched_batch: bool = False):
        self._hand_back = call_soon_threadsafe
        # the loop's call_soon: a submit wakes a thread when the loop has
        # finished its round of events (_kick), not at once, where the woken
        # thread would only wait for the GIL the loop still holds
        self._call_soon = call_soon
        self._kick_due = False
        self._jobs: deque = deque()
        self._limit = max(queue_size, 1)
        self._idle: list = []  # the sleeping threads' locks (each held: release() wakes its thread)
        self._stopping = False
        # the lock of a thread woken that has not yet taken a job: while there
        # is one, a submit wakes no other (it will take the job)
        self._searcher: Any = None
        self._busy = [0] * threads  # per thread: 1 while it runs a job
        self._batch = sched_batch  # each thread makes itself SCHED_BATCH (_run)
        self._threads = [threading.Thread(target=self._run, args=(i,), name=f"{name}-{i}", daemon=True)
                         for i in range(threads)]
        self.submitted = 0
        self.rejected = 0
        for t in self._threads:
            t.start()

    @property
    def size(self) -> int:
        return len(self._threads)

    def pending(self) -> int:
        return len(self._jobs)

    def busy(self) -> int:
        """Threads running a job now (read by the reactor thread for /status)."""
        return sum(self._busy)

    def submit(self, fn: Callable[[Any], Any], arg: Any, done: Done | None) -> bool:
        """Queue ``fn(arg)``; ``done(result, exc)`` runs later on the reactor
        thread (None: nothing is handed back, for a job that hands back its
        own results, as a WSGI call does). Returns False (and queues nothing)
        when the queue is full."""
        jobs = self._jobs
        if len(jobs) >= self._limit or self._stopping:
            self.rejected += 1
            return False
        jobs.append((fn, arg, done))
        self.submitted += 1
        if self._searcher is None and not self._kick_due:
            if self._call_soon is None:
                self._wake_one()
            else:
                self._kick_due = True
                self._call_soon(self._kick)
        return True

    def _kick(self) -> None:
        self._kick_due = False
        if self._jobs and self._searcher is None:
            self._wake_one()

    def _wake_one(self) -> None:
        try:
            wake = self._idle.pop()
        except IndexError:  # none idle (or another thread took the last one)
            return
        self._searcher = wake
        wake.release()

    def _sleep(self, wake) -> None:
        """No job: wait on ``wake`` (held) until a submit (or shutdown) releases it."""
        idle = self._idle
        idle.append(wake)
        if self._jobs or self._stopping:  # came while this thread was going idle
            try:
                idle.remove(wake)
                return  # nobody will release it: go and take the job
            except ValueError:
                pass  # a submitter popped it and releases it: take that release
        wake.acquire()
        if self._searcher is wake:
            self._searcher = None

    def _run(self, index: int) -> None:
        jobs = self._jobs
        hand_back = self._hand_back
        busy = self._busy
        wake = threading.Lock()
        wake.acquire()
        if self._batch:
            become_batch()
        while True:
            try:
                job = jobs.popleft()
            except IndexError:
                if self._stopping:
                    return
                self._sleep(wake)
                continue
            fn, arg, done = job
            if jobs and self._searcher is None:
                self._wake_one()
            busy[index] = 1
            try:
                result, exc = fn(arg), None
            except BaseException as e:  # handed to the reactor, which answers 500
                result, exc = None, e
            finally:
                busy[index] = 0
            if done is not None:
                hand_back(done, result, exc)
            elif exc is not None:  # a job that hands back its own results should catch its errors
                log.error("a pool job failed", exc_info=exc)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Drop queued jobs, let running ones finish (up to ``timeout``)."""
        self._stopping = True
        self._jobs.clear()
        idle = self._idle
        while idle:
            try:
                idle.pop().release()
            except IndexError:
                break
        for t in self._threads:
            t.join(timeout)
