"""The master's side of the bus between the workers of one server: a relay.

The master owns one end of a ``socketpair(AF_UNIX, SOCK_STREAM)`` per worker
reactor (``links``: made before the fork, the other end goes to the worker);
the master's end lives as long as the worker process, so the bus needs
nothing again on a reload, a respawn or a recycle -- a new worker comes with
its own link. What a worker publishes arrives here as whole frames
(``busframe``) and is forwarded, as read, to every other link: each worker
process alive (retiring ones too, until they exit) gets each message once,
in the order its publisher sent them. The publisher delivers to its own
subscriber itself.

Never blocking the master: a link whose worker does not read has at most
``out_max`` bytes queued here; a message that would go beyond is dropped for
that link alone, whole, and counted (``dropped``; logged when the link
closes, and the first time). A link that sends a corrupt frame is closed.
"""
from __future__ import annotations

import logging
import socket
from collections import deque

from .busframe import FrameError, complete, frame_end
from .reactor import READABLE, WRITABLE
from .sockqueue import send_or_queue, send_queued

log = logging.getLogger("prefork.bus")

READ_SIZE = 256 * 1024
READS_PER_TURN = 16           # bounded work for one link per loop turn
OUT_MAX = 32 * 1024 * 1024    # bytes queued for one worker that does not read


class Links:
    """The socketpairs of one worker process: the master's ends and the worker's."""

    __slots__ = ("master", "worker")

    def __init__(self, count: int):
        self.master: list[socket.socket] = []
        self.worker: list[socket.socket] = []
        try:
            for _ in range(count):
                a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
                self.master.append(a)
                self.worker.append(b)
        except OSError:
            self.close()
            raise

    def worker_fds(self) -> list[int]:
        return [s.fileno() for s in self.worker]

    def close(self) -> None:
        for s in self.master + self.worker:
            s.close()


class _Link:
    __slots__ = ("sock", "fd", "pid", "inbuf", "out", "out_bytes", "dropped")

    def __init__(self, sock: socket.socket, pid: int):
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.pid = pid
        self.inbuf = bytearray()
        self.out: deque[memoryview] = deque()
        self.out_bytes = 0
        self.dropped = 0


class BusRelay:
    """Forwards every worker's frames to every other worker (the master's loop)."""

    def __init__(self, reactor, out_max: int = OUT_MAX):
        self.reactor = reactor
        self.out_max = out_max
        self._links: dict[int, _Link] = {}   # by the master's fd
        self.relayed = 0                     # frames read from the workers
        self.dropped = 0                     # (frame, link) pairs not delivered: a link's queue was full

    def links(self, count: int) -> Links:
        """New socketpairs for a worker about to be forked (OSError if the fds run out)."""
        return Links(count)

    def attach(self, links: Links, pid: int) -> None:
        """After the fork, in the master: relay for the links of worker ``pid``."""
        for sock in links.worker:
            sock.close()
        for sock in links.master:
            link = _Link(sock, pid)
            self._links[link.fd] = link
            self.reactor.add(link.fd, READABLE, BusRelay._on_readable, (self, link))
        links.master, links.worker = [], []

    def drop_in_child(self, links: Links) -> list[int]:
        """After the fork, in the worker: close the master's ends (every
        worker's and its own) without touching the master's epoll; the fds
        of the worker's ends."""
        for link in self._links.values():
            link.sock.close()
        self._links = {}
        for sock in links.master:
            sock.close()
        return [s.detach() for s in links.worker]

    def __len__(self) -> int:
        return len(self._links)

    # --- the loop's side ----------------------------------------------------------------

    @staticmethod
    def _on_readable(arg: tuple["BusRelay", _Link]) -> None:
        relay, link = arg
        for _ in range(READS_PER_TURN):
            try:
                data = link.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                relay._close(link, str(exc))
                return
            if not data:
                relay._close(link, "")
                return
            buf = link.inbuf
            buf += data
            try:
                end, count = complete(buf)
            except FrameError as exc:
                relay._close(link, str(exc))
                return
            if count:
                block = bytes(buf[:end])
                del buf[:end]
                relay.relayed += count
                relay._fan_out(link, block)
            if len(data) < READ_SIZE:
                return

    def _fan_out(self, source: _Link, block: bytes) -> None:
        for link in list(self._links.values()):
            if link is source:
                continue
            if link.out_bytes + len(block) <= self.out_max:
                self._write(link, memoryview(block))
                continue
            # not all of it fits: whole frames while they do, the rest dropped
            pos = 0
            view = memoryview(block)
            while pos < len(block):
                end = frame_end(block, pos)
                if link.out_bytes + end - pos <= self.out_max:
                    self._write(link, view[pos:end])
                else:
                    if not link.dropped:
                        log.warning("bus: worker process %d does not read its messages (%d bytes queued); "
                                    "dropping what does not fit", link.pid, link.out_bytes)
                    link.dropped += 1
                    self.dropped += 1
                pos = end

    def _write(self, link: _Link, view: memoryview) -> None:
        queued, waiting, error = send_or_queue(link.sock, link.out, view)
        if error is not None:
            return  # the worker is gone: its EOF closes the link
        link.out_bytes += queued
        if waiting:
            self.reactor.add(link.fd, WRITABLE, BusRelay._on_writable, (self, link))

    @staticmethod
    def _on_writable(arg: tuple["BusRelay", _Link]) -> None:
        relay, link = arg
        sent, error = send_queued(link.sock, link.out)
        link.out_bytes -= sent
        if error is not None:
            relay._close(link, error)
        elif not link.out:
            relay.reactor.remove(link.fd, WRITABLE)

    def _close(self, link: _Link, reason: str) -> None:
        if self._links.pop(link.fd, None) is None:
            return
        self.reactor.remove(link.fd)
        link.sock.close()
        if reason:
            log.warning("bus: link of worker process %d closed: %s", link.pid, reason)
        if link.dropped:
            log.warning("bus: %d message(s) for worker process %d were dropped (its queue was full)",
                        link.dropped, link.pid)

    def close(self) -> None:
        for link in list(self._links.values()):
            self._close(link, "")
