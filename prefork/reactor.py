"""The native reactor: one per worker, on select.epoll.

Modelled on Redis ``ae.c``/``ae_epoll.c``:

* the reactor owns an event table indexed by fd -- parallel lists holding the
  registered mask, the read callback, the write callback and the callback's
  data -- sized from the fd budget the caller gives (``worker_connections`` plus
  a reserve), growing only if the kernel hands out a larger fd;
* the backend is four small methods (add, modify, delete, poll); whether a
  registration is an ADD or a MOD is derived from the table;
* EPOLLERR/EPOLLHUP dispatch as both readable and writable, and the table entry
  is re-checked before each callback, because the callback before it (even for
  the same fd) may have closed it.

Timers live in a heap on ``time.monotonic()`` with lazy cancellation (as
CPython's asyncio and trio do); the poll timeout is the time to the next timer.
Signals arrive through ``signal.set_wakeup_fd``: the Python-level handler does
nothing, the loop reads the signal numbers from the wakeup socket and runs the
registered callbacks. Other threads hand work back with
``call_soon_threadsafe`` through an eventfd, drained until empty.

Callbacks are called as ``callback(data)``: with the connection object as
``data`` a plain function (``Connection.on_readable``) is enough, and no bound
method is kept per fd.
"""

from __future__ import annotations

import errno
import heapq
import logging
import os
import select
import signal
import socket
import time
from collections import deque
from typing import Any, Callable

READABLE = 1
WRITABLE = 2

_EV_READ = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP | select.EPOLLRDHUP
_EV_WRITE = select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP

log = logging.getLogger("prefork.reactor")


class EpollBackend:
    """The thin layer over epoll: add, modify, delete, poll."""

    __slots__ = ("_ep",)

    def __init__(self, sizehint: int):
        self._ep = select.epoll(sizehint)

    @staticmethod
    def _events(mask: int) -> int:
        ev = 0
        if mask & READABLE:
            ev |= select.EPOLLIN
        if mask & WRITABLE:
            ev |= select.EPOLLOUT
        return ev

    def add(self, fd: int, mask: int, exclusive: bool = False) -> None:
        ev = self._events(mask)
        if exclusive:  # a shared listener: one event wakes one of the processes polling it
            ev |= select.EPOLLEXCLUSIVE
        self._ep.register(fd, ev)

    def modify(self, fd: int, mask: int) -> None:
        self._ep.modify(fd, self._events(mask))

    def delete(self, fd: int) -> None:
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            # already closed (EBADF) or never registered (ENOENT): nothing to undo
            pass

    def poll(self, timeout: float, maxevents: int) -> list[tuple[int, int]]:
        return self._ep.poll(timeout, maxevents)

    def fileno(self) -> int:
        return self._ep.fileno()

    def close(self) -> None:
        self._ep.close()


# A timer is its own heap entry: the list [when, seq, callback, arg]. Lists
# compare in C, element by element, so the heap orders entries by (when, seq)
# and never looks further (seq is unique). Cancelling clears the callback and
# the entry is dropped lazily when it reaches the top. One list of four (88
# bytes) is all a pending timer costs: a million deadlines stay cheap.
WHEN, SEQ, CALLBACK, ARG = range(4)
Timer = list  # the type call_at() returns: read timer[WHEN], cancel with Reactor.cancel(timer)


def _record_signal(signum: int, frame: Any) -> None:
    """Python-level handler: does nothing. The C-level handler has already
    written the signal number to the wakeup fd; the loop acts on it."""


