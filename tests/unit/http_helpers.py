"""Helpers for the sans-IO HTTP tests (tests/unit/test_http_protocol.py,
test_http_framing.py, test_bounded.py): a fake clock, a tiny response parser,
request builders, feeders (whole, byte by byte, split) and the response checks."""

from __future__ import annotations

import dataclasses
import re

from prefork.apps.builtin import default_routes
from prefork.config import HttpConfig
from prefork.dispatch import HttpServerContext, HttpServerProtocol
from prefork.messages import Request, Response


PLAINTEXT_BODY = b"Hello, World!"
JSON_BODY = b'{"message":"Hello, World!"}'


# --- helpers ------------------------------------------------------------------


class RecordingDriver:
    """A driver for in-process tests of an app adapter (ASGI, WSGI): what the
    protocol delivers is kept in ``out``; pause/resume and aborts are noted.
    Subclasses add the adapter's flow control and ``hold``."""

    def __init__(self):
        self.out = bytearray()
        self.proto = None
        self.paused = False
        self.closed = False

    def deliver(self, out):
        if self.closed:
            return
        if out:
            self.out += out if type(out) is bytes else b"".join(out)
        if self.proto.closing:
            self.closed = True

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False

    def abort(self):
        self.closed = True
        self.proto.connection_lost()


class Clock:
    """A fake monotonic clock: call it for the time, set ``now`` to move it."""

    def __init__(self, now: float = 1000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


class Resp:
    __slots__ = ("status", "reason", "headers", "raw_headers", "body")

    def __init__(self, status, reason, headers, raw_headers, body):
        self.status = status
        self.reason = reason
        self.headers = headers          # lower-cased name -> value (str)
        self.raw_headers = raw_headers  # [(name, value)] in order, as sent
        self.body = body

    def __repr__(self):
        return f"Resp({self.status}, {self.headers!r}, {self.body[:60]!r})"


def parse_responses(data: bytes, head_only=()) -> list[Resp]:
    """Split ``data`` into complete responses using Content-Length.

    ``head_only`` is a set of response indexes (final responses, 1xx not
    counted) that answer HEAD and so carry no body. Fails on trailing bytes or
    a truncated response, so the output must be exactly whole responses.
    """
    out = []
    final_index = 0
    rest = data
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head[:200]!r}"
        lines = head.decode("latin-1").split("\r\n")
        m = re.fullmatch(r"HTTP/1\.1 (\d{3}) (.*)", lines[0])
        assert m, f"bad status line {lines[0]!r}"
        status = int(m.group(1))
        headers: dict[str, str] = {}
        raw = []
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            assert colon and name and name == name.strip(), f"bad header line {line!r}"
            assert name.lower() not in headers, f"duplicate header {name!r} in {head!r}"
            headers[name.lower()] = value.strip()
            raw.append((name, value.strip()))
        if 100 <= status < 200:
            assert "content-length" not in headers
            out.append(Resp(status, m.group(2), headers, raw, b""))
            continue
        length = int(headers["content-length"])
        if final_index in head_only:
            body = b""
        else:
            assert len(rest) >= length, f"truncated body: want {length}, have {len(rest)}"
            body, rest = rest[:length], rest[length:]
        out.append(Resp(status, m.group(2), headers, raw, body))
        final_index += 1
    return out


def statuses(responses: list[Resp]) -> list[int]:
    return [r.status for r in responses]


def make_ctx(clock=None, routes=None, **limits) -> HttpServerContext:
    config = dataclasses.replace(HttpConfig(), **limits)
    if routes is None:
        routes = default_routes()
    if clock is None:
        return HttpServerContext(config, routes)
    return HttpServerContext(config, routes, clock=clock)


def make_proto(clock=None, routes=None, **limits) -> HttpServerProtocol:
    return HttpServerProtocol(make_ctx(clock, routes, **limits), peer=("127.0.0.1", 12345))


def feed_whole(proto, data: bytes) -> bytes:
    return proto.data_received(data)


def feed_bytewise(proto, data: bytes) -> bytes:
    out = []
    for i in range(len(data)):
        chunk = proto.data_received(data[i:i + 1])
        assert isinstance(chunk, bytes)
        out.append(chunk)
    return b"".join(out)


def feed_split(proto, data: bytes, positions) -> bytes:
    out = []
    prev = 0
    for pos in list(positions) + [len(data)]:
        out.append(proto.data_received(data[prev:pos]))
        prev = pos
    return b"".join(out)


FEEDERS = {"whole": feed_whole, "bytewise": feed_bytewise}


def get(path: bytes = b"/plaintext", version: bytes = b"1.1", headers: bytes = b"",
        method: bytes = b"GET", host: bool = True) -> bytes:
    return (method + b" " + path + b" HTTP/" + version + b"\r\n"
            + (b"Host: example.com\r\n" if host else b"") + headers + b"\r\n")


def post(body: bytes, path: bytes = b"/plaintext", headers: bytes = b"") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n" % len(body)
            + headers + b"\r\n" + body)


def chunked(chunks: list[bytes], path: bytes = b"/plaintext", headers: bytes = b"") -> bytes:
    out = b"POST " + path + b" HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n" + headers + b"\r\n"
    for c in chunks:
        out += b"%x\r\n" % len(c) + c + b"\r\n"
    return out + b"0\r\n\r\n"


def assert_plaintext(r: Resp, status: int = 200):
    assert r.status == status
    assert r.body == PLAINTEXT_BODY
    assert r.headers["content-type"] == "text/plain"
    assert r.headers["content-length"] == "13"


def assert_json(r: Resp):
    assert r.status == 200
    assert r.body == JSON_BODY
    assert r.headers["content-type"] == "application/json"
    assert r.headers["content-length"] == str(len(JSON_BODY))


def echo_routes():
    """Routes whose handler reports what the protocol parsed."""
    seen: list[Request] = []

    def echo(request: Request) -> Response:
        seen.append(request)
        return Response(200, request.body, b"application/octet-stream",
                        [(b"X-Method", request.method), (b"X-Path", request.path),
                         (b"X-Query", request.query or b"-")])

    routes = default_routes()
    routes[b"/echo"] = echo
    return routes, seen
