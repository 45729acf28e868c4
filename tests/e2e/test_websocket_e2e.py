"""WebSocket routes over real sockets, on every backend: the websockets
client library and raw sockets; the handshake's refusals, echo at the edge
sizes, pubsub and POST /publish, the close codes of every failure, the
slow reader's bound, the idle and ping timeouts, graceful stop (1001) and
a reload (1012)."""

from __future__ import annotations

import base64
import hashlib
import os
import signal
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from conftest import http_get, wait_until
from testkit import client_frame as masked

ROUTES = """
[[route]]
path = "/echo"
handler = "websocket_echo"

[[route]]
path = "/ws/"
handler = "pubsub"

[[route]]
path = "/publish/"
handler = "publish"

[[route]]
path = "/plaintext"
handler = "plaintext"
"""


def start(start_server, websocket: str = "", server: str = ""):
    return start_server(server=server, names=("http",), extra=ROUTES + "\n[websocket]\n" + websocket)


def ws_url(srv, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def client(srv, path: str, **kw):
    return connect(ws_url(srv, path), open_timeout=5, close_timeout=2, max_size=None, **kw)


KEY = base64.b64encode(b"0123456789abcdef").decode()


def handshake(srv, path: str = "/echo", headers: str = "", version: str = "13", key: str = KEY,
              rest: bytes = b"") -> tuple[socket.socket, bytes]:
    """A raw opening handshake: the socket, and the response head (with what came after it)."""
    sock = srv.connect()
    sock.settimeout(5)
    sock.sendall((f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: {version}\r\n{headers}\r\n").encode() + rest)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return sock, data


def read_frames(sock: socket.socket, data: bytes = b"", count: int = 0, timeout: float = 5.0):
    """Server frames (opcode, payload) until a close frame (or EOF), or ``count`` of them."""
    deadline = time.monotonic() + timeout
    frames = []
    while True:
        while len(data) >= 2:
            n = data[1] & 0x7F
            pos = 2
            if n == 126:
                if len(data) < 4:
                    break
                n, pos = int.from_bytes(data[2:4], "big"), 4
            elif n == 127:
                if len(data) < 10:
                    break
                n, pos = int.from_bytes(data[2:10], "big"), 10
            if len(data) < pos + n:
                break
            frames.append((data[0] & 0x0F, data[pos:pos + n]))
            data = data[pos + n:]
            if frames[-1][0] == 8 or len(frames) == count:
                return frames
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = sock.recv(1 << 20)
        if not chunk:
            return frames
        data += chunk
        assert time.monotonic() < deadline, frames


def close_code(frames) -> int:
    assert frames and frames[-1][0] == 8, frames[-3:]
    return int.from_bytes(frames[-1][1][:2], "big")


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536, 1 << 20])
def test_echo_sizes_with_the_websockets_client(start_server, size):
    srv = start(start_server)
    with client(srv, "/echo") as ws:
        ws.send("é" * (size // 2))
        assert ws.recv() == "é" * (size // 2)
        payload = os.urandom(size)
        ws.send(payload)
        assert ws.recv() == payload
        ws.send([b"frag", b"mented", b""])  # fragments
        assert ws.recv() == b"fragmented"
        ws.ping(b"p")
    assert http_get(srv.port)[0] == 200  # and HTTP goes on beside


def test_pubsub_and_publish_reach_the_channel_only(start_server):
    srv = start(start_server)
    with client(srv, "/ws/room") as a, client(srv, "/ws/room") as b, client(srv, "/ws/other") as c:
        a.send("hello room")
        assert a.recv(timeout=5) == "hello room" and b.recv(timeout=5) == "hello room"
        b.send(b"\x00bin")
        assert a.recv(timeout=5) == b"\x00bin" and b.recv(timeout=5) == b"\x00bin"
        sock = srv.connect()
        sock.sendall(b"POST /publish/room HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\npushed"
                     b"POST /publish/room HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n\x01\x02"
                     b"GET /publish/room HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = b""
        while answers.count(b"HTTP/1.1") < 3:
            answers += sock.recv(4096)
        sock.close()
        assert answers.count(b"HTTP/1.1 204") == 2 and b"HTTP/1.1 405" in answers
        assert [a.recv(timeout=5), a.recv(timeout=5)] == ["pushed", b"\x01\x02"]
        assert [b.recv(timeout=5), b.recv(timeout=5)] == ["pushed", b"\x01\x02"]
        c.send("other")
        assert c.recv(timeout=5) == "other"  # c got only its own channel's


def test_publish_is_allow_listed(start_server):
    srv = start(start_server, 'publish_allow = ["10.0.0.0/8"]')
    sock = srv.connect()
    sock.sendall(b"POST /publish/room HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx")
    assert sock.recv(4096).startswith(b"HTTP/1.1 403")


@pytest.mark.parametrize("kw, status, header", [
    ({"key": "bad key!"}, b"400", None),
    ({"key": base64.b64encode(b"short").decode()}, b"400", None),
    ({"version": "8"}, b"426", b"sec-websocket-version: 13"),
    ({"headers": "Origin: https://evil.example\r\n"}, b"403", None),
    ({"path": "/ws/"}, b"404", None),
])
def test_handshake_refusals(start_server, kw, status, header):
    srv = start(start_server, 'origins = ["https://good.example"]')
    if "headers" not in kw:
        kw["headers"] = "Origin: https://good.example\r\n"
    sock, head = handshake(srv, **kw)
    assert head.startswith(b"HTTP/1.1 " + status), head
    if header:
        assert header in head.lower()
    sock.close()


def test_plain_get_to_a_websocket_route_is_426(start_server):
    srv = start(start_server)
    status, headers, _ = http_get(srv.port, "/echo")
    assert status == 426


def test_frames_in_the_read_of_the_handshake_go_to_the_websocket(start_server):
    srv = start(start_server)
    sock, data = handshake(srv, rest=masked(1, b"early") + masked(2, b"\x00\x01"))
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    expected = base64.b64encode(hashlib.sha1(KEY.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    assert b"\r\nSec-WebSocket-Accept: " + expected in head
    assert read_frames(sock, rest, count=2) == [(1, b"early"), (2, b"\x00\x01")]


@pytest.mark.parametrize("frame, code", [
    (masked(1, b"\xff\xfe"), 1007),
    (masked(1, b"unmasked", mask=False), 1002),
    (bytes([0x80 | 0x40 | 1, 0x80]) + os.urandom(4), 1002),
    (masked(2, b"x" * 2000), 1009),
    (masked(9, b"x" * 126), 1002),
    (masked(0, b"lost continuation"), 1002),
], ids=["bad-utf8", "unmasked", "reserved-bit", "too-big", "long-ping", "lost-continuation"])
def test_protocol_failures_close_with_their_code(start_server, frame, code):
    srv = start(start_server, "max_message = 1000")
    sock, data = handshake(srv)
    assert data.startswith(b"HTTP/1.1 101")
    sock.sendall(masked(1, b"ok") + frame)
    frames = read_frames(sock, data.partition(b"\r\n\r\n")[2])
    assert frames[0] == (1, b"ok") and close_code(frames) == code
    assert sock.recv(10) == b""  # and the server closes


def test_client_close_gets_its_code_back(start_server):
    srv = start(start_server)
    with client(srv, "/echo") as ws:
        ws.close(4000, "bye")
        assert ws.protocol.close_rcvd.code == 4000


def test_idle_timeout_closes_1000(start_server):
    srv = start(start_server, "idle_timeout = 0.5\nping_interval = 0")
    with client(srv, "/echo") as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1000


def test_unanswered_ping_closes_1011(start_server):
    srv = start(start_server, "ping_interval = 0.3\nping_timeout = 0.3")
    sock, data = handshake(srv)
    frames = read_frames(sock, data.partition(b"\r\n\r\n")[2])  # never answered: a ping, then the close
    assert frames[0] == (9, b"") and close_code(frames) == 1011


def test_slow_reader_past_the_queue_is_closed_1013(start_server):
    srv = start(start_server, "queue = 100000\nping_interval = 0", server="")
    sock, data = handshake(srv, "/ws/slow")
    body = b"x" * 200_000
    post = srv.connect()
    post.settimeout(5)
    request = (b"POST /publish/slow HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)) + body
    for _ in range(60):  # 12 MB to a client that reads nothing: far past the socket buffers and the queue
        post.sendall(request)
        assert post.recv(4096).startswith(b"HTTP/1.1 204")
    frames = read_frames(sock, data.partition(b"\r\n\r\n")[2], timeout=20)
    assert close_code(frames) == 1013
    assert len(frames) - 1 < 60  # some were never queued


def test_graceful_stop_sends_1001(start_server):
    srv = start(start_server)
    with client(srv, "/echo") as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        srv.proc.send_signal(signal.SIGQUIT)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1001
    assert srv.proc.wait(10) == 0


def test_reload_keeps_websockets_until_shutdown_timeout_then_1012(start_server):
    srv = start(start_server, server="shutdown_timeout = 3")
    old = srv.wait_workers(1)
    with client(srv, "/ws/r") as ws:
        srv.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: any(p not in old for p in srv.workers()), what="the new worker")
        ws.send("still here")  # the retiring worker serves on
        assert ws.recv(timeout=5) == "still here"
        began = time.monotonic()
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1012
        assert time.monotonic() - began < 6
    with client(srv, "/ws/r") as ws:  # the new worker serves
        ws.send("new")
        assert ws.recv(timeout=5) == "new"