class Reactor:
    """An event loop over an fd-indexed event table, timers and wakeups."""

    def __init__(self, setsize: int = 1024, maxevents: int = 1024, clock: Callable[[], float] = time.monotonic):
        if setsize < 16:
            setsize = 16
        self.clock = clock
        self.maxevents = maxevents
        self.backend = EpollBackend(setsize)
        self._mask = [0] * setsize
        self._rcb: list[Any] = [None] * setsize
        self._wcb: list[Any] = [None] * setsize
        self._data: list[Any] = [None] * setsize
        self._timers: list[Timer] = []
        self._seq = 0
        self._cancelled = 0
        self._ready: deque = deque()
        self._threadsafe: deque = deque()
        self._woken = False  # the eventfd has been written since the loop last drained _threadsafe
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.add(self._efd, READABLE, Reactor._on_eventfd, self)
        self._signals: dict[int, Callable[[int], None]] = {}
        self._old_signals: dict[int, Any] = {}
        self._wakeup: tuple[socket.socket, socket.socket] | None = None
        self._old_wakeup = -1
        self._stopping = False
        self.running = False
        self.on_error: Callable[[BaseException, Any], None] | None = None

    # --- the event table ----------------------------------------------------

    @property
    def setsize(self) -> int:
        return len(self._mask)

    def _grow(self, fd: int) -> None:
        extra = max(fd + 1, 2 * len(self._mask)) - len(self._mask)
        self._mask.extend([0] * extra)
        self._rcb.extend([None] * extra)
        self._wcb.extend([None] * extra)
        self._data.extend([None] * extra)

    def add(self, fd: int, mask: int, callback: Callable[[Any], None], data: Any = None,
            exclusive: bool = False) -> None:
        """Watch ``fd`` for ``mask`` (READABLE, WRITABLE or both): ``callback(data)``.
        ``exclusive`` (a listener every worker polls): EPOLLEXCLUSIVE, so one
        connection wakes one worker; it applies when ``fd`` enters epoll."""
        if fd >= len(self._mask):
            self._grow(fd)
        old = self._mask[fd]
        new = old | mask
        if old == 0:
            self.backend.add(fd, new, exclusive)
        elif new != old:
            self.backend.modify(fd, new)
        self._mask[fd] = new
        if mask & READABLE:
            self._rcb[fd] = callback
        if mask & WRITABLE:
            self._wcb[fd] = callback
        self._data[fd] = data

    def remove(self, fd: int, mask: int = READABLE | WRITABLE) -> None:
        """Stop watching ``fd`` for ``mask``; with no mask left it leaves epoll."""
        if fd >= len(self._mask):
            return
        old = self._mask[fd]
        new = old & ~mask
        if new == old:
            return
        if new == 0:
            self.backend.delete(fd)
            self._rcb[fd] = self._wcb[fd] = self._data[fd] = None
        else:
            self.backend.modify(fd, new)
            if mask & READABLE:
                self._rcb[fd] = None
            if mask & WRITABLE:
                self._wcb[fd] = None
        self._mask[fd] = new

    def mask(self, fd: int) -> int:
        return self._mask[fd] if fd < len(self._mask) else 0

    def watched(self) -> list:
        """The data of every watched fd (an O(table) scan: for shutdown and status)."""
        return [d for d, m in zip(self._data, self._mask) if m]

    def registered(self) -> int:
        """How many fds are in the table (an O(n) count: for tests and status)."""
        return len(self._mask) - self._mask.count(0)

    # --- timers -------------------------------------------------------------

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> Timer:
        """Call ``callback(arg)`` at ``when`` (on this reactor's clock)."""
        seq = self._seq = self._seq + 1
        timer = [when, seq, callback, arg]
        heapq.heappush(self._timers, timer)
        return timer

    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any = None) -> Timer:
        return self.call_at(self.clock() + delay, callback, arg)

    def cancel(self, timer: Timer) -> None:
        """Cancel a pending timer; a no-op for one that fired or was cancelled."""
        if timer[CALLBACK] is not None:
            timer[CALLBACK] = timer[ARG] = None
            self._cancelled += 1

    def pending_timers(self) -> int:
        return len(self._timers) - self._cancelled

    def _purge_cancelled(self) -> None:
        timers = self._timers
        if self._cancelled > 64 and self._cancelled * 2 > len(timers):
            # Most of the heap is dead weight: rebuild it in O(n) once.
            self._timers = [t for t in timers if t[CALLBACK] is not None]
            heapq.heapify(self._timers)
            self._cancelled = 0
            return
        while timers and timers[0][CALLBACK] is None:
            heapq.heappop(timers)
            self._cancelled -= 1

    def _run_timers(self) -> None:
        timers = self._timers
        now = self.clock()
        due = []
        while timers and timers[0][WHEN] <= now:
            timer = heapq.heappop(timers)
            if timer[CALLBACK] is None:
                self._cancelled -= 1
            else:
                due.append(timer)
        for timer in due:
            callback, arg = timer[CALLBACK], timer[ARG]
            if callback is None:  # cancelled by an earlier timer of this batch, off the heap already
                self._cancelled -= 1
                continue
            timer[CALLBACK] = timer[ARG] = None  # fired: a later cancel() is a no-op
            try:
                callback(arg)
            except Exception as exc:
                self._report(exc, arg)

    # --- calls from this thread and from others ------------------------------

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self._ready.append((callback, args))

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        """Queue ``callback(*args)`` from any thread and wake the loop.

        The eventfd is written only by the first call after the loop last
        drained the queue (``_woken``): later ones find the loop woken
        already, and skip the syscall, which would also hand the GIL over
        (a context switch) on every result a pool thread gives back. The loop
        clears ``_woken`` before it drains, so a call that saw it set has
        queued its callback before the drain."""
        self._threadsafe.append((callback, args))
        if self._woken:
            return
        self._woken = True
        try:
            os.eventfd_write(self._efd, 1)
        except BlockingIOError:
            pass  # the counter is saturated: the loop is awake anyway
        except OSError:
            pass  # the reactor is closed; nothing will run it

    def _on_eventfd(self) -> None:
        try:
            os.eventfd_read(self._efd)
        except BlockingIOError:
            pass
        self._woken = False
        queue = self._threadsafe
        while queue:
            callback, args = queue.popleft()
            try:
                callback(*args)
            except Exception as exc:
                self._report(exc, None)

    def _run_ready(self) -> None:
        ready = self._ready
        for _ in range(len(ready)):  # callbacks queued by these run next time
            callback, args = ready.popleft()
            try:
                callback(*args)
            except Exception as exc:
                self._report(exc, None)

    # --- signals --------------------------------------------------------------

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        """Run ``callback(signum)`` from the loop when ``signum`` arrives.

        Main thread only (``signal.set_wakeup_fd`` is)."""
        if self._wakeup is None:
            rsock, wsock = socket.socketpair()
            rsock.setblocking(False)
            wsock.setblocking(False)
            self._old_wakeup = signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
            self._wakeup = (rsock, wsock)
            self.add(rsock.fileno(), READABLE, Reactor._on_signal_fd, self)
        if signum not in self._old_signals:
            self._old_signals[signum] = signal.getsignal(signum)
        self._signals[signum] = callback
        signal.signal(signum, _record_signal)

    def remove_signal_handlers(self) -> None:
        for signum, old in self._old_signals.items():
            try:
                signal.signal(signum, old if old is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._old_signals.clear()
        self._signals.clear()
        if self._wakeup is not None:
            try:
                signal.set_wakeup_fd(self._old_wakeup)
            except ValueError:
                pass
            rsock, wsock = self._wakeup
            self.remove(rsock.fileno())
            rsock.close()
            wsock.close()
            self._wakeup = None

    def _on_signal_fd(self) -> None:
        rsock = self._wakeup[0] if self._wakeup else None
        while rsock is not None:
            try:
                data = rsock.recv(512)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            for signum in data:
                callback = self._signals.get(signum)
                if callback is not None:
                    try:
                        callback(signum)
                    except Exception as exc:
                        self._report(exc, None)

    # --- running --------------------------------------------------------------

    def stop(self) -> None:
        """Finish the current iteration and return from run()."""
        self._stopping = True
        self.call_soon_threadsafe(lambda: None)

    def _report(self, exc: BaseException, data: Any) -> None:
        if self.on_error is not None:
            self.on_error(exc, data)
        else:
            log.error("unhandled error in callback for %r", data, exc_info=exc)
        abort = getattr(data, "abort", None)
        if abort is not None:
            try:
                abort()
            except Exception:
                log.exception("error aborting %r", data)

    def _timeout(self) -> float:
        if self._ready or self._stopping:
            return 0.0
        if not self._timers:
            return -1.0
        delay = self._timers[0][0] - self.clock()
        return delay if delay > 0.0 else 0.0

    def run_once(self, timeout: float | None = None) -> int:
        """One poll and its dispatch; returns the number of fd events handled."""
        if self._cancelled:
            self._purge_cancelled()
        if timeout is None:
            timeout = self._timeout()
        try:
            events = self.backend.poll(timeout, self.maxevents)
        except InterruptedError:
            events = []
        masks, rcbs, wcbs, datas = self._mask, self._rcb, self._wcb, self._data
        for fd, ev in events:
            try:
                if ev & _EV_READ and masks[fd] & READABLE:
                    rcbs[fd](datas[fd])
                # re-check: the read callback may have closed or changed fd
                if ev & _EV_WRITE and masks[fd] & WRITABLE:
                    wcbs[fd](datas[fd])
            except Exception as exc:
                self._report(exc, datas[fd] if fd < len(datas) else None)
        if self._timers:
            self._run_timers()
        if self._ready:
            self._run_ready()
        return len(events)

    def run(self) -> None:
        self.running = True
        self._stopping = False
        try:
            while not self._stopping:
                self.run_once()
        finally:
            self.running = False

    def close_after_fork(self) -> None:
        """In a forked child: drop this (the parent's) reactor without touching
        the epoll instance, which the parent still shares -- an epoll_ctl
        DEL here would remove the parent's registrations too."""
        self._signals.clear()
        self._old_signals.clear()
        if self._wakeup is not None:
            for sock in self._wakeup:
                sock.close()
            self._wakeup = None
        for fd in (self._efd, self.backend.fileno()):
            try:
                os.close(fd)
            except OSError:
                pass
        self._timers.clear()
        self._ready.clear()

    def close(self) -> None:
        self.remove_signal_handlers()
        self.remove(self._efd)
        try:
            os.close(self._efd)
        except OSError as exc:
            if exc.errno != errno.EBADF:
                raise
        self.backend.close()
        self._timers.clear()
