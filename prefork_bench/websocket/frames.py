"""The client's side of RFC 6455, as little of it as the bench needs: the
opening handshake, masked frames out (pongs, a publisher's messages, close),
unmasked frames in, and the bench's message payload (a sequence number and
the publish time). Pure: no sockets.
"""

from __future__ import annotations

import base64
import os
import struct

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
KEY = base64.b64encode(b"prefork-bench-ws").decode()   # the server's answer is not checked: it costs nothing


class FrameError(ValueError):
    """What the server sent is not a frame a server may send."""


def handshake(host: str, path: str) -> bytes:
    return (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()


def handshake_status(head: bytes) -> int:
    """The status code of a response head (``b"HTTP/1.1 101 ..."``), 0 when unreadable."""
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def mask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``key`` (its own inverse)."""
    n = len(payload)
    if not n:
        return b""
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, key: bytes | None = None) -> bytes:
    """One final, masked frame, as a client must send it."""
    key = os.urandom(4) if key is None else key
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + key + mask(payload, key)


def close_frame(code: int = 1000) -> bytes:
    return client_frame(CLOSE, struct.pack("!H", code))


def parse_frame(buf: bytes, at: int = 0) -> tuple[int, bytes, int] | None:
    """The server frame at ``buf[at:]``: (opcode, payload, where the next one
    starts), or None when it is not all there yet. Masked, fragmented or
    reserved-bit frames raise ``FrameError`` (the bench's messages are small
    and a server sends them whole)."""
    end = len(buf)
    if end - at < 2:
        return None
    b0, b1 = buf[at], buf[at + 1]
    if b0 & 0x70 or b1 & 0x80:
        raise FrameError("reserved bits or a masked frame from the server")
    opcode = b0 & 0x0F
    if not b0 & 0x80 or opcode == 0:
        raise FrameError("a fragmented message")
    n = b1 & 0x7F
    start = at + 2
    if n == 126:
        if end - start < 2:
            return None
        n = int.from_bytes(buf[start:start + 2], "big")
        start += 2
    elif n == 127:
        if end - start < 8:
            return None
        n = int.from_bytes(buf[start:start + 8], "big")
        start += 8
    if end - start < n:
        return None
    return opcode, buf[start:start + n], start + n


def message(seq: int, sent: float, size: int = 0) -> bytes:
    """The bench's message: ``"<seq> <sent>"`` (time.monotonic(), which every
    process of the machine shares), padded with ``.`` to ``size`` bytes."""
    text = b"%d %.6f " % (seq, sent)
    return text + b"." * (size - len(text)) if size > len(text) else text


def message_seq(payload: bytes) -> int:
    """The sequence number of a message, -1 when it is not one of the bench's."""
    head = payload[:payload.find(b" ")]
    return int(head) if head.isdigit() else -1


def message_sent(payload: bytes) -> float:
    return float(payload.split(b" ", 2)[1])
