"""The sans-IO WebSocket protocol (prefork/protocols/websocket.py): fed
whole, byte by byte and in pieces; every close code path; the handshake check."""

from __future__ import annotations

import base64
import os

import pytest
from testkit import client_frame

from prefork.config import WebSocketConfig
from prefork.protocols import websocket as ws
from prefork.protocols.websocket import WebSocketContext, WebSocketProtocol
from prefork.protocols.wshandshake import accept_key, check_handshake, response_101


def parse_server(data: bytes) -> list[tuple[int, bytes]]:
    """The server frames in ``data``: (opcode, payload); server frames are never masked."""
    out = []
    pos = 0
    while pos < len(data):
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & 0x80 and not b1 & 0x80
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            n = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif n == 127:
            n = int.from_bytes(data[pos:pos + 8], "big")
            pos += 8
        out.append((b0 & 0x0F, data[pos:pos + n]))
        pos += n
    return out


def close_code(frames) -> int:
    opcode, payload = frames[-1]
    assert opcode == ws.CLOSE
    return int.from_bytes(payload[:2], "big")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Handler:
    def __init__(self, echo: bool = True):
        self.echo = echo
        self.messages: list[tuple[bytes, bool]] = []
        self.codes: list[int] = []
        self.reasons: list[str] = []
        self.opens = 0

    def opened(self, conn) -> None:
        self.opens += 1

    def message(self, conn, payload, binary) -> None:
        self.messages.append((payload, binary))
        if self.echo:
            conn.send(payload, binary)

    def closed(self, conn, code, reason) -> None:
        self.codes.append(code)
        self.reasons.append(reason)


class FakeDriver:
    def __init__(self):
        self.sent = b""
        self.blocked = False

    def deliver(self, out) -> None:
        self.sent += out

    def write_blocked(self) -> bool:
        return self.blocked


def make(config: WebSocketConfig | None = None, echo: bool = True):
    clock = Clock()
    handler = Handler(echo)
    ctx = WebSocketContext(config or WebSocketConfig(ping_interval=0), handler, clock)
    proto = WebSocketProtocol(ctx, driver=FakeDriver())
    return proto, handler, clock


def feed(proto, data: bytes, step: int = 0) -> bytes:
    if not step:
        return proto.data_received(data)
    out = b""
    for i in range(0, len(data), step):
        out += proto.data_received(data[i:i + step])
    return out


SIZES = (0, 125, 126, 65535, 65536, 1 << 20)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("binary", [False, True])
def test_sizes_echo_whole(size, binary):
    proto, handler, _ = make()
    payload = (os.urandom(size) if binary else b"a" * size)
    out = feed(proto, client_frame(ws.BINARY if binary else ws.TEXT, payload))
    assert parse_server(out) == [(ws.BINARY if binary else ws.TEXT, payload)]
    assert handler.messages == [(payload, binary)]
    assert proto.state == ws.OPEN and proto._buf is None


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_sizes_in_pieces(size):
    proto, handler, _ = make()
    payload = os.urandom(size)
    data = client_frame(ws.BINARY, payload) * 2
    out = feed(proto, data, step=1 if size <= 126 else 4093)
    assert parse_server(out) == [(ws.BINARY, payload)] * 2
    assert proto._buf is None


def test_byte_by_byte_pipelined_mix():
    proto, handler, _ = make()
    data = (client_frame(ws.TEXT, "héllo".encode()) + client_frame(ws.PING, b"p1")
            + client_frame(ws.BINARY, b"\x00\x01") + client_frame(ws.TEXT, b""))
    out = feed(proto, data, step=1)
    assert parse_server(out) == [(ws.TEXT, "héllo".encode()), (ws.PONG, b"p1"), (ws.BINARY, b"\x00\x01"),
                                 (ws.TEXT, b"")]
    whole, _, _ = make()
    assert parse_server(feed(whole, data)) == parse_server(out)


def test_just_over_max_message_is_1009():
    proto, handler, _ = make()
    out = feed(proto, client_frame(ws.BINARY, b"x" * ((1 << 20) + 1)))
    assert close_code(parse_server(out)) == ws.TOO_BIG
    assert handler.messages == [] and handler.codes == [ws.TOO_BIG] and proto.closing and proto.linger


