"""ASGI apps over the wire (issue 15): a Starlette app at "/" and a FastAPI app
mounted at "/api/" (fixtures in tests/asgi_apps.py) behind a real
prefork-server, on uvloop and asyncio, driven with httpx; /status beside
them; keep-alive and pipelining in order.

This file: the tests with server processes; tests/unit/test_asgi.py has the
adapter's in-process spec tests (raw ASGI apps)."""

from __future__ import annotations

import httpx
import pytest

from conftest import Client, until_still

ROUTES = """
[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/api/"
asgi = "tests.asgi_apps:fastapi_app"

[[route]]
path = "/"
asgi = "tests.asgi_apps:starlette_app"
"""


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    """ASGI routes run on the asyncio loops only (epoll refuses them at config time)."""
    return request.param


@pytest.fixture
def srv(start_server):
    return start_server(names=("http",), extra=ROUTES)


def test_starlette_json_path_query_and_post(srv):
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert r.json() == {"hello": "starlette", "root_path": "", "path": "/", "server": ["127.0.0.1", srv.port]}
        assert r.headers["server"] == "prefork"
        r = client.get("/items/42", params={"q": "a b"})
        assert r.json() == {"id": 42, "q": "a b"}
        r = client.post("/echo", json={"x": [1, 2, 3]})
        assert (r.status_code, r.json()) == (201, {"got": {"x": [1, 2, 3]}})
        assert client.get("/nowhere").status_code == 404  # Starlette's own 404


def test_starlette_streaming_response_is_chunked(srv):
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        with client.stream("GET", "/stream") as r:
            assert r.status_code == 200
            assert r.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in r.headers
            lines = list(r.iter_lines())
        assert lines == [f"line {i}" for i in range(5)]


def test_fastapi_mounted_at_a_prefix(srv):
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        r = client.get("/api/users/7", params={"verbose": "true"})
        assert (r.status_code, r.json()) == (200, {"user_id": 7, "verbose": True})
        r = client.post("/api/items", json={"name": "pen", "price": 1.5})
        assert r.json() == {"name": "pen", "price": 1.5, "total": 3.0}
        r = client.post("/api/items", json={"name": "pen"})
        assert r.status_code == 422  # FastAPI's validation error
        assert client.get("/api/users/notanint").status_code == 422
        r = client.get("/api/stream")
        assert r.text == "".join(f"line {i}\n" for i in range(5))


def test_status_beside_an_app_at_slash_and_keep_alive(srv):
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        for _ in range(3):
            assert client.get("/").json()["hello"] == "starlette"
        r = client.get("/status")
        assert r.status_code == 200 and "hello" not in r.text  # the built-in, not the app
    # one connection served every request (keep-alive): count on a raw socket
    c = Client(srv.connect())
    try:
        for i in range(3):
            c.send(f"GET /items/{i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            status, headers, body = c.response()
            assert status == 200 and body == b'{"id":%d,"q":null}' % i
            assert headers.get("connection", "keep-alive") != "close"
    finally:
        c.close()


def test_pipelined_requests_are_answered_in_order(srv):
    c = Client(srv.connect())
    try:
        c.send(b"GET /slow?s=0.3&n=1 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /items/5 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /slow?s=0&n=3 HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [c.response() for _ in range(4)]
    finally:
        c.close()
    assert [status for status, _, _ in answers] == [200, 200, 200, 200]
    assert answers[0][2] == b"slow 1"
    assert answers[2][2] == b'{"id":5,"q":null}'
    assert answers[3][2] == b"slow 3"


def test_head_and_http10_over_the_wire(srv):
    c = Client(srv.connect())
    try:
        c.send(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.response(head_only=True)
        assert status == 200 and int(headers["content-length"]) > 0
        c.send(b"GET /stream HTTP/1.0\r\n\r\n")  # streamed, HTTP/1.0: close-delimited
        assert c.closed()
        assert c.buf.startswith(b"HTTP/1.1 200 OK\r\n")  # the HEAD's answer had no body
        head, _, body = c.buf.partition(b"\r\n\r\n")
        assert b"chunked" not in head.lower() and b"Connection: close" in head
        assert body == b"".join(b"line %d\n" % i for i in range(5))
    finally:
        c.close()


def test_send_waits_for_a_slow_reader(start_server, tmp_path):
    """A client that reads nothing: the app's send() stops returning once the
    unsent output is above high_water (plus what the kernel holds), instead of
    the worker buffering the whole 64 MiB; once the client reads, it all comes."""
    import os
    import socket

    from conftest import wait_until
    from tests.asgi_apps import BIG_CHUNK, BIG_CHUNKS

    progress = tmp_path / "progress"
    srv = start_server(names=("http",), extra='\n[[route]]\npath = "/big"\nasgi = "tests.asgi_apps:big_stream"\n',
                       env=dict(os.environ, PREFORK_TEST_PROGRESS=str(progress)))
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", srv.port))
    try:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(progress.exists, what="the app's first send")

        # the count has stopped moving (or the app has sent everything)
        stalled = until_still(lambda: int(progress.read_text()), what="the app's sends to stop")
        assert stalled < BIG_CHUNKS // 4, f"{stalled} chunks sent to a client that reads nothing"
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, rest = data.partition(b"\r\n\r\n")
        assert b"Transfer-Encoding: chunked" in head
        want = BIG_CHUNKS * (len(b"%x\r\n" % BIG_CHUNK) + BIG_CHUNK + 2) + 5
        got = len(rest)
        while got < want:
            chunk = sock.recv(1 << 20)
            assert chunk, "closed early"
            got += len(chunk)
            rest = rest[-5:] + chunk
        assert got == want and rest.endswith(b"0\r\n\r\n")
        assert int(progress.read_text()) == BIG_CHUNKS
    finally:
        sock.close()


@pytest.mark.parametrize("how", ["fin", "reset"])
def test_client_gone_while_the_app_waits_in_receive(start_server, tmp_path, how):
    """A long poll: the client goes while the app waits in receive(), and the
    app gets http.disconnect. After a reset the connection is gone and send()
    raises an OSError (ClientDisconnected); after a FIN (the client may be
    half-closed, still reading) send() works. The worker goes on either way."""
    import os
    import socket
    import struct

    from conftest import wait_until

    progress = tmp_path / "progress"
    srv = start_server(names=("http",), extra='\n[[route]]\npath = "/poll"\nasgi = "tests.asgi_apps:long_poll"\n'
                                              '\n[[route]]\npath = "/status"\nhandler = "status"\n',
                       env=dict(os.environ, PREFORK_TEST_PROGRESS=str(progress)))
    sock = srv.connect()
    sock.sendall(b"GET /poll HTTP/1.1\r\nHost: x\r\n\r\n")
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10) as client:
        assert client.get("/status").status_code == 200  # the poll is in, waiting
        if how == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: progress.exists() and progress.read_text(), what="the app to see the disconnect")
        expected = "ClientDisconnected" if how == "reset" else "sent"
        assert progress.read_text() == f"http.disconnect {expected}"
        assert client.get("/status").status_code == 200  # the worker serves on
