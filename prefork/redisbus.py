"""Redis pub/sub as the bus between servers, on the worker's reactor.

No asyncio on the epoll backend: ``RespConnection`` is a small non-blocking
RESP client over the reactor interface (``add``/``remove`` a reader or
writer, ``call_later``; the epoll ``Reactor`` and ``AsyncioReactor`` alike),
with ``hiredis.Reader`` parsing replies. It connects, sends AUTH when the
URL has a password, and reconnects with back-off (``BACKOFF_MIN`` doubling
to ``BACKOFF_MAX``) when Redis goes away.

``RedisBus``: each worker holds two connections, one that PUBLISHes and one
PSUBSCRIBEd to ``<prefix>*``. With Redis every worker subscribes itself and
a publish reaches even its own worker through Redis: Redis delivers each
message once per subscribed connection, in the order one connection
published them, so every subscriber gets each message once, in publish order
per publisher, with no relay beside it to de-duplicate against. A message
is a flag byte (``t`` text, ``b`` binary) and the payload; another program
publishes to the channel ``<prefix><channel>`` the same way.

While the publishing connection is down (or has ``OUT_MAX`` bytes unsent)
a publish is dropped and counted (``dropped``); while the subscribing one is
down, what others publish is not seen (Redis pub/sub keeps nothing).
"""
from __future__ import annotations

import errno
import logging
import socket
from collections import deque
from typing import Any, Callable

import hiredis

from .pubsub import Subscriber
from .reactor import READABLE, WRITABLE
from .resp import RedisAddress, command, glob_escape
from .sockqueue import send_or_queue, send_queued

log = logging.getLogger("prefork.bus")

READ_SIZE = 256 * 1024
READS_PER_TURN = 16
OUT_MAX = 32 * 1024 * 1024
BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
TEXT, BINARY = b"t", b"b"

DOWN, CONNECTING, UP = range(3)