def test_max_message_checked_from_the_header_before_the_payload():
    proto, handler, _ = make(WebSocketConfig(max_message=1000, ping_interval=0))
    head = client_frame(ws.BINARY, b"", length=1001)[:4]  # 126-length header only
    out = feed(proto, head)
    assert close_code(parse_server(out)) == ws.TOO_BIG and proto._buf is None


def test_fragmented_with_interleaved_control_frames():
    proto, handler, _ = make()
    data = (client_frame(ws.TEXT, b"one ", fin=False) + client_frame(ws.PING, b"a")
            + client_frame(ws.CONT, b"two ", fin=False) + client_frame(ws.PONG, b"")
            + client_frame(ws.CONT, b"three", fin=True))
    for step in (0, 1, 3):
        proto, handler, _ = make()
        out = feed(proto, data, step)
        assert parse_server(out) == [(ws.PONG, b"a"), (ws.TEXT, b"one two three")]
        assert handler.messages == [(b"one two three", False)]


def test_fragmented_total_past_max_message():
    proto, handler, _ = make(WebSocketConfig(max_message=10, ping_interval=0))
    out = feed(proto, client_frame(ws.BINARY, b"x" * 6, fin=False) + client_frame(ws.CONT, b"y" * 6))
    assert close_code(parse_server(out)) == ws.TOO_BIG


@pytest.mark.parametrize("data, code", [
    (client_frame(ws.TEXT, b"\xff\xfe"), ws.INVALID_DATA),
    (client_frame(ws.TEXT, "é".encode()[:1]), ws.INVALID_DATA),
    (client_frame(ws.TEXT, b"\xce", fin=False) + client_frame(ws.CONT, b"\xba\xff"), ws.INVALID_DATA),
    (client_frame(ws.TEXT, b"hi", mask=False), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"hi", rsv=0x40), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"hi", rsv=0x10), ws.PROTOCOL_ERROR),
    (client_frame(0x3, b"hi"), ws.PROTOCOL_ERROR),
    (client_frame(0xB, b"hi"), ws.PROTOCOL_ERROR),
    (client_frame(ws.CONT, b"hi"), ws.PROTOCOL_ERROR),
    (client_frame(ws.TEXT, b"a", fin=False) + client_frame(ws.TEXT, b"b"), ws.PROTOCOL_ERROR),
    (client_frame(ws.PING, b"x" * 126), ws.PROTOCOL_ERROR),
    (client_frame(ws.PING, b"x", fin=False), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, b"\x03"), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, (999).to_bytes(2, "big")), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, (1005).to_bytes(2, "big")), ws.PROTOCOL_ERROR),
    (client_frame(ws.CLOSE, (1000).to_bytes(2, "big") + b"\xff"), ws.INVALID_DATA),
], ids=["bad-utf8", "cut-utf8", "bad-utf8-fragmented", "unmasked", "rsv1", "rsv3", "opcode-3", "opcode-11",
        "lost-continuation", "new-inside-fragmented", "long-ping", "fragmented-ping", "close-1-byte",
        "close-999", "close-1005", "close-reason-utf8"])
def test_failures_close_with_their_code(data, code):
    for step in (0, 1):
        proto, handler, _ = make()
        out = feed(proto, client_frame(ws.TEXT, b"ok") + data, step)
        frames = parse_server(out)
        assert frames[0] == (ws.TEXT, b"ok")
        assert close_code(frames) == code
        assert proto.closing and proto.linger and handler.codes == [code]
        assert proto.data_received(client_frame(ws.TEXT, b"more")) == b""  # nothing after


def test_client_close_is_echoed():
    proto, handler, _ = make()
    out = feed(proto, client_frame(ws.CLOSE, (4001).to_bytes(2, "big") + "bye".encode()))
    assert parse_server(out) == [(ws.CLOSE, (4001).to_bytes(2, "big"))]
    assert proto.closing and not proto.linger and handler.codes == [4001]
    proto2, handler2, _ = make()
    assert parse_server(feed(proto2, client_frame(ws.CLOSE, b""))) == [(ws.CLOSE, b"")]
    assert handler2.codes == [ws.NO_STATUS]


