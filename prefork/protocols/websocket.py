"""WebSocket (RFC 6455) server protocol, sans-IO: frames in, messages out;
messages in, frames out. No socket call happens here: the same object runs
on every backend after the HTTP protocol has handed its connection over (the
upgrade: ``wshandshake``, the switch is ``HttpProtocol.switch_to``).

Own framing over the C masking of the ``websockets`` library
(``websockets.speedups.apply_mask``), chosen by measurement
(``prefork-bench wsframing``): a tenth of the CPU per message of wsproto and
a quarter of the websockets library's sans-IO ``Protocol``, and an idle
connection is one slotted object with no buffer.

What a message means is a ``WebSocketHandler``'s business (``opened``,
``message``, ``closed``: the echo and pubsub routes, the ASGI adapter); it
sends with ``send`` / ``send_frame`` (a frame built once, e.g. for a
broadcast) and ends with ``close``. The protocol enforces the rest:
masking and reserved bits (1002), control frames (at most 125 bytes, never
fragmented), fragmentation, UTF-8 of text messages and close reasons (1007),
``max_message`` (1009, checked from the frame's header, before its payload
is buffered; for a compressed message on its inflated size, as it inflates),
permessage-deflate when the route offers it (``wsdeflate``: RSV1 on the
first frame of a compressed message only, else 1002; bad deflate data
1007), the close handshake (an echoed code; ours waits
``CLOSE_TIMEOUT`` for the client's), keepalive pings (``ping_interval``;
1011 when the pong is ``ping_timeout`` late), ``idle_timeout`` (1000), and a
bounded queue for a slow reader: bytes pushed while the driver holds more
than ``high_water`` unsent count against ``queue``; past it the connection
is closed with 1013 and counted (``WebSocketContext.overflows``).

Memory: an open, idle connection is this object's slots (the partial-frame
and fragment buffers exist only while a frame is half-received).
"""

from __future__ import annotations

import struct
import time
from typing import Any, Callable, Protocol

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets without its C extension
    from websockets.utils import apply_mask

from ..config import WebSocketConfig
from . import wsdeflate

CLOSE_TIMEOUT = 5.0  # after our close frame, wait this long for the client's

# opcodes
CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
RSV1 = 0x40  # (frame() takes it with the opcode) a compressed message's first frame

# states
OPEN = 0        # messages both ways
CLOSE_SENT = 1  # our close frame is out: waiting for the client's (data received is dropped)
CLOSED = 2      # done: the driver closes once the output is flushed
FAILED = 3      # closed after a protocol error: lingering close (unread input dropped, not reset)

# flags
PINGING = 1     # a ping is out, its pong not yet in
GOING = 2       # the worker stops: close with the context's stop_code at the deadline

# close codes
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA = 1000, 1001, 1002, 1007
POLICY, TOO_BIG, INTERNAL, RESTART, TRY_LATER = 1008, 1009, 1011, 1012, 1013
NO_STATUS, ABNORMAL = 1005, 1006


_REASONS = {GOING_AWAY: "server going away", RESTART: "service restart"}


def _valid_code(code: int) -> bool:
    """May a close frame carry ``code`` (RFC 6455 7.4, the IANA registry)?"""
    return 1000 <= code <= 1014 and code not in (1004, 1005, 1006) or 3000 <= code <= 4999


_H2 = struct.Struct("!BBH").pack
_H8 = struct.Struct("!BBQ").pack


def frame(opcode: int, payload: bytes) -> bytes:
    """A whole (FIN) unmasked server frame."""
    n = len(payload)
    if n < 126:
        return bytes((0x80 | opcode, n)) + payload
    if n < 65536:
        return _H2(0x80 | opcode, 126, n) + payload
    return _H8(0x80 | opcode, 127, n) + payload


