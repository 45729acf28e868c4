"""The asyncio backends: ``backend = "uvloop"`` and ``backend = "asyncio"``.

The same sans-IO protocols and apps run here through a thin adapter:

* ``AsyncioReactor`` gives the worker the parts of the ``Reactor`` interface it
  uses (timers, signals, thread hand-back, watching a listening fd), on an
  asyncio event loop — uvloop's or the standard library's.
* Accepting stays the worker's own (``connection.Acceptor`` on
  ``loop.add_reader``), so the connection cap, ``accept_batch`` and the
  EMFILE spare-fd trick behave exactly as on the epoll backend; each accepted
  socket is handed to the loop with ``connect_accepted_socket``.
* ``AioConnection`` is the ``asyncio.Protocol`` that drives one sans-IO
  protocol over the loop's transport: the same deadlines (one lazy timer),
  back-pressure (the transport's high-water mark pauses reading), send
  timeout, lingering close after errors, and file bodies — read with
  ``os.pread`` in 256 KiB pieces as the transport drains (the transport owns
  the socket, so sendfile is not available without giving it up).
* Output is corked for one turn of the loop: what a connection is given to
  send waits in ``corked`` until the callbacks of this turn have run (one
  ``flush_corked`` per turn writes every corked connection), or until
  ``CORK_LIMIT`` bytes wait. The responses a turn makes (a batch of ASGI
  calls) then leave back to back: the first wakes the client, the rest find
  it awake, instead of each paying a cross-CPU wake-up of its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections import deque
from typing import Any, Callable

from .driver import HELD, HIGH_WATER, LINGERING, PAUSED, BaseDriver, Host
from .messages import FileChunk
from .reactor import READABLE, WRITABLE

log = logging.getLogger("prefork.worker")

FILE_PIECE = 256 * 1024
CORK_LIMIT = 64 * 1024  # corked bytes past which a connection's output goes to the transport at once


def new_loop(backend: str) -> asyncio.AbstractEventLoop:
    if backend == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class AsyncioReactor:
    def __init__(self, backend: str):
        self.loop = new_loop(backend)
        self.clock: Callable[[], float] = self.loop.time
        self._signals: list[int] = []
        self._closing = False

    # the subset of Reactor that Worker, Acceptor and BaseDriver use
    def add(self, fd: int, mask: int, callback: Callable[[Any], None], data: Any = None,
            exclusive: bool = False) -> None:
        # asyncio loops cannot register with EPOLLEXCLUSIVE: a shared socket
        # wakes every worker (and one wins the accept)
        if mask & READABLE:
            self.loop.add_reader(fd, callback, data)
        if mask & WRITABLE:
            self.loop.add_writer(fd, callback, data)

    def remove(self, fd: int, mask: int = READABLE | WRITABLE) -> None:
        if mask & READABLE:
            self.loop.remove_reader(fd)
        if mask & WRITABLE:
            self.loop.remove_writer(fd)

    # A timer is [when, handle], as the epoll reactor's is [when, ...]: timer[WHEN] reads the same.
    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any = None) -> list:
        when = self.loop.time() + delay
        return [when, self.loop.call_at(when, callback, arg)]

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> list:
        return [when, self.loop.call_at(when, callback, arg)]

    @staticmethod
    def cancel(timer: list) -> None:
        timer[1].cancel()

    def call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        self.loop.call_soon(callback, *args)

    def call_soon_threadsafe(self, callback: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:
            pass  # the loop is closed: nothing will run it

    def add_signal_handler(self, signum: int, callback: Callable[[int], None]) -> None:
        self.loop.add_signal_handler(signum, callback, signum)
        self._signals.append(signum)

    def run(self) -> None:
        self.loop.run_forever()

    def stop(self) -> None:
        if not self._closing:
            self.loop.stop()

    def close(self) -> None:
        self._closing = True
        for signum in self._signals:
            self.loop.remove_signal_handler(signum)
        self.loop.run_until_complete(asyncio.sleep(0))  # aborted transports report connection_lost
        self.loop.close()


class AioConnection(BaseDriver, asyncio.Protocol):
    """Drives one sans-IO protocol over an asyncio transport (the epoll
    backend's ``Connection``, for asyncio loops). Deadlines, lingering close
    and hold/resume are ``BaseDriver``'s (driver.py).

    ``wbuf`` is None, or the parts queued behind a file being sent; the
    transport buffers the rest. ``fd`` is -1 once the connection is lost."""

    conns: set  # this worker's open connections (for_worker gives each worker its own)
    cork_queue: list  # this worker's connections with corked output, flushed once per loop turn
    _drain: asyncio.Future | None = None  # drained(): a writer waiting for the output to go below high water
    corked: list | None = None  # output given this turn, not yet written to the transport
    corked_size = 0

    @classmethod
    def for_worker(cls, worker: Host) -> type:
        return type(cls.__name__, (cls,), {"worker": worker, "conns": set(), "cork_queue": []})

    def __init__(self, worker: Host, fd: int, proto):
        self.fd = fd
        self.proto = proto
        self.transport: asyncio.Transport | None = None
        self.timer = None
        self.send_deadline = 0.0
        self.wbuf: deque | None = None
        self.flags = 0
        self.conns.add(self)
        loop = worker.reactor.loop
        sock = socket.socket(fileno=fd)
        task = loop.create_task(loop.connect_accepted_socket(lambda: self, sock))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.connection_lost(None)

    # --- the worker's view ----------------------------------------------------------

    @classmethod
    def open_connections(cls) -> list:
        return list(cls.conns)

    @classmethod
    def count_sending(cls) -> int:
        return sum(1 for conn in cls.conns if conn.unsent())

    def unsent(self) -> bool:
        return (self.wbuf is not None or self.corked is not None
                or bool(self.transport is not None and self.transport.get_write_buffer_size()))

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.worker.high_water)
        if self.fd < 0:
            transport.abort()
            return
        self.arm()

    def data_received(self, data: bytes) -> None:
        if self.flags & LINGERING or self.fd < 0:
            return
        out = self.proto.data_received(data)
        if out:
            self.write(out)
        self.after()

    def eof_received(self) -> bool:
        if self.flags & LINGERING:
            self.close()
            return False
        out = self.proto.eof_received()
        if out:
            self.write(out)
        self.after()
        return True  # the transport stays open until after() closes it

    def connection_lost(self, exc: BaseException | None) -> None:
        if self not in self.conns:
            return  # reported twice (a failed connect, then the transport)
        self.fd = -1
        self.corked = None
        self._let_go()
        self._wake_writer()
        self.proto.connection_lost()
        self.conns.discard(self)
        self.worker.connection_closed()

    def pause_writing(self) -> None:
        self._pause(HIGH_WATER)
        self.send_deadline = self.worker.reactor.clock() + self.worker.send_timeout
        self.arm()

    def resume_writing(self) -> None:
        self.send_deadline = 0.0
        self._resume(HIGH_WATER)
        self._wake_writer()
        self._pump()
        if self.flags & HELD and self.wbuf is None:
            self.worker.reactor.call_soon(BaseDriver._continue, self)
        self.after()

    def drained(self) -> asyncio.Future:
        drain = self._drain
        if drain is None or drain.done():
            drain = self._drain = self.worker.reactor.loop.create_future()
            if self.fd < 0 or not self.flags & HIGH_WATER:
                drain.set_result(None)
        return drain

    def when_drained(self, callback: Callable[[], None]) -> None:
        if self.fd < 0 or not self.flags & HIGH_WATER:
            callback()
            return
        self.drained().add_done_callback(lambda _: callback())

    def _wake_writer(self) -> None:
        drain = self._drain
        if drain is not None:
            self._drain = None
            if not drain.done():
                drain.set_result(None)

    def sockname(self) -> Any:
        if self.transport is None:
            return None
        name = self.transport.get_extra_info("sockname")
        if type(name) is tuple:
            return (name[0], name[1])
        return (name, None) if name else None  # a unix socket: [path, None], as the ASGI spec has it

    # --- BaseDriver's hooks -------------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self.flags & PAUSED and self.transport is not None and self.fd >= 0:
            self.transport.pause_reading()
        self.flags |= reason

    def _resume(self, reason: int) -> None:
        if self.flags & reason:
            self.flags &= ~reason
            if not self.flags & PAUSED and self.transport is not None and self.fd >= 0:
                self.transport.resume_reading()

    def _shutdown_write(self) -> bool:
        if self.transport is None:
            return False
        self.uncork()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        return True

    def _end(self) -> None:
        if self.transport is not None:
            self.uncork()
            self.transport.close()  # after the buffered output is flushed

    def write(self, out) -> None:
        if self.transport is None or self.fd < 0:
            return
        if type(out) is not list:
            if self.wbuf is not None:
                self.wbuf.append(out)
            else:
                self.cork(out)
            return
        for part in out:
            if self.wbuf is not None:
                self.wbuf.append(part)
            elif type(part) is FileChunk:
                self.uncork()  # what came before the file goes first
                self.wbuf = deque((part,))
            else:
                self.cork(part)
        self._pump()

    def cork(self, data) -> None:
        """Keep ``data`` until this loop turn's callbacks have run (or
        ``CORK_LIMIT`` bytes wait): the turn's output leaves together."""
        corked = self.corked
        if corked is None:
            self.corked = [data]
            self.corked_size = len(data)
            queue = self.cork_queue
            if not queue:
                self.worker.reactor.call_soon(self.flush_corked)
            queue.append(self)
        else:
            corked.append(data)
            self.corked_size += len(data)
        if self.corked_size >= CORK_LIMIT:
            self.uncork()

    def uncork(self) -> None:
        """Hand the corked output to the transport (it may pause_writing)."""
        corked = self.corked
        if corked is not None:
            self.corked = None
            if self.fd >= 0:
                self.transport.write(corked[0] if len(corked) == 1 else b"".join(corked))

    @classmethod
    def flush_corked(cls) -> None:
        """Once per loop turn with corked output: write every corked connection's."""
        queue = cls.cork_queue  # emptied in place: assigning a class attribute would reset the type's method cache
        try:
            for conn in queue:
                try:
                    conn.uncork()
                except Exception:  # one connection's transport refusing must not stall the others'
                    log.exception("cannot write a connection's output; closing it")
                    conn.close()
        finally:
            queue.clear()  # else no later cork would schedule a flush

    def _pump(self) -> None:
        """Move queued parts (file pieces read with pread) into the transport
        until it asks us to pause."""
        queue = self.wbuf
        while queue and not self.flags & HIGH_WATER and self.fd >= 0:
            part = queue[0]
            if type(part) is not FileChunk:
                queue.popleft()
                self.transport.write(part)
                continue
            try:
                piece = os.pread(part.fd, min(part.count, FILE_PIECE), part.offset)
            except OSError:
                piece = b""
            if not piece:  # the file shrank: what was promised cannot be sent
                self.close()
                return
            part.offset += len(piece)
            part.count -= len(piece)
            if not part.count:
                part.close()
                queue.popleft()
            self.transport.write(piece)
        if not queue:
            self.wbuf = None
            if self.proto.closing:
                self.finish()

    def close(self) -> None:
        self.corked = None
        if self.transport is None:
            self.fd = -1  # connection_made aborts it
        elif not self.transport.is_closing():
            self.transport.abort()
