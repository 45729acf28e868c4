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
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections import deque
from typing import Any, Callable

from .connection import LINGER_TIMEOUT
from .messages import FileChunk

FILE_PIECE = 256 * 1024


def new_loop(backend: str) -> asyncio.AbstractEventLoop:
    if backend == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class _NoExclusive:
    """Stands in for ``EpollBackend.exclusive``: asyncio loops cannot register
    with EPOLLEXCLUSIVE, so a shared socket wakes every worker (and one wins)."""

    def add(self, fd: int) -> None:
        pass


class _Backend:
    exclusive = _NoExclusive()


class AsyncioReactor:
    def __init__(self, backend: str):
        self.loop = new_loop(backend)
        self.backend = _Backend()
        self.clock: Callable[[], float] = self.loop.time
        self._signals: list[int] = []
        self._closing = False

    # the subset of Reactor that Worker and Acceptor use
    def add(self, fd: int, mask: int, callback: Callable[[Any], None], data: Any = None) -> None:
        self.loop.add_reader(fd, callback, data)

    def remove(self, fd: int, mask: int = 3) -> None:
        self.loop.remove_reader(fd)

    def call_later(self, delay: float, callback: Callable[[Any], None], arg: Any = None):
        return self.loop.call_later(delay, callback, arg)

    def call_at(self, when: float, callback: Callable[[Any], None], arg: Any = None):
        return self.loop.call_at(when, callback, arg)

    @staticmethod
    def cancel(timer) -> None:
        timer.cancel()

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


class AioConnection(asyncio.Protocol):
    """Drives one sans-IO protocol over an asyncio transport (the epoll
    backend's ``Connection``, for asyncio loops)."""

    def __init__(self, worker, fd: int, proto):
        self.worker = worker
        self.proto = proto
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.timer_when = 0.0
        self.send_deadline = 0.0
        self.queue: deque = deque()          # parts behind a file being sent
        self.write_paused = False
        self.proto_paused = False
        self.holding = False                 # the protocol waits for its output to be sent
        self.lingering = False
        self.closed = False
        worker.conns.add(self)
        loop = worker.reactor.loop
        sock = socket.socket(fileno=fd)
        task = loop.create_task(loop.connect_accepted_socket(lambda: self, sock))
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.connection_lost(None)

    # --- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        transport.set_write_buffer_limits(high=self.worker.high_water)
        if self.closed:
            transport.abort()
            return
        self.arm()

    def data_received(self, data: bytes) -> None:
        if self.lingering or self.closed:
            return
        out = self.proto.data_received(data)
        if out:
            self.write(out)
        self.after()

    def eof_received(self) -> bool:
        if self.lingering:
            self.close()
            return False
        out = self.proto.eof_received()
        if out:
            self.write(out)
        self.after()
        return True  # the transport stays open until after() closes it

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.closed and self not in self.worker.conns:
            return
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for part in self.queue:
            if type(part) is FileChunk:
                part.close()
        self.queue.clear()
        lost = getattr(self.proto, "connection_lost", None)
        if lost is not None:
            lost()
        self.worker.conns.discard(self)
        self.worker.connection_closed()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.transport.pause_reading()
        self.send_deadline = self.worker.reactor.clock() + self.worker.send_timeout
        self.arm()

    def resume_writing(self) -> None:
        self.write_paused = False
        self.send_deadline = 0.0
        if not self.proto_paused and not self.holding and not self.closed:
            self.transport.resume_reading()
        self._pump()
        if self.holding and not self.queue:
            self.worker.reactor.loop.call_soon(self._continue)
        self.after()

    # --- the protocol's calls ---------------------------------------------------------

    def deliver(self, out) -> None:
        if self.closed:
            return
        if out:
            self.write(out)
        self.after()

    def pause_reading(self) -> None:
        self.proto_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.proto_paused = False
        if self.transport is not None and not self.write_paused and not self.holding:
            self.transport.resume_reading()

    def hold(self) -> None:
        """The protocol has said enough for now: once the file parts are
        passed on and the transport is below high water, call its ``resume()``
        (from the loop, so that other connections get their turn)."""
        if not self.holding:
            self.holding = True
            if self.transport is not None:
                self.transport.pause_reading()
        self.worker.reactor.loop.call_soon(self._continue)

    def _continue(self) -> None:
        if self.closed or not self.holding or self.queue or self.write_paused:
            return  # resume_writing calls again
        out = self.proto.resume()
        if out:
            self.write(out)
        if not self.proto.held:
            self.holding = False
            if not (self.proto_paused or self.write_paused or self.closed or self.lingering or self.proto.closing):
                self.transport.resume_reading()
        self.after()

    # --- the worker's view --------------------------------------------------------------

    @property
    def wbuf(self):
        """None when everything is sent (as ``Connection.wbuf``)."""
        if self.queue or (self.transport is not None and self.transport.get_write_buffer_size()):
            return True
        return None

    def arm(self) -> None:
        deadline = self.proto.deadline
        if self.send_deadline and (not deadline or self.send_deadline < deadline):
            deadline = self.send_deadline
        if not deadline or self.closed:
            return
        if self.timer is not None:
            if self.timer_when <= deadline:
                return
            self.timer.cancel()
        self.timer = self.worker.reactor.loop.call_at(deadline, self.on_timer)
        self.timer_when = deadline

    def on_timer(self) -> None:
        self.timer = None
        if self.closed:
            return
        now = self.worker.reactor.clock()
        if (self.send_deadline and self.send_deadline <= now) or self.lingering:
            self.close()
            return
        proto = self.proto
        if proto.deadline and proto.deadline <= now:
            out = proto.timeout(now)
            if out:
                self.write(out)
            self.after()
            return
        self.arm()

    def after(self) -> None:
        if self.closed:
            return
        proto = self.proto
        if proto.closing:
            if not self.queue:
                self.finish()
            return
        deadline = proto.deadline
        if deadline and (self.timer is None or deadline < self.timer_when):
            self.arm()

    def write(self, out) -> None:
        if self.transport is None or self.closed:
            return
        if type(out) is not list:
            if self.queue:
                self.queue.append(out)
            else:
                self.transport.write(out)
            return
        for part in out:
            if type(part) is FileChunk or self.queue:
                self.queue.append(part)
            else:
                self.transport.write(part)
        self._pump()

    def _pump(self) -> None:
        """Move queued parts (file pieces read with pread) into the transport
        until it asks us to pause."""
        queue = self.queue
        while queue and not self.write_paused and not self.closed:
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
        if not queue and self.proto.closing:
            self.finish()

    def finish(self) -> None:
        if self.lingering or self.closed or self.transport is None:
            return
        if not self.proto.linger:
            self.transport.close()  # after the buffered output is flushed
            return
        # lingering close: FIN now, drop what the client still sends, close on EOF or after a while
        self.lingering = True
        if self.transport.can_write_eof():
            self.transport.write_eof()
        if self.proto_paused or self.write_paused or self.holding:
            self.proto_paused = self.write_paused = self.holding = False
            self.transport.resume_reading()
        if self.timer is not None:
            self.timer.cancel()
        self.timer = self.worker.reactor.loop.call_later(LINGER_TIMEOUT, self.on_timer)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()
        elif self.transport is None:
            self.closed = True

    abort = close

