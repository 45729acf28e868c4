"""Request framing over real sockets on every backend (issue 13, points 1-6;
the single-request cases are in the hostile corpus, tests/requests/): a burst
of Upgrade requests in one read, 304 heads from the static handler, and a
100 Continue held back behind a request computed in the thread pool."""

from __future__ import annotations

import threading

from conftest import Client

ROUTES = """
[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/hello"
handler = "examples.hello:hello"

[[route]]
path = "/slow"
handler = "examples.hello:slow"
blocking = true
"""


def test_thousands_of_upgrade_requests_in_one_burst(start_server):
    srv = start_server(names=("http",), http="keepalive_requests = 100000")
    n = 4000  # 57 bytes each: well over a thousand in one 64 KiB read
    one = b"GET / HTTP/1.1\r\nHost:x\r\nUpgrade:a\r\nConnection:upgrade\r\n\r\n"
    assert len(one) == 57
    with srv.connect(timeout=20) as s:
        c = Client(s)
        sender = threading.Thread(target=s.sendall, args=(one * n,))  # read while it sends
        sender.start()
        try:
            got = [c.response()[0] for _ in range(n)]
        finally:
            sender.join()
        assert got == [404] * n  # each answered; and the connection still serves
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.response()[:1] == (200,)


def test_304_has_no_content_length(start_server, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_bytes(b"hello\n")
    srv = start_server(names=("http",), extra=f'\n[static]\nroot = "{root}"\n')
    with srv.connect() as s:
        c = Client(s)
        c.send(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.response()
        assert (status, body) == (200, b"hello\n")
        etag = headers["etag"].encode()
        c.send(b"GET /static/a.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: " + etag + b"\r\n\r\n"
               b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, body = c.response()
        assert status == 304 and headers["etag"] == etag.decode()
        assert "content-length" not in headers and "content-type" not in headers
        assert c.response()[::2] == (200, b"Hello, World!")  # framed right after the 304


def expect_post(body: bytes = b"") -> bytes:
    return (b"POST /hello HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n" + body)


def test_100_continue_only_once_the_pooled_request_before_it_is_answered(start_server):
    srv = start_server(names=("http",), extra=ROUTES)
    with srv.connect() as s:
        c = Client(s)
        c.send(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n" + expect_post())
        status, _, body = c.response()
        assert (status, body) == (200, b"done\n")  # not a 100 before it
        assert c.response()[0] == 100
        c.send(b"hello")
        status, _, body = c.response()
        assert status == 200 and b'"bytes": 5' in body and b'"method": "POST"' in body
        # a client that sends the body without waiting gets no 100 at all
        c.send(b"GET /slow?s=0.3 HTTP/1.1\r\nHost: x\r\n\r\n" + expect_post(b"hello"))
        assert c.response()[::2] == (200, b"done\n")
        status, _, body = c.response()
        assert status == 200 and b'"bytes": 5' in body
        c.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert c.response()[0] == 200
        assert c.closed() and c.buf == b""
