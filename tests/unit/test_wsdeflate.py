"""permessage-deflate (prefork/protocols/wsdeflate.py and its use by the
sans-IO WebSocket protocol): the offer parser and the negotiation, the
compressor and the bounded inflater, and compressed messages fed to the
protocol whole, byte by byte and in fragments; RSV1 where it may not be."""

from __future__ import annotations

import os
import tracemalloc
import zlib

import pytest
from test_websocket import Clock, FakeDriver, Handler, close_code, feed
from testkit import client_frame

from prefork.config import WebSocketConfig
from prefork.protocols import websocket as ws
from prefork.apps.websocket import Hub
from prefork.protocols import wsdeflate
from prefork.protocols.websocket import Shared, WebSocketContext, WebSocketProtocol
from prefork.protocols.wsdeflate import Deflate, parse_extensions
from prefork.protocols.wshandshake import agree, response_101
from prefork.pubsub import LoopbackBus

RSV1 = 0x40


def offer(*values: bytes):
    return Deflate().negotiate([(b"Sec-WebSocket-Extensions", v) for v in values])


def frames_with_rsv(data: bytes) -> list[tuple[int, bool, bytes]]:
    """Server frames: (opcode, RSV1, payload)."""
    out = []
    pos = 0
    while pos < len(data):
        b0, n = data[pos], data[pos + 1] & 0x7F
        pos += 2
        if n == 126:
            n, pos = int.from_bytes(data[pos:pos + 2], "big"), pos + 2
        elif n == 127:
            n, pos = int.from_bytes(data[pos:pos + 8], "big"), pos + 8
        out.append((b0 & 0x0F, bool(b0 & RSV1), data[pos:pos + n]))
        pos += n
    return out


def unpack(payload: bytes) -> bytes:
    """What a client does with a compressed message (server_no_context_takeover: a new inflater each)."""
    return zlib.decompressobj(-15).decompress(payload + wsdeflate.TAIL)