def message_frame(payload: bytes, binary: bool, pmd: wsdeflate.Agreement | None = None) -> bytes:
    """The frame of a text (``payload`` UTF-8) or binary message (compressed
    for a connection with permessage-deflate ``pmd``, when that is smaller)."""
    opcode = BINARY if binary else TEXT
    if pmd is not None:
        packed = pmd.compress(payload)
        if packed is not None:
            return frame(RSV1 | opcode, packed)
    return frame(opcode, payload)


class Shared:
    """One message for many connections (a broadcast): its frame built once
    per kind, plain or compressed per agreement (``frame_for(conn.pmd)``)."""

    __slots__ = ("payload", "binary", "plain", "_packed")

    def __init__(self, payload: bytes, binary: bool):
        self.payload = payload
        self.binary = binary
        self.plain = frame(BINARY if binary else TEXT, payload)
        self._packed: dict | None = None

    def frame_for(self, pmd: wsdeflate.Agreement | None) -> bytes:
        if pmd is None:
            return self.plain
        packed = self._packed
        if packed is None:
            packed = self._packed = {}
        data = packed.get(pmd.key)
        if data is None:
            data = packed[pmd.key] = message_frame(self.payload, self.binary, pmd)
        return data


def close_frame(code: int = NORMAL, reason: str = "") -> bytes:
    if code == NO_STATUS:
        return frame(CLOSE, b"")
    data = reason.encode()[:123]
    while True:
        try:
            data.decode()
            break
        except UnicodeDecodeError:  # cut inside a character
            data = data[:-1]
    return frame(CLOSE, code.to_bytes(2, "big") + data)


# --- the connection ----------------------------------------------------------------------


class WebSocketHandler(Protocol):
    """What gives messages their meaning: a route's (echo, pubsub, an ASGI app)."""

    def opened(self, conn: "WebSocketProtocol") -> None: ...

    def message(self, conn: "WebSocketProtocol", payload: bytes, binary: bool) -> None: ...

    def closed(self, conn: "WebSocketProtocol", code: int, reason: str) -> None:
        """Once, when the connection leaves OPEN: ``code`` and ``reason`` the
        client's (or ours, or 1006 when the connection was lost without a close frame)."""


class _Fail(Exception):
    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class WebSocketContext:
    """Per worker and route: the limits, the handler, the clock, the counts,
    and what a stopping worker says (``stop_code`` from ``stop_at``)."""

    def __init__(self, config: WebSocketConfig | None = None, handler: WebSocketHandler | None = None,
                 clock: Callable[[], float] = time.monotonic, high_water: int = 65536):
        config = config or WebSocketConfig()
        self.config = config
        self.handler = handler
        self.clock = clock
        self.max_message = config.max_message
        self.idle_timeout = config.idle_timeout
        self.ping_interval = config.ping_interval
        self.ping_timeout = config.ping_timeout
        self.queue = config.queue
        self.high_water = high_water
        # permessage-deflate offered (None: off); a compressed frame may be a little bigger than its message
        self.deflate = (wsdeflate.Deflate(config.compression_level, config.compression_window_bits)
                        if config.compression == "deflate" else None)
        self.max_packed = config.max_message + (config.max_message >> 3) + 64
        self.open = 0          # connections in OPEN
        self.overflows = 0     # closed with 1013: a slow reader past the queue
        self.stop_code = GOING_AWAY  # what grace() closes with: 1001 (stop) or 1012 (a retiring worker)
        self.stop_at = 0.0           # ...and from when (a retiring worker serves on until near its deadline)


