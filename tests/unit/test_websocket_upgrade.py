"""The upgrade from HTTP, sans-IO: the HTTP protocol hands a WebSocket
handshake to a websocket route, which switches the driver to the WebSocket
protocol; bytes after the head are the new protocol's, fed whole or byte by byte."""

from __future__ import annotations

import base64

from prefork.apps import AppContext, build_router
from prefork.config import from_dict
from prefork.dispatch import HttpServerContext, HttpServerProtocol
from prefork.protocols.http import UPGRADED
from prefork.protocols.websocket import WebSocketProtocol

from test_websocket import client_frame, parse_server

KEY = base64.b64encode(b"0123456789abcdef")
HANDSHAKE = (b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Key: " + KEY + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


class FakeDriver:
    def __init__(self, proto):
        self.proto = proto
        proto.driver = self
        self.sent = b""

    def switch(self, proto) -> None:
        self.proto = proto
        proto.driver = self

    def deliver(self, out) -> None:
        self.sent += out

    def write_blocked(self) -> bool:
        return False

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def hold(self) -> None:
        pass


def connection():
    config = from_dict({"listen": [{"address": "127.0.0.1:1"}],
                        "route": [{"path": "/echo", "handler": "websocket_echo"},
                                  {"path": "/plaintext", "handler": "plaintext"}]})
    app = AppContext(config)
    ctx = HttpServerContext(config.http, build_router(config, app))
    proto = HttpServerProtocol(ctx, ("127.0.0.1", 5000))
    return FakeDriver(proto), app


def test_upgrade_then_frames_in_the_same_read():
    driver, app = connection()
    http = driver.proto
    out = http.data_received(HANDSHAKE + client_frame(1, b"hello") + client_frame(2, b"\x00"))
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols")
    assert parse_server(rest) == [(1, b"hello"), (2, b"\x00")]
    assert http.state == UPGRADED and http.deadline == 0.0 and not http.closing
    assert type(driver.proto) is WebSocketProtocol and app.websockets[0].open == 1


def test_upgrade_byte_by_byte():
    driver, _ = connection()
    data = HANDSHAKE + client_frame(1, b"hi")
    out = b""
    for i in range(len(data)):
        out += driver.proto.data_received(data[i:i + 1])
    head, _, rest = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and parse_server(rest) == [(1, b"hi")]


def test_upgrade_behind_a_pipelined_request():
    driver, _ = connection()
    out = driver.proto.data_received(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n" + HANDSHAKE)
    assert out.count(b"HTTP/1.1 200") == 1 and b"HTTP/1.1 101" in out
    assert type(driver.proto) is WebSocketProtocol


def test_refusal_keeps_http():
    driver, _ = connection()
    out = driver.proto.data_received(HANDSHAKE.replace(b"Version: 13", b"Version: 7")
                                     + b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 426") and b"Sec-WebSocket-Version: 13" in out
    assert b"HTTP/1.1 200" in out and type(driver.proto) is HttpServerProtocol
