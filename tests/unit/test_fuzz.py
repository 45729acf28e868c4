"""Property-based fuzzing of the HTTP protocol layer with hypothesis: random
bytes and mutated valid requests, fed whole and in random pieces. Whatever
arrives, no exception escapes, and everything the protocol says is a
sequence of well-formed HTTP/1.1 responses; after it closes, it says nothing."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prefork.apps.builtin import default_routes
from prefork.config import HttpConfig
from prefork.dispatch import HttpServerContext, HttpServerProtocol
from prefork.messages import Offload, Response

VALID = [
    b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"HEAD /plaintext HTTP/1.0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
    b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
    b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET http://x/plaintext?a=%41 HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
]
SEPARATORS = [b"\r\n", b"\n", b"\r", b" ", b":", b"\x00", b"\t", b",", b";", b"0", b"-1", b"chunked",
              b"Content-Length: 3", b"Transfer-Encoding: chunked", b"Host: y", b"\r\n\r\n", b"HTTP/1.1",
              b"\xff", b"%", b"%zz"]


def make_protocol() -> HttpServerProtocol:
    routes = dict(default_routes())
    routes[b"/echo"] = lambda req: Response(200, req.body)
    routes[b"/slow"] = lambda req: Offload(lambda r: Response(200, b"later"))
    routes[b"/boom"] = lambda req: 1 / 0
    ctx = HttpServerContext(HttpConfig(max_body=64, max_request_line=128, max_header_bytes=256, max_headers=8), routes)
    return HttpServerProtocol(ctx, peer=("127.0.0.1", 1))


def check_responses(out: bytes) -> None:
    """``out`` is whole responses, one after another: status line, headers,
    then exactly Content-Length bytes of body (none for 1xx and HEAD)."""
    while out:
        assert out.startswith(b"HTTP/1.1 "), out[:40]
        head, sep, rest = out.partition(b"\r\n\r\n")
        assert sep, out[:80]
        status = int(head[9:12])
        assert 100 <= status <= 599
        lines = head.split(b"\r\n")[1:]
        length = 0
        for line in lines:
            name, colon, value = line.partition(b": ")
            assert colon and name and b"\r" not in value and b"\n" not in value, line
            if name.lower() == b"content-length":
                length = int(value)
        if status == 100:
            length = 0
        # A HEAD response carries the length of a body it does not send. So the
        # body is either all Content-Length bytes, followed by the end or by the
        # next response, or absent (HEAD), followed by the end or the next one.
        if len(rest) >= length and (len(rest) == length or rest[length:].startswith(b"HTTP/1.1 ")):
            out = rest[length:]
        else:
            assert rest == b"" or rest.startswith(b"HTTP/1.1 "), f"a body that is not {length} bytes: {rest[:80]!r}"
            out = rest


def run(proto: HttpServerProtocol, pieces: list[bytes]) -> None:
    said = b""
    for piece in pieces:
        closed_before = proto.closing
        out = proto.data_received(piece)
        assert isinstance(out, bytes), type(out)
        if closed_before:
            assert out == b"", "output after the protocol closed"
        said += out
    check_responses(said)
    # the driver's other calls must be just as safe, whatever state this left
    after = proto.timeout(proto.deadline + 1 if proto.deadline else 1e12)
    assert isinstance(after, bytes)
    check_responses(after)
    assert proto.eof_received() == b""
    proto.connection_lost()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points + [len(data)]:
        if p > last:
            pieces.append(data[last:p])
            last = p
    return pieces or [data]


FUZZ = settings(max_examples=int(os.environ.get("PREFORK_FUZZ_EXAMPLES", "400")), deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(min_value=0, max_value=600), max_size=8))
def test_random_bytes(data, cuts):
    run(make_protocol(), split(data, cuts))


@st.composite
def mutated_requests(draw):
    data = bytearray(b"".join(draw(st.lists(st.sampled_from(VALID), min_size=1, max_size=4))))
    for _ in range(draw(st.integers(min_value=1, max_value=6))):
        kind = draw(st.sampled_from(["insert", "delete", "replace", "flip", "duplicate"]))
        at = draw(st.integers(min_value=0, max_value=len(data)))
        if kind == "insert":
            data[at:at] = draw(st.sampled_from(SEPARATORS))
        elif kind == "delete":
            del data[at:at + draw(st.integers(min_value=1, max_value=8))]
        elif kind == "replace" and at < len(data):
            data[at] = draw(st.integers(min_value=0, max_value=255))
        elif kind == "flip" and at < len(data):
            data[at] = ord(chr(data[at]).swapcase()) if data[at] < 128 else data[at]
        elif kind == "duplicate":
            end = min(len(data), at + draw(st.integers(min_value=1, max_value=40)))
            data[end:end] = data[at:end]
    return bytes(data)


@FUZZ
@given(mutated_requests(), st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_mutated_valid_requests(data, cuts):
    run(make_protocol(), split(data, cuts))


@FUZZ
@given(mutated_requests())
def test_mutated_requests_byte_by_byte(data):
    run(make_protocol(), [data[i:i + 1] for i in range(len(data))])