class WebSocketProtocol:
    """One WebSocket connection (server side), driven like ``HttpProtocol``:
    ``data_received`` returns the bytes to send; what is sent from outside a
    call (a broadcast) goes through ``driver.deliver``."""

    __slots__ = ("ctx", "driver", "deadline", "state", "flags", "tag", "pmd", "_buf", "_frag", "_out",
                 "_idle_at", "_ping_at", "_backlog")

    def __init__(self, ctx: WebSocketContext, tag: Any = None, driver: Any = None,
                 pmd: wsdeflate.Agreement | None = None):
        self.ctx = ctx
        self.driver = driver
        self.tag = tag            # the handler's: a pubsub channel, an ASGI call
        self.pmd = pmd            # the permessage-deflate agreed (shared), or None
        self.state = OPEN
        self.flags = 0
        self._buf: bytearray | None = None   # a partial frame
        self._frag: list | None = None       # a fragmented message: [opcode, bytearray(, its inflater)]
        self._out: list | None = None        # output gathered during a call
        self._backlog = 0                    # bytes pushed while the driver was above high water
        now = ctx.clock()
        self._idle_at = now + ctx.idle_timeout if ctx.idle_timeout else 0.0
        self._ping_at = now + ctx.ping_interval if ctx.ping_interval else 0.0
        self.deadline = 0.0
        self._set_deadline()
        ctx.open += 1

    # --- what the driver reads ---------------------------------------------------------

    @property
    def closing(self) -> bool:
        return self.state >= CLOSED

    @property
    def linger(self) -> bool:
        return self.state == FAILED

    @property
    def idle(self) -> bool:
        return self.state == OPEN

    # --- the switch from HTTP --------------------------------------------------------------

    def start(self, out: list) -> None:
        """The 101 is in ``out``: tell the handler (what it sends goes after it)."""
        self._out = out
        try:
            self._call_opened()
        finally:
            self._out = None

    def _call_opened(self) -> None:
        handler = self.ctx.handler
        if handler is not None:
            try:
                handler.opened(self)
            except Exception:
                self._fail_now(INTERNAL, "handler failed")

    # --- input ---------------------------------------------------------------------------

    def data_received(self, data) -> bytes:
        if self.state >= CLOSED:
            return b""
        buf = self._buf
        if buf is not None:
            buf += data
            data = buf
            self._buf = None
        out = self._out = []
        try:
            pos = self._parse(data)
        except _Fail as exc:
            self._fail_now(exc.code, exc.reason)
            pos = len(data)
        if pos < len(data) and self.state < CLOSED:
            self._buf = data if pos == 0 and type(data) is bytearray else bytearray(memoryview(data)[pos:])
        self._out = None
        if not out:
            return b""
        return out[0] if len(out) == 1 else b"".join(out)

    def _parse(self, data) -> int:
        """Handle every whole frame in ``data``; return where the rest begins."""
        pos = 0
        end = len(data)
        max_message = self.ctx.max_message
        while end - pos >= 2:
            b0 = data[pos]
            b1 = data[pos + 1]
            if not b1 & 0x80:
                raise _Fail(PROTOCOL_ERROR, "unmasked client frame")
            opcode = b0 & 0x0F
            packed = False
            if b0 & 0x70:  # RSV1 begins a compressed message, with permessage-deflate
                if b0 & 0x70 != RSV1 or self.pmd is None or opcode == CONT or opcode >= 8:
                    raise _Fail(PROTOCOL_ERROR, "reserved bits set")
                packed = True
            n = b1 & 0x7F
            head = 6
            if n == 126:
                if end - pos < 4:
                    break
                n = (data[pos + 2] << 8) | data[pos + 3]
                head = 8
            elif n == 127:
                if end - pos < 10:
                    break
                n = int.from_bytes(data[pos + 2:pos + 10], "big")
                if n >> 63:
                    raise _Fail(PROTOCOL_ERROR, "bad frame length")
                head = 14
            if opcode >= 8:
                if opcode > PONG:
                    raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")
                if n > 125 or not b0 & 0x80:
                    raise _Fail(PROTOCOL_ERROR, "bad control frame")
            elif opcode > BINARY:
                raise _Fail(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            elif packed or self._frag is not None or n > max_message:
                frag = self._frag
                limit = self.ctx.max_packed if packed or (frag is not None and len(frag) == 3) else max_message
                if n > limit or (frag is not None and len(frag[1]) + n > limit):
                    raise _Fail(TOO_BIG, "message too big")
            start = pos + head
            if end - start < n:
                break
            payload = apply_mask(data[start:start + n], data[start - 4:start]) if n else b""
            pos = start + n
            if opcode == TEXT or opcode == BINARY:
                if self._frag is not None:
                    raise _Fail(PROTOCOL_ERROR, "a new message inside a fragmented one")
                if b0 & 0x80:
                    self._message(self._inflate(wsdeflate.inflater(), payload, 0, True) if packed else payload,
                                  opcode == BINARY)
                elif packed:
                    inflater = wsdeflate.inflater()
                    self._frag = [opcode, bytearray(self._inflate(inflater, payload, 0, False)), inflater]
                else:
                    self._frag = [opcode, bytearray(payload)]
            elif opcode == CONT:
                frag = self._frag
                if frag is None:
                    raise _Fail(PROTOCOL_ERROR, "continuation frame without a message")
                if len(frag) == 3:
                    payload = self._inflate(frag[2], payload, len(frag[1]), b0 & 0x80)
                frag[1] += payload
                if b0 & 0x80:
                    self._frag = None
                    self._message(bytes(frag[1]), frag[0] == BINARY)
            elif opcode == PING:
                if self.state == OPEN:
                    self._out.append(frame(PONG, payload))
            elif opcode == PONG:
                if self.flags & PINGING:
                    self.flags &= ~PINGING
                    interval = self.ctx.ping_interval
                    self._ping_at = self.ctx.clock() + interval if interval else 0.0
                    self._set_deadline()
            else:
                self._close_received(payload)
            if self.state >= CLOSED:
                return end
        return pos

    def _inflate(self, inflater, payload: bytes, have: int, final) -> bytes:
        try:
            return wsdeflate.inflate(inflater, payload, self.ctx.max_message - have, bool(final))
        except wsdeflate.TooBig:
            raise _Fail(TOO_BIG, "message too big") from None
        except wsdeflate.BadData:
            raise _Fail(INVALID_DATA, "bad deflate data") from None

    def _message(self, payload: bytes, binary: bool) -> None:
        if self.state != OPEN:
            return  # after our close frame: dropped
        if not binary:
            try:
                payload.decode()
            except UnicodeDecodeError:
                raise _Fail(INVALID_DATA, "text message not UTF-8") from None
        ctx = self.ctx
        if ctx.idle_timeout:
            self._idle_at = ctx.clock() + ctx.idle_timeout
            self._set_deadline()
        handler = ctx.handler
        if handler is not None:
            try:
                handler.message(self, payload, binary)
            except Exception:
                raise _Fail(INTERNAL, "handler failed") from None

    def _close_received(self, payload: bytes) -> None:
        if len(payload) == 1:
            raise _Fail(PROTOCOL_ERROR, "bad close frame")
        code = NO_STATUS
        reason = ""
        if payload:
            code = int.from_bytes(payload[:2], "big")
            if not _valid_code(code):
                raise _Fail(PROTOCOL_ERROR, f"bad close code {code}")
            try:
                reason = payload[2:].decode()
            except UnicodeDecodeError:
                raise _Fail(INVALID_DATA, "close reason not UTF-8") from None
        if self.state == OPEN:
            self._out.append(close_frame(code))  # echo the code (none for none)
            self._leave(code, reason)
        self.state = CLOSED
        self._drop()

    def eof_received(self) -> bytes:
        """The client half-closed without a close frame."""
        if self.state < CLOSED:
            self._leave(ABNORMAL)
            self.state = CLOSED
            self._drop()
        return b""

    def connection_lost(self) -> None:
        if self.state < CLOSED:
            self._leave(ABNORMAL)
            self.state = CLOSED
        self._drop()

    def timeout(self, now: float) -> bytes:
        state = self.state
        if state == CLOSE_SENT:  # the client never answered our close
            self.state = CLOSED
            self.deadline = 0.0
            return b""
        if state != OPEN:
            return b""
        out = self._out = []
        if self.flags & GOING and self.ctx.stop_at <= now:
            self._close(self.ctx.stop_code, _REASONS.get(self.ctx.stop_code, ""))
        elif self._ping_at and self._ping_at <= now:
            if self.flags & PINGING:
                self._fail_now(INTERNAL, "keepalive ping timeout")
            else:
                out.append(frame(PING, b""))
                self.flags |= PINGING
                self._ping_at = now + self.ctx.ping_timeout
        if self.state == OPEN and self._idle_at and self._idle_at <= now:
            self._close(NORMAL, "idle timeout")
        if self.state == OPEN:
            self._set_deadline()
        self._out = None
        return b"".join(out)

    def grace(self, until: float) -> None:
        """The worker stops: close with ``ctx.stop_code`` now, or at
        ``ctx.stop_at`` (a retiring worker's connections serve on till then)."""
        if self.state != OPEN:
            return
        self.flags |= GOING
        if self.ctx.stop_at <= self.ctx.clock():
            self.close(self.ctx.stop_code, _REASONS.get(self.ctx.stop_code, ""))
        else:
            self._set_deadline()

    # --- output ------------------------------------------------------------------------------

    def send(self, payload: bytes, binary: bool = False) -> bool:
        """Send a message (text: ``payload`` is UTF-8). False if the connection
        is not open (or has just been closed for a slow reader)."""
        return self.send_frame(message_frame(payload, binary, self.pmd))

    def send_frame(self, data: bytes) -> bool:
        """Send an already built frame (a broadcast builds it once)."""
        if self.state != OPEN:
            return False
        out = self._out
        if out is not None:
            out.append(data)
            return True
        driver = self.driver
        if driver is None:
            return False
        if driver.write_blocked():
            backlog = self._backlog + len(data)
            if backlog > self.ctx.queue:
                self.ctx.overflows += 1
                self._backlog = 0
                self.close(TRY_LATER, "slow reader")
                return False
            self._backlog = backlog
        elif self._backlog:
            self._backlog = 0
        driver.deliver(data)
        return True

    def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Begin the close handshake (from outside a call, or inside one)."""
        if self.state != OPEN:
            return
        out = self._out
        if out is not None:
            self._close(code, reason)
            return
        self._out = out = []
        self._close(code, reason)
        self._out = None
        if self.driver is not None:
            self.driver.deliver(b"".join(out))

    # --- helpers -------------------------------------------------------------------------------

    def _close(self, code: int, reason: str) -> None:
        self._out.append(close_frame(code, reason))
        self._leave(code, reason)
        self.state = CLOSE_SENT
        self.deadline = self.ctx.clock() + CLOSE_TIMEOUT

    def _fail_now(self, code: int, reason: str) -> None:
        """Fail the connection (RFC 6455 7.1.7): our close frame if we may, then close."""
        if self.state == OPEN:
            self._out.append(close_frame(code, reason))
            self._leave(code, reason)
        self.state = FAILED
        self.deadline = 0.0
        self._drop()

    def _leave(self, code: int, reason: str = "") -> None:
        """Leaving OPEN: once per connection."""
        ctx = self.ctx
        ctx.open -= 1
        handler = ctx.handler
        if handler is not None:
            try:
                handler.closed(self, code, reason)
            except Exception:
                pass  # the connection is closing whatever the handler thinks

    def _drop(self) -> None:
        self._buf = None
        self._frag = None

    def _set_deadline(self) -> None:
        deadline = self._ping_at
        idle_at = self._idle_at
        if idle_at and (not deadline or idle_at < deadline):
            deadline = idle_at
        if self.flags & GOING:
            going = self.ctx.stop_at
            if not deadline or going < deadline:
                deadline = going
        self.deadline = deadline
