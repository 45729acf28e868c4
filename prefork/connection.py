"""The epoll backend's drivers: ``Acceptor`` for a listening socket and
``Connection`` for an accepted one. They do the I/O; the sans-IO protocol
decides what the bytes mean.

Write path: try ``send`` first, buffer only the rest, hold EPOLLOUT interest
only while the buffer is non-empty, stop reading above the high-water mark.
Reads allocate what they read (``os.read``) and nothing is kept between
reads, so an idle connection owns no buffer at all.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections import deque

from .driver import FIELDS, HELD, HIGH_WATER, LINGERING, PAUSED, PAUSED_EOF, AcceptorHost, BaseDriver, Host
from .messages import FileChunk
from .protocols.http import HttpProtocol
from .reactor import READABLE, WHEN, WRITABLE

log = logging.getLogger("prefork.worker")

SENDFILE_CHUNK = 1 << 20
READ_SIZE = 65536  # bytes per read: one read takes a whole pipelined burst


def _feed(proto, data: bytes):
    """``proto.data_received(data)``: compiled, the HTTP protocol's is a C call."""
    if isinstance(proto, HttpProtocol):
        http = proto
        return http.data_received(data)
    return proto.data_received(data)


def _send_more(fd: int, data: bytes) -> int:
    """send(MSG_MORE): the kernel holds a short write back until what follows
    (sendfile) fills the segment, as nginx's tcp_nopush does."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.send(data, socket.MSG_MORE)
    finally:
        sock.detach()


class Connection(BaseDriver):
    """An accepted socket driven by the reactor for one sans-IO protocol.

    ``wbuf`` is None while everything has been sent; otherwise a deque of what
    is waiting: bytearrays, and FileChunks that go out with sendfile.

    Six slots and nothing else: a million of these must fit in memory. The
    worker is a class attribute of the per-worker subclass that ``for_worker``
    makes, not a slot. Deadlines, lingering close and hold/resume are
    ``BaseDriver``'s (driver.py)."""

    __slots__ = FIELDS  # fd, proto, wbuf, timer, send_deadline, flags (driver.FIELDS)

    def __init__(self, worker: Host, fd: int, proto):
        self.fd = fd
        self.proto = proto
        self.wbuf: deque | None = None
        self.timer = None
        self.send_deadline = 0.0
        self.flags = 0
        worker.reactor.add(fd, READABLE, Connection.on_readable, self)
        if proto.deadline:
            self.timer = worker.reactor.call_at(proto.deadline, BaseDriver.on_timer, self)

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd}>"

    # drain_waiters, a dict: when_drained()'s waiting callback of each connection
    # that has one (a WSGI call's thread waiting for room): a class attribute
    # per worker (for_worker), not a slot

    @classmethod
    def for_worker(cls, worker: Host) -> type:
        return type(cls.__name__, (cls,), {"__slots__": (), "worker": worker, "drain_waiters": {}})

    @classmethod
    def open_connections(cls) -> list:
        return [d for d in cls.worker.reactor.watched() if isinstance(d, cls)]

    @classmethod
    def count_sending(cls) -> int:
        return cls.worker.sending  # kept as buffers come and go: O(1)

    # --- events ---------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()  # ECONNRESET and friends: the peer is gone
            return
        if self.flags & LINGERING:
            if not data:
                self.close()
            return
        proto = self.proto
        if data:
            out = _feed(proto, data)
        else:
            out = proto.eof_received()
            if not proto.closing:
                self._pause(PAUSED_EOF)  # nothing more will come; answer, then close
        if out:
            # write(), inlined for the common case: this is the path of every response
            if self.wbuf is None and type(out) is bytes:
                try:
                    sent = os.write(self.fd, out)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    self.close()
                    return
                if sent != len(out):
                    self._buffer(out, sent)
            else:
                self.write(out)
            if self.fd < 0:
                return
        # after(), when there is nothing to do: open, and the pending timer
        # fires no later than the protocol's deadline (it re-arms lazily)
        timer = self.timer
        if proto.closing or timer is None or proto.deadline < timer[WHEN]:
            self.after()

    def on_writable(self) -> None:
        wbuf = self.wbuf
        fd = self.fd
        try:
            while wbuf:
                part = wbuf[0]
                if type(part) is FileChunk:
                    n = os.sendfile(fd, part.fd, part.offset, min(part.count, SENDFILE_CHUNK))
                    if n == 0:  # the file shrank under us: what was promised cannot be sent
                        self.close()
                        return
                    part.offset += n
                    part.count -= n
                    if part.count:
                        continue
                    part.close()
                else:
                    n = os.write(fd, part)
                    del part[:n]
                    if part:
                        continue
                wbuf.popleft()
        except (BlockingIOError, InterruptedError):
            self.send_deadline = self.worker.reactor.clock() + self.worker.send_timeout
            self._check_high_water()
            return
        except OSError:
            self.close()
            return
        self.wbuf = None
        self.send_deadline = 0.0
        self.worker.sending -= 1
        self.worker.reactor.remove(fd, WRITABLE)
        if self.flags & HIGH_WATER:
            self._resume(HIGH_WATER)
            if self.drain_waiters:
                self._wake_drain()
        if self.flags & HELD:
            self.worker.reactor.call_soon(BaseDriver._continue, self)
        self.after()

    def when_drained(self, callback) -> None:
        if self.fd < 0 or not self.flags & HIGH_WATER:
            callback()
            return
        self.drain_waiters[self] = callback

    def _wake_drain(self) -> None:
        callback = self.drain_waiters.pop(self, None)
        if callback is not None:
            callback()

    def sockname(self):
        if self.fd < 0:
            return None
        sock = socket.socket(fileno=self.fd)
        try:
            name = sock.getsockname()
        except OSError:
            return None
        finally:
            sock.detach()
        return (name[0], name[1]) if type(name) is tuple else (name, None)

    # --- BaseDriver's hooks ------------------------------------------------------

    def _pause(self, reason: int) -> None:
        if not self.flags & PAUSED and self.fd >= 0:
            self.worker.reactor.remove(self.fd, READABLE)
        self.flags |= reason

    def _resume(self, reason: int) -> None:
        if self.flags & reason:
            self.flags &= ~reason
            if not self.flags & PAUSED and self.fd >= 0:
                self.worker.reactor.add(self.fd, READABLE, Connection.on_readable, self)

    def _shutdown_write(self) -> bool:
        try:
            sock = socket.socket(fileno=self.fd)
            try:
                sock.shutdown(socket.SHUT_WR)
            finally:
                sock.detach()
        except OSError:
            return False
        return True

    # --- helpers ---------------------------------------------------------------

    def write(self, out) -> None:
        """Send ``out`` (bytes, or a list of bytes and FileChunks) or queue it."""
        if type(out) is not list:
            out = (out,)
        for i, part in enumerate(out):
            if self.wbuf is not None or type(part) is FileChunk:
                self._queue_rest(out[i:])
                return
            try:
                if i + 1 < len(out) and type(out[i + 1]) is FileChunk:
                    n = _send_more(self.fd, part)  # the head: let it share a segment with the file
                else:
                    n = os.write(self.fd, part)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                for rest in out[i:]:
                    if type(rest) is FileChunk:
                        rest.close()
                self.close()
                return
            if n != len(part):
                self._buffer(part, n)
                if i + 1 < len(out):
                    self._queue_rest(out[i + 1:])
                return

    def _queue_rest(self, parts) -> None:
        wbuf = self.wbuf
        if wbuf is None:
            wbuf = self.wbuf = deque()
            self._start_writing()
        for part in parts:
            wbuf.append(part if type(part) is FileChunk else bytearray(part))
        if type(parts[0]) is FileChunk and len(wbuf) == len(parts):
            self.on_writable()  # nothing ahead of the file: start sending it now
        elif self.fd >= 0:
            self._check_high_water()

    def _buffer(self, data: bytes, sent: int) -> None:
        """Keep what the kernel did not take, and wait for EPOLLOUT."""
        self.wbuf = deque((bytearray(memoryview(data)[sent:]),))
        self._start_writing()
        self._check_high_water()

    def _start_writing(self) -> None:
        """``wbuf`` has just been created: wait for EPOLLOUT."""
        worker = self.worker
        worker.sending += 1
        worker.reactor.add(self.fd, WRITABLE, Connection.on_writable, self)
        self.send_deadline = worker.reactor.clock() + worker.send_timeout
        self.arm()

    def _check_high_water(self) -> None:
        wbuf = self.wbuf
        if wbuf is None or self.flags & HIGH_WATER:
            return
        buffered = 0
        for part in wbuf:
            buffered += part.count if type(part) is FileChunk else len(part)
        if buffered > self.worker.high_water:
            self._pause(HIGH_WATER)

    def close(self) -> None:
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        worker = self.worker
        worker.reactor.remove(fd)
        if self._let_go():
            worker.sending -= 1
        try:
            os.close(fd)
        except OSError:
            pass
        self.proto.connection_lost()
        if self.drain_waiters:
            self._wake_drain()
        worker.connection_closed()