def client_deflate(*parts: bytes) -> list[bytes]:
    """A client's compressed message in fragments (one compressor, a sync flush per frame, as websockets)."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = [z.compress(p) + z.flush(zlib.Z_SYNC_FLUSH) for p in parts]
    assert out[-1].endswith(wsdeflate.TAIL)
    out[-1] = out[-1][:-4]
    return out


def make(max_message: int = 1 << 20, compression: str = "deflate"):
    handler = Handler()
    ctx = WebSocketContext(WebSocketConfig(ping_interval=0, max_message=max_message, compression=compression),
                           handler, Clock())
    pmd = agree(ctx.deflate, [(b"sec-websocket-extensions", b"permessage-deflate; client_max_window_bits")])
    return WebSocketProtocol(ctx, driver=FakeDriver(), pmd=pmd), handler


# --- the header and the negotiation -------------------------------------------------------


def test_parse_extensions():
    assert parse_extensions(b"permessage-deflate; client_max_window_bits, permessage-deflate") == [
        (b"permessage-deflate", [(b"client_max_window_bits", None)]), (b"permessage-deflate", [])]
    assert parse_extensions(b' , Foo ;A = 1;b="1\\0" ,, x-webkit ') == [
        (b"foo", [(b"a", b"1"), (b"b", b"10")]), (b"x-webkit", [])]
    assert parse_extensions(b"") == []
    for bad in (b"a;", b"a;=1", b"a b", b"a;b=", b'a;b="1', b"a;b=1 2", b"@"):
        with pytest.raises(ValueError):
            parse_extensions(bad)


@pytest.mark.parametrize("values, wbits", [
    ((b"permessage-deflate",), 12),
    ((b"permessage-deflate; client_max_window_bits",), 12),  # what the websockets client offers
    ((b"permessage-deflate; client_max_window_bits=9; server_no_context_takeover; client_no_context_takeover",), 12),
    ((b'permessage-deflate; server_max_window_bits="10"',), 10),
    ((b"permessage-deflate; server_max_window_bits=15",), 12),
    ((b"permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=9",), 9),
    ((b"x-other, permessage-deflate; foo=1", b"Permessage-Deflate; server_max_window_bits=11"), 11),
    ((b"permessage-deflate; foo",), 0),                                   # unknown parameter
    ((b"permessage-deflate; server_no_context_takeover=1",), 0),          # a value where none may be
    ((b"permessage-deflate; client_max_window_bits=16",), 0),
    ((b"permessage-deflate; client_max_window_bits=09",), 0),
    ((b"permessage-deflate; server_max_window_bits",), 0),                # a value needed
    ((b"permessage-deflate; server_max_window_bits=8",), 0),              # zlib cannot
    ((b"permessage-deflate; client_max_window_bits; client_max_window_bits",), 0),  # twice
    ((b"permessage-deflate; a;",), 0),                                    # malformed: no offer
    ((b"permessage-deflate; a;", b"permessage-deflate"), 12),             # ...but the next header counts
    ((b"x-webkit-deflate-frame",), 0),
    ((), 0),
])
def test_negotiation(values, wbits):
    agreed = offer(*values)
    if not wbits:
        assert agreed is None
        return
    assert agreed.key == (6, wbits)
    assert agreed.response == (b"permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
                               b"server_max_window_bits=%d" % wbits)


def test_agreements_are_shared_and_off_agrees_nothing():
    deflate = Deflate(level=1, wbits=10)
    headers = [(b"Sec-WebSocket-Extensions", b"permessage-deflate")]
    assert deflate.negotiate(headers) is deflate.negotiate(headers)
    assert agree(None, headers) is None
    assert WebSocketContext(WebSocketConfig()).deflate is None  # off by default
    head = response_101(b"dGhlIHNhbXBsZSBub25jZQ==", (), deflate.negotiate(headers))
    assert b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; " in head
    assert head.endswith(b"server_max_window_bits=10\r\n\r\n")


# --- the compressor and the inflater ---------------------------------------------------------


def test_each_message_compresses_alone():
    agreed = offer(b"permessage-deflate")
    messages = [b"the same words again and again " * 20, b"the same words again and again " * 21, b"x" * 100000]
    packed = [agreed.compress(m) for m in messages]
    assert [unpack(p) for p in packed] == messages  # each with a fresh inflater: no history shared
    assert all(len(p) < len(m) for p, m in zip(packed, messages))
    assert agreed.compress(messages[0]) == packed[0]  # the same bytes every time (a broadcast shares them)


def test_compression_that_does_not_pay_is_skipped():
    agreed = offer(b"permessage-deflate")
    assert agreed.compress(b"") is None and agreed.compress(b"hi") is None
    assert agreed.compress(os.urandom(1000)) is None
    proto, _ = make()
    assert frames_with_rsv(ws.message_frame(b"hi", False, proto.pmd)) == [(ws.TEXT, False, b"hi")]


def test_inflate_stops_a_bomb_at_the_limit():
    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    data = bomb.compress(b"\0" * (50 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    assert len(data) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(wsdeflate.TooBig):
            wsdeflate.inflate(wsdeflate.inflater(), data[:-4], 1 << 20, True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3 << 20  # never the 50 MiB it would inflate to
    assert wsdeflate.inflate(wsdeflate.inflater(), client_deflate(b"a" * 1000)[0], 1000, True) == b"a" * 1000
    with pytest.raises(wsdeflate.TooBig):
        wsdeflate.inflate(wsdeflate.inflater(), client_deflate(b"a" * 1000)[0], 999, True)
    with pytest.raises(wsdeflate.BadData):
        wsdeflate.inflate(wsdeflate.inflater(), b"\xff\xff\xff\xff", 1000, True)


def test_inflate_byte_by_byte():
    payload = b"byte by byte, " * 300
    packed = client_deflate(payload)[0]
    inflater = wsdeflate.inflater()
    out = b"".join(wsdeflate.inflate(inflater, packed[i:i + 1], 1 << 20, False) for i in range(len(packed)))
    out += wsdeflate.inflate(inflater, b"", 1 << 20, True)
    assert out == payload


# --- the protocol with permessage-deflate --------------------------------------------------------


@pytest.mark.parametrize("step", [0, 1, 7])
def test_compressed_messages_in_and_out(step):
    proto, handler = make()
    text = "compressed é text, " * 50
    data = (client_frame(ws.TEXT, client_deflate(text.encode())[0], rsv=RSV1) + client_frame(ws.PING, b"p")
            + client_frame(ws.BINARY, b"plain too") + client_frame(ws.BINARY, client_deflate(b"")[0], rsv=RSV1))
    out = frames_with_rsv(feed(proto, data, step))
    assert handler.messages == [(text.encode(), False), (b"plain too", True), (b"", True)]
    assert out[0][:2] == (ws.TEXT, True) and unpack(out[0][2]) == text.encode()  # the echo: compressed
    assert out[1:] == [(ws.PONG, False, b"p"), (ws.BINARY, False, b"plain too"), (ws.BINARY, False, b"")]
    assert proto.state == ws.OPEN and proto._buf is None and proto._frag is None


@pytest.mark.parametrize("step", [0, 1, 5])
def test_fragmented_compressed_message_with_a_ping_between(step):
    proto, handler = make()
    parts = [b"first part, " * 40, b"second part, " * 40, b"", b"last"]
    packed = client_deflate(*parts)
    data = client_frame(ws.BINARY, packed[0], fin=False, rsv=RSV1) + client_frame(ws.PING, b"mid")
    data += b"".join(client_frame(ws.CONT, p, fin=i == len(packed) - 2) for i, p in enumerate(packed[1:]))
    out = frames_with_rsv(feed(proto, data, step))
    assert handler.messages == [(b"".join(parts), True)]
    assert out[0] == (ws.PONG, False, b"mid") and unpack(out[1][2]) == b"".join(parts)
    assert proto._frag is None


@pytest.mark.parametrize("frame, code", [
    (client_frame(ws.PING, b"", rsv=RSV1), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, b"\x03\xe8", rsv=RSV1), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"x", rsv=0x20), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"x", rsv=RSV1 | 0x10), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"\xff\xff\xff\xff", rsv=RSV1), ws.INVALID_DATA),
    (client_frame(ws.TEXT, client_deflate(b"\xff\xfe")[0], rsv=RSV1), ws.INVALID_DATA),  # not UTF-8
], ids=["ping", "close", "rsv2", "rsv1+rsv3", "bad-deflate", "bad-utf8"])
def test_reserved_bits_and_bad_data_fail(frame, code):
    proto, handler = make()
    out = frames_with_rsv(feed(proto, frame))
    assert close_code([(o, p) for o, _, p in out]) == code and proto.closing


def test_rsv1_on_a_continuation_is_1002():
    proto, _ = make()
    packed = client_deflate(b"one", b"two")
    data = client_frame(ws.TEXT, packed[0], fin=False, rsv=RSV1) + client_frame(ws.CONT, packed[1], rsv=RSV1)
    assert close_code([(o, p) for o, _, p in frames_with_rsv(feed(proto, data))]) == ws.PROTOCOL_ERROR


def test_rsv1_without_the_extension_is_1002():
    proto, _ = make(compression="off")
    assert proto.pmd is None
    out = frames_with_rsv(feed(proto, client_frame(ws.TEXT, client_deflate(b"hello")[0], rsv=RSV1)))
    assert close_code([(o, p) for o, _, p in out]) == ws.PROTOCOL_ERROR


@pytest.mark.parametrize("parts", [1, 3])
def test_deflate_bomb_is_1009_on_the_inflated_size(parts):
    proto, handler = make(max_message=1000)
    packed = client_deflate(*[b"\0" * 1_000_000] * parts)
    assert sum(map(len, packed)) < 5000  # small on the wire
    data = b"".join(client_frame(ws.CONT if i else ws.BINARY, p, fin=i == len(packed) - 1, rsv=0 if i else RSV1)
                    for i, p in enumerate(packed))
    out = frames_with_rsv(feed(proto, data))
    assert close_code([(o, p) for o, _, p in out]) == ws.TOO_BIG and handler.messages == []


def test_the_limit_counts_inflated_bytes():
    proto, handler = make(max_message=1000)
    feed(proto, client_frame(ws.BINARY, client_deflate(b"a" * 1000)[0], rsv=RSV1))
    assert handler.messages == [(b"a" * 1000, True)]
    packed = client_deflate(b"a" * 600, b"b" * 401)
    out = feed(proto, client_frame(ws.BINARY, packed[0], fin=False, rsv=RSV1) + client_frame(ws.CONT, packed[1]))
    assert close_code([(o, p) for o, _, p in frames_with_rsv(out)]) == ws.TOO_BIG
    # incompressible data a little bigger compressed than the limit still fits
    proto, handler = make(max_message=1000)
    payload = os.urandom(1000)
    packed = client_deflate(payload)[0]
    assert len(packed) > 1000
    feed(proto, client_frame(ws.BINARY, packed, rsv=RSV1))
    assert handler.messages == [(payload, True)]


def test_broadcast_compresses_once_per_agreement():
    a, _ = make()
    b, _ = make()
    plain, _ = make(compression="off")
    shared = Shared(b"news for everyone, " * 30, False)
    assert a.pmd.key == b.pmd.key and a.pmd is not b.pmd  # two routes' contexts, the same parameters
    assert shared.frame_for(a.pmd) is shared.frame_for(b.pmd)
    assert shared.frame_for(plain.pmd) is shared.plain
    opcode, rsv1, payload = frames_with_rsv(shared.frame_for(a.pmd))[0]
    assert (opcode, rsv1) == (ws.TEXT, True) and unpack(payload) == b"news for everyone, " * 30


def test_close_reason_reaches_the_handler():
    proto, handler = make()
    feed(proto, client_frame(ws.CLOSE, (4001).to_bytes(2, "big") + "bye é".encode()))
    assert handler.codes == [4001] and handler.reasons == ["bye é"]


class Recording(FakeDriver):
    def __init__(self):
        super().__init__()
        self.items: list[bytes] = []

    def deliver(self, out) -> None:
        self.items.append(out)


def test_pubsub_broadcast_compresses_once():
    hub = Hub(LoopbackBus())
    conns = []
    for compression in ("deflate", "deflate", "off"):
        proto, _ = make(compression=compression)
        proto.driver = Recording()
        proto.tag = b"room"
        hub.opened(proto)
        conns.append(proto)
    message = b"a message for every subscriber, " * 20
    hub.publish(b"room", message, True)
    first, second, plain = (c.driver.items for c in conns)
    assert first[0] is second[0]  # one compressed frame for both
    assert frames_with_rsv(first[0])[0][:2] == (ws.BINARY, True) and unpack(frames_with_rsv(first[0])[0][2]) == message
    assert frames_with_rsv(plain[0]) == [(ws.BINARY, False, message)]
    assert hub.delivered == 3
