"""The worker's bus: which one, from the config, and the fan-out between the
workers of one server (``LocalBus``, the worker's end of a link to the
master's relay, ``busrelay``).

``make_bus(config, reactor, link)`` is the one call a worker makes:
``[pubsub] url`` set -> ``RedisBus`` (``redisbus``: every worker subscribes
itself, so local delivery goes through Redis too and each subscriber gets each
message once); else a link from the master -> ``LocalBus``; else (a worker
without a master, a test) -> ``LoopbackBus``.
"""
from __future__ import annotations

import logging
import os
import socket
from collections import deque

from .busframe import FrameError, FrameReader, encode
from .config import Config
from .pubsub import Bus, LoopbackBus, Subscriber
from .reactor import READABLE, WRITABLE
from .sockqueue import send_or_queue, send_queued

log = logging.getLogger("prefork.bus")

READ_SIZE = 256 * 1024
READS_PER_TURN = 16
OUT_MAX = 32 * 1024 * 1024   # bytes a worker queues for the relay before it drops (and counts) publishes
FLUSH_TIMEOUT = 1.0          # at exit, seconds to send what is still queued


def make_bus(config: Config, reactor, link: int = -1) -> Bus:
    """The bus of one worker reactor. ``link``: the fd of its end of the
    master's relay (``Supervisor.take_bus_link()``), -1 if it has none."""
    if config.pubsub.url:
        from .redisbus import RedisBus
        from .resp import parse_url

        if link >= 0:
            os.close(link)
        return RedisBus(reactor, parse_url(config.pubsub.url), config.pubsub.prefix.encode())
    if link >= 0:
        return LocalBus(reactor, socket.socket(fileno=link))
    return LoopbackBus()


class LocalBus:
    """A worker's end of its link to the master's relay.

    ``publish`` delivers to this worker's subscriber at once and queues the
    frame for the relay, which sends it to every other worker; frames from
    the relay are delivered as they are read. Never blocks: past ``out_max``
    queued bytes a publish reaches this worker's subscriber only, and is
    counted in ``dropped``."""

    def __init__(self, reactor, sock: socket.socket, out_max: int = OUT_MAX):
        sock.setblocking(False)
        self.reactor = reactor
        self.sock: socket.socket | None = sock
        self.fd = sock.fileno()
        self.out_max = out_max
        self._subscriber: Subscriber | None = None
        self._reader = FrameReader()
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self.published = 0
        self.delivered = 0
        self.dropped = 0
        reactor.add(self.fd, READABLE, LocalBus._on_readable, self)

    def attach(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def publish(self, channel: bytes, payload: bytes, binary: bool) -> None:
        frame = encode(channel, payload, binary)  # ValueError before anything is delivered
        self.published += 1
        if self._subscriber is not None:
            self._subscriber.deliver(channel, payload, binary)
        if self.sock is None:
            return
        if self._out_bytes + len(frame) > self.out_max:
            if not self.dropped:
                log.warning("bus: %d bytes wait for the master; dropping publishes to the other workers",
                            self._out_bytes)
            self.dropped += 1
            return
        queued, waiting, error = send_or_queue(self.sock, self._out, frame)
        if error is not None:
            self._lost(error)
            return
        self._out_bytes += queued
        if waiting:
            self.reactor.add(self.fd, WRITABLE, LocalBus._on_writable, self)

    @staticmethod
    def _on_writable(self: "LocalBus") -> None:
        sent, error = send_queued(self.sock, self._out)
        self._out_bytes -= sent
        if error is not None:
            self._lost(error)
        elif not self._out:
            self.reactor.remove(self.fd, WRITABLE)

    @staticmethod
    def _on_readable(self: "LocalBus") -> None:
        for _ in range(READS_PER_TURN):
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._lost(str(exc))
                return
            if not data:
                self._lost("the master closed it")
                return
            try:
                messages = self._reader.feed(data)
            except FrameError as exc:
                self._lost(str(exc))
                return
            subscriber = self._subscriber
            for channel, payload, binary in messages:
                self.delivered += 1
                if subscriber is not None:
                    subscriber.deliver(channel, payload, binary)
            if len(data) < READ_SIZE or self.sock is None:
                return

    def _lost(self, reason: str) -> None:
        if self.sock is not None:
            log.warning("bus: the link to the master is gone (%s); publishes reach this worker only", reason)
        self._close()

    def _close(self) -> None:
        if self.sock is None:
            return
        self.reactor.remove(self.fd)
        self.sock.close()
        self.sock = None
        self._out.clear()
        self._out_bytes = 0

    @property
    def unsent(self) -> int:
        """Bytes published here that the relay has not taken yet."""
        return self._out_bytes

    def close(self) -> None:
        """Stop; what is still queued for the relay is sent first (for up to ``FLUSH_TIMEOUT``)."""
        if self.sock is not None and self._out:
            try:
                self.sock.settimeout(FLUSH_TIMEOUT)
                for view in self._out:
                    self.sock.sendall(view)
            except OSError as exc:
                log.warning("bus: %d bytes of publishes not sent at exit: %s", self._out_bytes, exc)
        self._close()
        self._subscriber = None
