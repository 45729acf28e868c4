"""permessage-deflate (RFC 7692), sans-IO, server side, over the stdlib's zlib:
the client's offers parsed and one accepted (``Deflate.negotiate``), each
message compressed (``Agreement.compress``) and inflated with a bound on
its size (``inflate``). ``protocols.websocket`` sets RSV1 and frames.

Both directions without context takeover: the response always says
``server_no_context_takeover; client_no_context_takeover``, so no
compressor or inflater outlives a message and an idle connection costs
nothing more than with compression off (one pointer to an ``Agreement``,
shared by every connection that agreed the same window). A message the
server sends compresses the same for every connection of an agreement: a
broadcast compresses it once (``protocols.websocket.Shared``). The price is
the ratio on small messages (no shared history between messages).

An offer with an unknown or repeated parameter, a bad value, or
``server_max_window_bits=8`` (zlib cannot compress with a 256-byte window)
is declined: the next offer is tried, and with none left the connection
runs uncompressed. A malformed header is no offer at all, not an error.
"""

from __future__ import annotations

import re
import zlib

TAIL = b"\x00\x00\xff\xff"  # the empty stored block a sync flush ends with (RFC 7692 7.2.1)
MEM_LEVEL = 5               # the compressor's hash tables: 8 KiB (zlib's default 8: 64 KiB), as websockets
INFLATE_BITS = 15           # the inflater takes any window the client used (it lives for one message)
NAME = b"permessage-deflate"

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_OWS = re.compile(rb"[ \t]*")
_BITS = re.compile(rb"[1-9][0-9]?")


class TooBig(ValueError):
    """A message inflates past the limit."""


class BadData(ValueError):
    """A compressed message is not valid deflate data."""


def parse_extensions(value: bytes) -> list[tuple[bytes, list[tuple[bytes, bytes | None]]]]:
    """One ``Sec-WebSocket-Extensions`` value (RFC 6455 9.1): its extensions,
    each ``(name, [(param, value or None)])``, names lower-cased and quoted
    values unquoted. ValueError if it is malformed."""
    out: list = []
    pos = 0
    end = len(value)
    while True:
        pos = _OWS.match(value, pos).end()
        if pos < end and value[pos] == 44:  # an empty list element
            pos += 1
            continue
        if pos == end:
            return out
        m = _TOKEN.match(value, pos)
        if m is None:
            raise ValueError("expected an extension name")
        params: list = []
        out.append((m.group().lower(), params))
        pos = _OWS.match(value, m.end()).end()
        while pos < end and value[pos] == 59:  # ;
            pos = _OWS.match(value, pos + 1).end()
            m = _TOKEN.match(value, pos)
            if m is None:
                raise ValueError("expected a parameter name")
            name, arg = m.group().lower(), None
            pos = _OWS.match(value, m.end()).end()
            if pos < end and value[pos] == 61:  # =
                pos = _OWS.match(value, pos + 1).end()
                m = _TOKEN.match(value, pos) or _QUOTED.match(value, pos)
                if m is None:
                    raise ValueError("expected a parameter value")
                arg = m.group() if m.re is _TOKEN else re.sub(rb"\\(.)", rb"\1", m.group(1))
                pos = _OWS.match(value, m.end()).end()
            params.append((name, arg))
        if pos < end:
            if value[pos] != 44:
                raise ValueError("expected ',' or ';'")
            pos += 1


def _bits(value: bytes | None) -> int:
    """A window-bits value (8 to 15), or 0 if it is none or malformed."""
    if value is None or not _BITS.fullmatch(value):
        return 0
    bits = int(value)
    return bits if 8 <= bits <= 15 else 0


class Agreement:
    """What connections agreed (the server's window; no context takeover
    either way): its compressor, shared by them all, and the response header."""

    __slots__ = ("key", "response", "_zip")

    def __init__(self, level: int, wbits: int):
        self.key = (level, wbits)  # equal keys compress a message the same
        self.response = b"%s; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=%d" % (
            NAME, wbits)
        self._zip = zlib.compressobj(level, zlib.DEFLATED, -wbits, MEM_LEVEL)

    def compress(self, payload: bytes) -> bytes | None:
        """``payload`` deflated for one message, or None when that would not
        make it smaller (then it goes uncompressed, RSV1 clear). A full flush
        ends every message: the next one starts with no history."""
        if not payload:
            return None
        z = self._zip
        data = z.compress(payload) + z.flush(zlib.Z_FULL_FLUSH)
        if len(data) - 4 >= len(payload):
            return None
        return data[:-4]  # without TAIL (RFC 7692 7.2.1)


def inflater():
    """A new inflater for one compressed message."""
    return zlib.decompressobj(-INFLATE_BITS)


def inflate(inflater, data: bytes, room: int, final: bool) -> bytes:
    """One frame's payload of a compressed message through its ``inflater``:
    at most ``room`` bytes out, or TooBig (zlib never makes more than
    ``room + 1``: a deflate bomb stops there); BadData if it is not deflate
    data. ``final``: the message's last frame (TAIL goes after it)."""
    try:
        out = inflater.decompress(data + TAIL if final else data, room + 1)
    except zlib.error:
        raise BadData("bad deflate data") from None
    if len(out) > room:
        raise TooBig("message too big")
    return out


class Deflate:
    """A route's permessage-deflate settings (``[websocket] compression``),
    and its agreements (one per server window size)."""

    __slots__ = ("level", "wbits", "_agreed")

    def __init__(self, level: int = 6, wbits: int = 12):
        self.level = level
        self.wbits = wbits
        self._agreed: dict[int, Agreement] = {}

    def negotiate(self, headers) -> Agreement | None:
        """The first acceptable permessage-deflate offer of the request's
        ``Sec-WebSocket-Extensions`` headers, agreed; None without one."""
        for name, value in headers:
            if len(name) != 24 or name.lower() != b"sec-websocket-extensions":
                continue
            try:
                offers = parse_extensions(value)
            except ValueError:
                continue
            for ext, params in offers:
                if ext == NAME:
                    wbits = self._window(params)
                    if wbits:
                        agreed = self._agreed.get(wbits)
                        if agreed is None:
                            agreed = self._agreed[wbits] = Agreement(self.level, wbits)
                        return agreed
        return None

    def _window(self, params) -> int:
        """The server window for an offer's parameters, or 0 to decline it."""
        wbits = self.wbits
        seen = set()
        for name, value in params:
            if name in seen:
                return 0
            seen.add(name)
            if name == b"server_no_context_takeover" or name == b"client_no_context_takeover":
                if value is not None:
                    return 0
            elif name == b"server_max_window_bits":
                bits = _bits(value)
                if bits < 9:  # none, malformed, or 8
                    return 0
                wbits = min(wbits, bits)
            elif name == b"client_max_window_bits":
                if value is not None and not _bits(value):
                    return 0
            else:
                return 0
        return wbits