class Acceptor:
    """A listening socket in the reactor: accepts up to ``accept_batch``
    connections per readiness event."""

    __slots__ = ("sock", "fd", "factory", "ctx", "worker", "listening", "name", "exclusive")

    def __init__(self, worker: AcceptorHost, sock: socket.socket, factory, ctx, name: str = "",
                 exclusive: bool = False):
        self.sock = sock
        self.exclusive = exclusive  # polled by every worker: wake only one of them
        self.fd = sock.fileno()
        self.factory = factory
        self.ctx = ctx
        self.worker = worker
        self.listening = False
        self.name = name
        sock.setblocking(False)

    def start(self) -> None:
        if not self.listening:
            self.listening = True
            self.worker.reactor.add(self.fd, READABLE, Acceptor.on_readable, self, exclusive=self.exclusive)

    def stop(self) -> None:
        if self.listening:
            self.listening = False
            self.worker.reactor.remove(self.fd)

    def on_readable(self) -> None:
        worker = self.worker
        accept = self.sock._accept
        factory, ctx = self.factory, self.ctx
        for _ in range(worker.accept_batch):
            if worker.active >= worker.max_connections:
                worker.pause_accepting()
                return
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    worker.out_of_fds(self.sock, exc)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that one connection is gone; the next may be fine
                log.error("accept() on %s failed: %s", self.name or self.fd, exc)
                return
            try:
                os.set_blocking(fd, False)
            except OSError:
                os.close(fd)
                continue
            worker.active += 1
            worker.accepted += 1
            proto = factory(ctx, addr)
            proto.driver = worker.connection_class(worker, fd, proto)
