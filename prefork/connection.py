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
from typing import TYPE_CHECKING

from .messages import FileChunk
from .reactor import READABLE, WHEN, WRITABLE

if TYPE_CHECKING:
    from .worker import Worker

log = logging.getLogger("prefork.worker")

LINGER_TIMEOUT = 5.0  # nginx lingering_timeout: drain input this long before closing after an error


# Connection.flags
_HIGH_WATER = 1   # reading paused: too much unsent output
_PROTOCOL = 2     # reading paused: the protocol waits for the pool
_PAUSED_EOF = 8   # reading stopped: the peer has half-closed (EPOLLIN would fire forever)
_HELD = 16        # reading paused: the protocol waits for its output to be sent (then resume())
_PAUSED = _HIGH_WATER | _PROTOCOL | _PAUSED_EOF | _HELD
_LINGERING = 4    # lingering close: input is read and dropped until EOF or LINGER_TIMEOUT

SENDFILE_CHUNK = 1 << 20
READ_SIZE = 65536  # bytes per read: one read takes a whole pipelined burst


def _send_more(fd: int, data: bytes) -> int:
    """send(MSG_MORE): the kernel holds a short write back until what follows
    (sendfile) fills the segment, as nginx's tcp_nopush does."""
    sock = socket.socket(fileno=fd)
    try:
        return sock.send(data, socket.MSG_MORE)
    finally:
        sock.detach()