class RespConnection:
    """One connection to Redis on a reactor, kept up until ``close()``.

    ``on_up()`` returns the commands to send on each (re)connection after
    AUTH; ``on_reply(reply)`` gets every reply that is not an error (errors
    are logged)."""

    def __init__(self, reactor, address: RedisAddress, name: str, on_up: Callable[[], list[bytes]],
                 on_reply: Callable[[Any], None], out_max: int = OUT_MAX):
        self.reactor = reactor
        self.address = address
        self.name = name
        self.on_up = on_up
        self.on_reply = on_reply
        self.out_max = out_max
        self.state = DOWN
        self.sock: socket.socket | None = None
        self.fd = -1
        self._reader: Any = None
        self._out: deque[memoryview] = deque()
        self._out_bytes = 0
        self._backoff = BACKOFF_MIN
        self._timer: list | None = None
        self._closed = False
        self.connects = 0       # successful connections (1 + reconnects)
        self.errors = 0         # error replies (a bad password, a command refused); logged once per connection
        self._errors_logged = 0
        self._warned = False    # one warning per outage
        self._connect()

    # --- connecting -----------------------------------------------------------------------

    def _connect(self) -> None:
        self._timer = None
        if self._closed:
            return
        host, port = self.address.host, self.address.port
        try:
            # a numeric host resolves without a lookup; a name is looked up here (blocking, once per attempt)
            family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            self._retry(f"cannot resolve {host}: {exc}")
            return
        sock.setblocking(False)
        if family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        code = sock.connect_ex(addr)
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self._retry(errno.errorcode.get(code, str(code)))
            return
        self.sock, self.fd, self.state = sock, sock.fileno(), CONNECTING
        self.reactor.add(self.fd, WRITABLE, RespConnection._on_connected, self)

    @staticmethod
    def _on_connected(self: "RespConnection") -> None:
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        self.reactor.remove(self.fd, WRITABLE)
        if code:
            self._fail(f"connect: {errno.errorcode.get(code, code)}")
            return
        self.state = UP
        self.connects += 1
        self._reader = hiredis.Reader()
        self.reactor.add(self.fd, READABLE, RespConnection._on_readable, self)
        if self._warned:
            log.warning("bus: %s connection to %s is back", self.name, self.address)
        self._warned = False
        for cmd in self.address.hello() + self.on_up():
            self.write(cmd)

    def _retry(self, reason: str) -> None:
        if not self._warned:
            log.warning("bus: %s connection to %s: %s; retrying", self.name, self.address, reason)
            self._warned = True
        self._timer = self.reactor.call_later(self._backoff, RespConnection._connect, self)
        self._backoff = min(self._backoff * 2, BACKOFF_MAX)

    def _fail(self, reason: str) -> None:
        was_up = self.state == UP
        self._drop_socket()
        if was_up:
            self._backoff = BACKOFF_MIN  # it was serving: the first retry comes soon
        if not self._closed:
            self._retry(reason)

    def _drop_socket(self) -> None:
        if self.sock is not None:
            self.reactor.remove(self.fd)
            self.sock.close()
        self.sock, self.fd, self.state = None, -1, DOWN
        self._reader = None
        self._out.clear()
        self._out_bytes = 0

    # --- writing and reading --------------------------------------------------------------

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False (nothing queued) when down or ``out_max`` bytes wait."""
        if self.state != UP or self._out_bytes + len(data) > self.out_max:
            return False
        queued, waiting, error = send_or_queue(self.sock, self._out, data)
        if error is not None:
            self._fail(error)
            return False
        self._out_bytes += queued
        if waiting:
            self.reactor.add(self.fd, WRITABLE, RespConnection._on_writable, self)
        return True

    @staticmethod
    def _on_writable(self: "RespConnection") -> None:
        sent, error = send_queued(self.sock, self._out)
        self._out_bytes -= sent
        if error is not None:
            self._fail(error)
        elif not self._out:
            self.reactor.remove(self.fd, WRITABLE)

    @staticmethod
    def _on_readable(self: "RespConnection") -> None:
        for _ in range(READS_PER_TURN):
            try:
                data = self.sock.recv(READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                self._fail(str(exc))
                return
            if not data:
                self._fail("closed by Redis")
                return
            reader = self._reader
            reader.feed(data)
            try:
                while True:
                    reply = reader.gets()
                    if reply is False:
                        break
                    if isinstance(reply, hiredis.ReplyError):
                        self.errors += 1
                        if self._errors_logged < self.connects:  # once per connection
                            self._errors_logged = self.connects
                            log.error("bus: %s connection to %s: Redis says %s", self.name, self.address, reply)
                        continue
                    self.on_reply(reply)
                    if self._reader is not reader:
                        return  # the reply closed the connection
            except hiredis.ProtocolError as exc:
                self._fail(f"protocol error: {exc}")
                return
            if len(data) < READ_SIZE:
                return

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self.reactor.cancel(self._timer)
            self._timer = None
        self._drop_socket()


class RedisBus:
    """The bus through Redis: one publishing and one subscribed connection per worker reactor."""

    def __init__(self, reactor, address: RedisAddress, prefix: bytes):
        self.prefix = prefix
        self.pattern = glob_escape(prefix) + b"*"
        self._subscriber: Subscriber | None = None
        self.published = 0
        self.delivered = 0
        self.dropped = 0        # publishes while the publishing connection was down or full
        self.malformed = 0      # messages on our channels without a t/b flag byte
        self.subscribed = False
        self._dropping = False
        self.pub = RespConnection(reactor, address, "publish", lambda: [], _ignore)
        self.sub = RespConnection(reactor, address, "subscribe", self._on_sub_up, self._on_message)

    def _on_sub_up(self) -> list[bytes]:
        self.subscribed = False
        return [command(b"PSUBSCRIBE", self.pattern)]

    def attach(self, subscriber: Subscriber) -> None:
        self._subscriber = subscriber

    def publish(self, channel: bytes, payload: bytes, binary: bool) -> None:
        self.published += 1
        data = command(b"PUBLISH", self.prefix + channel, (BINARY if binary else TEXT) + payload)
        if self.pub.write(data):
            self._dropping = False
            return
        if not self._dropping:  # once per outage
            log.warning("bus: publishes dropped from now on (the Redis connection is %s)",
                        "full" if self.pub.state == UP else "down")
            self._dropping = True
        self.dropped += 1

    def _on_message(self, reply: Any) -> None:
        if not isinstance(reply, list) or not reply:
            return
        kind = reply[0]
        if kind == b"pmessage" and len(reply) == 4:
            data = reply[3]
            flag = data[:1]
            if flag not in (TEXT, BINARY):
                self.malformed += 1
                return
            self.delivered += 1
            if self._subscriber is not None:
                self._subscriber.deliver(reply[2][len(self.prefix):], data[1:], flag == BINARY)
        elif kind == b"psubscribe":
            self.subscribed = True

    @property
    def unsent(self) -> int:
        """Bytes of publishes that Redis has not taken yet."""
        return self.pub._out_bytes

    @property
    def connected(self) -> bool:
        return self.subscribed and self.pub.state == UP

    def close(self) -> None:
        self.pub.close()
        self.sub.close()
        self._subscriber = None


def _ignore(reply: Any) -> None:
    """PUBLISH's replies (how many received it): nothing to do."""
