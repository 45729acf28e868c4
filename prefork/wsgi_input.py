"""``wsgi.input`` for a request body that streams (``wsgi.py``): a bounded,
thread-safe buffer that the reactor fills and the app's thread reads.

The reactor's side is the protocol's ``BodySink`` part (``put``, ``end``,
``fail``, called on the reactor thread); after each piece the protocol reads
no more until ``want`` is called, which the buffer asks for (through
``hand_back``, on the reactor thread: a pool thread never touches the
protocol) while it holds less than ``limit`` bytes. The app's thread reads
with ``read``/``readline``/``readlines``/iteration, waiting only for bytes on
their way; the body's deadline (``body_timeout``) is the protocol's, which
fails the body (408) on the reactor side. A body cut short (the client gone,
a timeout, a bad chunk) raises ``ClientDisconnected`` (an ``OSError``) in the
reader. ``body_kind`` says which bodies stream. Imports nothing of prefork
but ``framing``.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable

from .framing import ClientDisconnected

LONG, CHUNKED = 1, 2


def body_kind(headers: list, limit: int) -> int:
    """How a request's body comes to a WSGI app: 0 (whole) for ``limit``
    bytes at most, ``LONG`` (streamed) for more, ``CHUNKED`` (streamed once
    longer than ``limit``, else whole) for a chunked one. The parser has
    checked the fields."""
    for name, value in headers:
        lower = name.lower()
        if lower == b"transfer-encoding":
            return CHUNKED
        if lower == b"content-length":
            try:
                return LONG if int(value) > limit else 0
            except ValueError:
                return 0
    return 0


class BodyInput:
    """A streamed request body, as ``wsgi.input``."""

    __slots__ = ("cond", "chunks", "size", "limit", "done", "failed", "asked", "pieces", "hand_back", "want",
                 "stall")

    def __init__(self, limit: int, hand_back: Callable, want: Callable[[], None], stall: float):
        self.cond = threading.Condition()
        self.chunks: deque[bytes] = deque()  # pieces not yet read (the first maybe part-read)
        self.size = 0            # bytes held
        self.limit = limit       # read on while less than this is held
        self.done = False        # the body has all come
        self.failed = False      # it never will (the client gone, 408, 400, 413)
        self.asked = False       # a want is on its way to the reactor (or reading is on)
        self.pieces = 0          # pieces put: a want asked for before the last one is stale
        self.hand_back = hand_back
        self.want = want         # the reactor's: read on (the protocol's want_body)
        self.stall = stall       # the reader's own bound on a wait (the reactor's deadline comes first)

    # --- the reactor's side ------------------------------------------------------------------

    def put(self, data: bytes) -> None:
        with self.cond:
            self.chunks.append(data)
            self.size += len(data)
            self.pieces += 1
            self.asked = False  # the protocol has paused reading after this piece
            self._more()
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def fail(self) -> None:
        with self.cond:
            if not self.done:
                self.failed = True
            self.cond.notify_all()

    def ask(self) -> None:
        """Read on now, before the app reads (it has not begun)."""
        with self.cond:
            self._more()

    def _want(self, pieces: int) -> None:
        # a piece came since it was asked for: reading paused after it, and the
        # buffer asks again if it has room (else two reads could pile up)
        if pieces == self.pieces and not self.done and not self.failed:
            self.want()

    def _more(self) -> None:
        """(holding the lock) Ask the reactor to read on, if there is room."""
        if not self.asked and not self.done and not self.failed and self.size < self.limit:
            self.asked = True
            self.hand_back(self._want, self.pieces)

    # --- the app's side (a pool thread) --------------------------------------------------------

    def _wait(self) -> None:
        """(holding the lock) Wait for more of the body, or its end."""
        if self.failed:
            raise ClientDisconnected("the request body was cut short")
        self._more()
        if not self.cond.wait(self.stall) and not self.chunks and not self.done and not self.failed:
            self.failed = True
            raise ClientDisconnected("the request body stalled")

    def _take(self, n: int) -> bytes:
        """(holding the lock) Up to ``n`` bytes of what is held."""
        chunks = self.chunks
        parts = []
        while n > 0 and chunks:
            first = chunks[0]
            if len(first) <= n:
                parts.append(chunks.popleft())
                n -= len(first)
            else:
                parts.append(first[:n])
                chunks[0] = first[n:]
                n = 0
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.size -= len(data)
        self._more()
        return data

    def read(self, size: int | None = -1) -> bytes:
        with self.cond:
            if size is None or size < 0:
                parts = []
                while not self.done:
                    if self.chunks:  # take what is here, so that the reactor reads on
                        parts.append(self._take(self.size))
                    else:
                        self._wait()
                parts.append(self._take(self.size))
                return b"".join(parts)
            while self.size < size and not self.done:
                self._wait()
            return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        limit = size if size is not None and size >= 0 else -1
        with self.cond:
            parts = []
            got = 0
            while True:
                chunks = self.chunks
                while chunks and (limit < 0 or got < limit):
                    first = chunks[0]
                    end = first.find(b"\n") + 1 or len(first)
                    if limit >= 0:
                        end = min(end, limit - got)
                    piece = self._take(end)
                    parts.append(piece)
                    got += len(piece)
                    if piece.endswith(b"\n"):
                        return b"".join(parts)
                if (0 <= limit <= got) or self.done:
                    return b"".join(parts)
                self._wait()

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        """Nothing to release (the server's to manage)."""