class Connection:
    """An accepted socket driven by the reactor for one sans-IO protocol.

    ``wbuf`` is None while everything has been sent; otherwise a deque of what
    is waiting: bytearrays, and FileChunks that go out with sendfile.

    Six slots and nothing else: a million of these must fit in memory. The
    worker is a class attribute of the per-worker subclass that ``for_worker``
    makes, not a slot."""

    __slots__ = ("fd", "proto", "wbuf", "timer", "send_deadline", "flags")
    worker: "Worker"

    @classmethod
    def for_worker(cls, worker: "Worker") -> type:
        """The connection class of ``worker``: this class with ``worker`` bound."""
        return type(cls.__name__, (cls,), {"__slots__": (), "worker": worker})

    def __init__(self, worker: "Worker", fd: int, proto):
        self.fd = fd
        self.proto = proto
        self.wbuf: deque | None = None
        self.timer = None
        self.send_deadline = 0.0
        self.flags = 0
        worker.reactor.add(fd, READABLE, Connection.on_readable, self)
        if proto.deadline:
            self.timer = worker.reactor.call_at(proto.deadline, Connection.on_timer, self)

    def __repr__(self) -> str:
        return f"<Connection fd={self.fd}>"

    # --- events ---------------------------------------------------------------

    def on_readable(self) -> None:
        try:
            data = os.read(self.fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()  # ECONNRESET and friends: the peer is gone
            return
        if self.flags & _LINGERING:
            if not data:
                self.close()
            return
        proto = self.proto
        if data:
            out = proto.data_received(data)
        else:
            out = proto.eof_received()
            if not proto.closing:
                self._pause(_PAUSED_EOF)  # nothing more will come; answer, then close
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
        if self.flags & _HIGH_WATER:
            self._resume(_HIGH_WATER)
        if self.flags & _HELD:
            self.worker.reactor.call_soon(Connection._continue, self)
        self.after()

    def on_timer(self) -> None:
        self.timer = None
        if self.fd < 0:
            return
        reactor = self.worker.reactor
        now = reactor.clock()
        send_deadline = self.send_deadline
        if send_deadline and send_deadline <= now:
            self.close()  # the client has read nothing for send_timeout
            return
        if self.flags & _LINGERING:
            self.close()
            return
        proto = self.proto
        deadline = proto.deadline
        if deadline and deadline <= now:
            out = proto.timeout(now)
            if out:
                self.write(out)
            if self.fd >= 0:
                self.after()
            return
        self.arm()

    # --- the protocol's calls (a response from the thread pool, flow control) ----

    def deliver(self, out) -> None:
        if self.fd < 0:
            return
        if out:
            self.write(out)
        if self.fd >= 0:
            self.after()

    def pause_reading(self) -> None:
        self._pause(_PROTOCOL)

    def resume_reading(self) -> None:
        self._resume(_PROTOCOL)

    def hold(self) -> None:
        """The protocol has said enough for now: once it is sent, call its
        ``resume()`` -- from the loop, so other connections get their turn."""
        self._pause(_HELD)
        if self.wbuf is None:
            self.worker.reactor.call_soon(Connection._continue, self)
        # else on_writable calls it when the buffer is empty

    def _continue(self) -> None:
        if self.fd < 0 or not self.flags & _HELD or self.wbuf is not None:
            return
        proto = self.proto
        out = proto.resume()
        if out:
            self.write(out)
            if self.fd < 0:
                return
        if not proto.held:
            self._resume(_HELD)
        self.after()

    def _pause(self, reason: int) -> None:
        if not self.flags & _PAUSED and self.fd >= 0:
            self.worker.reactor.remove(self.fd, READABLE)
        self.flags |= reason

    def _resume(self, reason: int) -> None:
        if self.flags & reason:
            self.flags &= ~reason
            if not self.flags & _PAUSED and self.fd >= 0:
                self.worker.reactor.add(self.fd, READABLE, Connection.on_readable, self)

    # --- helpers ---------------------------------------------------------------

    def arm(self) -> None:
        """Make sure a timer is pending for the earliest deadline. A timer that
        is already pending and fires early re-arms itself (lazy), so moving a
        deadline later costs nothing per request."""
        deadline = self.proto.deadline
        send_deadline = self.send_deadline
        if send_deadline and (not deadline or send_deadline < deadline):
            deadline = send_deadline
        timer = self.timer
        if not deadline:
            return
        if timer is not None:
            if timer[WHEN] <= deadline:
                return
            self.worker.reactor.cancel(timer)
        self.timer = self.worker.reactor.call_at(deadline, Connection.on_timer, self)

    def after(self) -> None:
        """After the protocol has spoken: close, linger or keep the timer."""
        proto = self.proto
        if proto.closing:
            if self.wbuf is None:
                self.finish()
            return
        # One pending timer per connection: a deadline that moved later is
        # handled when the timer fires (lazily); one that moved earlier re-arms.
        timer = self.timer
        deadline = proto.deadline
        if deadline and (timer is None or deadline < timer[WHEN]):
            self.arm()
        elif timer is None and self.send_deadline:
            self.arm()

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
        if wbuf is None or self.flags & _HIGH_WATER:
            return
        buffered = 0
        for part in wbuf:
            buffered += part.count if type(part) is FileChunk else len(part)
        if buffered > self.worker.high_water:
            self._pause(_HIGH_WATER)

    def finish(self) -> None:
        """The protocol is done and the output is flushed."""
        if self.flags & _LINGERING or self.fd < 0:
            return  # already finishing (reached again through a nested write)
        if not self.proto.linger:
            self.close()
            return
        # Lingering close (as nginx does after an error): send FIN, then read
        # and drop what the client still sends, so unread input does not make
        # the kernel reset the connection and destroy the response.
        try:
            sock = socket.socket(fileno=self.fd)
            try:
                sock.shutdown(socket.SHUT_WR)
            finally:
                sock.detach()
        except OSError:
            self.close()
            return
        paused = self.flags & _PAUSED
        self.flags = _LINGERING | (_HIGH_WATER if paused else 0)
        if paused:
            self._resume(_HIGH_WATER)  # read again, to drop what arrives
        if self.timer is not None:
            self.worker.reactor.cancel(self.timer)
        self.timer = self.worker.reactor.call_later(LINGER_TIMEOUT, Connection.on_timer, self)

    def abort(self) -> None:
        """Called by the reactor when a callback for this connection raised."""
        self.close()

    def close(self) -> None:
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        worker = self.worker
        worker.reactor.remove(fd)
        if self.timer is not None:
            worker.reactor.cancel(self.timer)
            self.timer = None
        if self.wbuf is not None:
            for part in self.wbuf:
                if type(part) is FileChunk:
                    part.close()
            self.wbuf = None
            worker.sending -= 1
        try:
            os.close(fd)
        except OSError:
            pass
        lost = getattr(self.proto, "connection_lost", None)
        if lost is not None:
            lost()
        worker.connection_closed()


class Acceptor:
    """A listening socket in the reactor: accepts up to ``accept_batch``
    connections per readiness event."""

    __slots__ = ("sock", "fd", "factory", "ctx", "worker", "listening", "name")

    def __init__(self, worker: "Worker", sock: socket.socket, factory, ctx, name: str = ""):
        self.sock = sock
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
            self.worker.reactor.add(self.fd, READABLE, Acceptor.on_readable, self)

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