def test_server_close_waits_for_the_client_then_times_out():
    proto, handler, clock = make()
    proto.close(ws.NORMAL, "done")
    assert close_code(parse_server(proto.driver.sent)) == ws.NORMAL
    assert proto.state == ws.CLOSE_SENT and not proto.closing
    assert proto.send(b"late") is False
    assert feed(proto, client_frame(ws.TEXT, b"dropped")) == b""
    assert handler.messages == []
    clock.now = proto.deadline
    proto.timeout(clock.now)
    assert proto.closing
    proto2, _, _ = make()
    proto2.close()
    assert feed(proto2, client_frame(ws.CLOSE, (1000).to_bytes(2, "big"))) == b"" and proto2.closing


def test_ping_interval_and_pong_timeout():
    proto, handler, clock = make(WebSocketConfig(ping_interval=10, ping_timeout=5))
    assert proto.deadline == clock.now + 10
    clock.now += 10
    assert parse_server(proto.timeout(clock.now)) == [(ws.PING, b"")]
    assert proto.deadline == clock.now + 5
    feed(proto, client_frame(ws.PONG, b""))
    assert proto.deadline == clock.now + 10
    clock.now += 10
    proto.timeout(clock.now)
    clock.now += 5
    out = proto.timeout(clock.now)
    assert close_code(parse_server(out)) == ws.INTERNAL and proto.closing and handler.codes == [ws.INTERNAL]


def test_idle_timeout_counts_messages():
    proto, handler, clock = make(WebSocketConfig(ping_interval=0, idle_timeout=30))
    clock.now += 20
    feed(proto, client_frame(ws.TEXT, b"x"))
    assert proto.deadline == clock.now + 30
    clock.now += 30
    out = proto.timeout(clock.now)
    assert close_code(parse_server(out)) == ws.NORMAL and proto.state == ws.CLOSE_SENT


def test_slow_reader_queue_bound_closes_1013_and_counts():
    proto, handler, _ = make(WebSocketConfig(ping_interval=0, queue=1000))
    driver = proto.driver
    assert proto.send(b"a" * 600, True)
    driver.blocked = True
    assert proto.send(b"a" * 600, True)  # 602 bytes past high water: within the queue
    assert not proto.send(b"a" * 600, True)  # 1204: past it
    frames = parse_server(driver.sent)
    assert close_code(frames) == ws.TRY_LATER and len(frames) == 3
    assert proto.ctx.overflows == 1 and handler.codes == [ws.TRY_LATER]
    assert not proto.send(b"x")


def test_backlog_resets_once_drained():
    proto, _, _ = make(WebSocketConfig(ping_interval=0, queue=1000))
    proto.driver.blocked = True
    assert proto.send(b"a" * 900, True)
    proto.driver.blocked = False
    assert proto.send(b"a" * 900, True)
    proto.driver.blocked = True
    assert proto.send(b"a" * 900, True)
    assert proto.ctx.overflows == 0


def test_grace_closes_1001_now_or_1012_at_stop_at():
    proto, handler, clock = make()
    proto.grace(clock.now + 1)
    assert close_code(parse_server(proto.driver.sent)) == ws.GOING_AWAY and handler.codes == [ws.GOING_AWAY]
    proto, handler, clock = make()
    proto.ctx.stop_code, proto.ctx.stop_at = ws.RESTART, clock.now + 25
    proto.grace(clock.now + 1)
    assert proto.driver.sent == b"" and proto.deadline == clock.now + 25
    clock.now += 25
    assert close_code(parse_server(proto.timeout(clock.now))) == ws.RESTART


def test_eof_and_lost_tell_the_handler_1006_once():
    proto, handler, _ = make()
    proto.eof_received()
    proto.connection_lost()
    assert handler.codes == [ws.ABNORMAL] and proto.closing and proto.ctx.open == 0


