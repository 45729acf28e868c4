"""The framing of bus messages between a worker and the master's relay, pure.

A frame is a 7-byte head -- the length of what follows (4 bytes), the
channel's length (2 bytes), flags (1 byte: bit 0, binary) -- then the channel
and the payload. The relay forwards frames as they are: it only needs
``complete()`` to find where the last whole frame of a read ends. Imports
nothing else of prefork.
"""
from __future__ import annotations

import struct

HEAD = struct.Struct("!IHB")
HEAD_SIZE = HEAD.size            # 7
CHANNEL_MAX = 0xFFFF
FRAME_MAX = 64 * 1024 * 1024     # a length beyond this is corruption, not a message
BINARY = 1


class FrameError(ValueError):
    """A frame that cannot be: a bad length or flags."""


def encode(channel: bytes, payload: bytes, binary: bool) -> bytes:
    """One frame; ValueError for a channel or payload too long to frame."""
    if len(channel) > CHANNEL_MAX:
        raise ValueError(f"channel of {len(channel)} bytes: at most {CHANNEL_MAX}")
    size = 3 + len(channel) + len(payload)
    if size > FRAME_MAX:
        raise ValueError(f"message of {len(payload)} bytes: at most {FRAME_MAX - 3 - len(channel)}")
    return b"".join((HEAD.pack(size, len(channel), BINARY if binary else 0), channel, payload))


def frame_end(buf: bytes | bytearray | memoryview, start: int = 0) -> int:
    """Where the frame beginning at ``start`` ends, or -1 if ``buf`` does not
    hold it whole yet. FrameError for a head no writer makes."""
    if len(buf) - start < 4:
        return -1
    size = int.from_bytes(buf[start:start + 4], "big")
    if size < 3 or size > FRAME_MAX:
        raise FrameError(f"bad bus frame length {size}")
    end = start + 4 + size
    return end if end <= len(buf) else -1


def complete(buf: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(end of the last whole frame in ``buf``, how many whole frames)."""
    pos = count = 0
    while True:
        end = frame_end(buf, pos)
        if end < 0:
            return pos, count
        pos, count = end, count + 1


class FrameReader:
    """Bytes in (as read from a stream), whole messages out."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[bytes, bytes, bool]]:
        """The messages ``data`` completes, each (channel, payload, binary).
        FrameError if the stream is corrupt."""
        buf = self._buf
        buf += data
        out = []
        pos = 0
        while True:
            end = frame_end(buf, pos)
            if end < 0:
                break
            _, clen, flags = HEAD.unpack_from(buf, pos)
            if flags & ~BINARY or HEAD_SIZE + clen > end - pos:
                raise FrameError(f"bad bus frame head (flags {flags}, channel length {clen})")
            cstart = pos + HEAD_SIZE
            out.append((bytes(buf[cstart:cstart + clen]), bytes(buf[cstart + clen:end]), bool(flags & BINARY)))
            pos = end
        if pos:
            del buf[:pos]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buf)
