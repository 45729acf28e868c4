"""A worker's thread pool for blocking work (disk, database).

Jobs go in through a bounded queue; ``submit`` says no when it is full (the
caller answers 503), so a slow disk or database never grows memory without
bound. Each result comes back to the reactor thread with
``call_soon_threadsafe`` (the reactor's eventfd), and the reactor thread writes
the response: a pool thread never touches a socket.

``busy()`` says how many threads are running a job (application code: a WSGI
app, an offloaded handler) right now, for ``/status``: each thread sets and
clears its own flag around the call (one writer per flag, so no lock, O(1) per
job); the reader adds up the flags, one per thread.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("prefork.worker")

Done = Callable[[Any, BaseException | None], None]


class ThreadPool:
    def __init__(self, call_soon_threadsafe: Callable[..., None], threads: int, queue_size: int,
                 name: str = "pool"):
        self._hand_back = call_soon_threadsafe
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._busy = [0] * threads  # per thread: 1 while it runs a job
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
        return self._queue.qsize()

    def busy(self) -> int:
        """Threads running a job now (read by the reactor thread for /status)."""
        return sum(self._busy)

    def submit(self, fn: Callable[[Any], Any], arg: Any, done: Done) -> bool:
        """Queue ``fn(arg)``; ``done(result, exc)`` runs later on the reactor
        thread. Returns False (and queues nothing) when the queue is full."""
        try:
            self._queue.put_nowait((fn, arg, done))
        except queue.Full:
            self.rejected += 1
            return False
        self.submitted += 1
        return True

    def _run(self, index: int) -> None:
        get = self._queue.get
        hand_back = self._hand_back
        busy = self._busy
        while True:
            job = get()
            if job is None:
                return
            fn, arg, done = job
            busy[index] = 1
            try:
                result, exc = fn(arg), None
            except BaseException as e:  # handed to the reactor, which answers 500
                result, exc = None, e
            finally:
                busy[index] = 0
            hand_back(done, result, exc)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Drop queued jobs, let running ones finish (up to ``timeout``)."""
        q = self._queue
        with q.mutex:
            q.queue.clear()
            q.queue.extend([None] * len(self._threads))  # one stop mark per thread
            q.not_empty.notify_all()
        for t in self._threads:
            t.join(timeout)