def test_handler_error_is_1011():
    class Broken(Handler):
        def message(self, conn, payload, binary):
            raise RuntimeError("boom")

    ctx = WebSocketContext(WebSocketConfig(ping_interval=0), Broken(), Clock())
    proto = WebSocketProtocol(ctx, driver=FakeDriver())
    assert close_code(parse_server(proto.data_received(client_frame(ws.TEXT, b"x")))) == ws.INTERNAL


def test_idle_connection_holds_no_buffer():
    proto, _, _ = make()
    feed(proto, client_frame(ws.TEXT, b"x" * 200), step=7)
    assert proto._buf is None and proto._frag is None and proto._out is None
    assert not hasattr(proto, "__dict__")


# --- the handshake -------------------------------------------------------------------------

KEY = base64.b64encode(b"0123456789abcdef")
GOOD = [(b"Host", b"x"), (b"Upgrade", b"websocket"), (b"Connection", b"keep-alive, Upgrade"),
        (b"Sec-WebSocket-Key", KEY), (b"Sec-WebSocket-Version", b"13")]


def test_handshake_accepts_and_computes_the_rfc_example():
    assert check_handshake(b"GET", GOOD) == (101, KEY)
    # RFC 6455 1.3's example
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    head = response_101(b"dGhlIHNhbXBsZSBub25jZQ==", [(b"Sec-WebSocket-Protocol", b"chat")])
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n") and head.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
    assert b"Sec-WebSocket-Protocol: chat\r\n" in head


def _replace(name: bytes, value: bytes | None):
    return [(n, value) for n, v in GOOD if n == name and value is not None] + [(n, v) for n, v in GOOD if n != name]


@pytest.mark.parametrize("headers, status, extra", [
    (_replace(b"Sec-WebSocket-Key", None), 400, None),
    (_replace(b"Sec-WebSocket-Key", b"not base64!"), 400, None),
    (_replace(b"Sec-WebSocket-Key", base64.b64encode(b"short")), 400, None),
    (_replace(b"Sec-WebSocket-Version", b"8"), 426, (b"Sec-WebSocket-Version", b"13")),
    (_replace(b"Sec-WebSocket-Version", None), 426, (b"Sec-WebSocket-Version", b"13")),
    (_replace(b"Upgrade", b"h2c"), 426, (b"Upgrade", b"websocket")),
    (_replace(b"Connection", b"keep-alive"), 426, (b"Upgrade", b"websocket")),
])
def test_handshake_refusals(headers, status, extra):
    got, headers_out = check_handshake(b"GET", headers)
    assert got == status
    if extra:
        assert extra in headers_out


def test_handshake_method_and_origin():
    assert check_handshake(b"POST", GOOD)[0] == 400
    origins = ("https://good.example",)
    assert check_handshake(b"GET", GOOD, origins)[0] == 403
    assert check_handshake(b"GET", GOOD + [(b"Origin", b"https://evil.example")], origins)[0] == 403
    assert check_handshake(b"GET", GOOD + [(b"Origin", b"HTTPS://Good.Example")], origins)[0] == 101


# --- prefork-bench's pure parts: wsframing's candidates, wsidle's config ----------------------


@pytest.mark.parametrize("name", ["wsproto", "websockets", "own", "prefork"])
def test_wsframing_candidates_echo(name):
    from prefork_bench import wsproto_bench

    assert wsproto_bench.cpu_per_message(name, b"x" * 1024, ws.BINARY, 10) > 0  # asserts the echo inside
    assert wsproto_bench.bytes_per_idle(name, 20) > 0


def test_wsidle_config_is_valid(tmp_path):
    import tomllib

    from prefork.config import from_dict
    from prefork_bench.wsidle import config

    cfg = from_dict(tomllib.loads(config(8080, 10_000, 20.0, tmp_path / "e.log")))
    assert cfg.server.worker_connections > 10_000 and cfg.websocket.ping_interval == 20.0
    assert [r.handler for r in cfg.routes] == ["pubsub", "publish", "plaintext"]
    assert cfg.websocket.compression == "off"
    cfg = from_dict(tomllib.loads(config(8080, 10, 0, tmp_path / "e.log", "deflate")))
    assert cfg.websocket.compression == "deflate"
