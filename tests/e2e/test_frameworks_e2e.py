"""Real frameworks behind a real prefork-server, driven over sockets with httpx
on uvloop and asyncio (issue 15, "Tests"): Starlette and FastAPI
(tests/framework_apps.py: JSON, path and query parameters, urlencoded and
multipart forms, JSON bodies, streaming, background tasks) and a Django
project (tests/django_project: a sync and an async view); ASGI requests in the
access log, /status and /metrics; pipelining beside /status. Slow clients and
forwarded headers are in test_asgi_clients_e2e.py."""

from __future__ import annotations

import hashlib
import re

import httpx
import pytest

from conftest import Client, wait_until

ROUTES = """
[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/metrics"
handler = "metrics"

[[route]]
path = "/api/"
asgi = "tests.framework_apps:fastapi_app"

[[route]]
path = "/dj/"
asgi = "tests.django_project.asgi:application"

[[route]]
path = "/"
asgi = "tests.framework_apps:starlette_app"
"""


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    """ASGI routes run on the asyncio loops only."""
    return request.param


@pytest.fixture
def srv(start_server, tmp_path):
    return start_server(names=("http",), extra=ROUTES + f"""
[log]
error_log = "{tmp_path / 'error.log'}"
access_log = "{tmp_path / 'access.log'}"
""")


def client(srv) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10)


UPLOAD = bytes(range(256)) * 1000  # 256 kB of every byte value


def test_starlette(srv):
    with client(srv) as c:
        r = c.get("/items/42", params=[("q", "a b&c"), ("tag", "x"), ("tag", "y")])
        assert r.json() == {"id": 42, "q": "a b&c", "tags": ["x", "y"]}
        assert c.get("/items/notanint").status_code == 404
        r = c.post("/json", json={"nested": {"list": [1, 2.5, None, "é"]}})
        assert (r.status_code, r.json()) == (201, {"got": {"nested": {"list": [1, 2.5, None, "é"]}}})
        r = c.post("/form", data={"name": "Zoë", "city": "a&b=c"})
        assert r.json() == {"name": "Zoë", "city": "a&b=c"}
        r = c.post("/form", data={"note": "hi"}, files={"doc": ("data.bin", UPLOAD, "application/octet-stream")})
        assert r.json() == {"note": "hi", "doc": {"filename": "data.bin", "size": len(UPLOAD),
                                                   "sha256": hashlib.sha256(UPLOAD).hexdigest()}}
        with c.stream("GET", "/stream", params={"n": 50}) as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert list(r.iter_lines()) == [f"line {i}" for i in range(50)]
        # background tasks run after their responses; later requests see what they did
        assert c.post("/tasks/one").json() == {"queued": "one"}
        assert c.post("/tasks/two").json() == {"queued": "two"}
        # (the second request may be answered before the first task has run: compare as sets)
        assert wait_until(lambda: sorted(c.get("/tasks").json()) == ["one", "two"], what="the background tasks")


def test_fastapi(srv):
    with client(srv) as c:
        r = c.get("/api/users/7", params=[("verbose", "yes"), ("tag", "a"), ("tag", "b")])
        assert r.json() == {"user_id": 7, "verbose": True, "tags": ["a", "b"]}
        assert c.get("/api/users/x").status_code == 422
        r = c.post("/api/orders", json={"item": "pen", "quantity": 3, "price": 1.5})
        assert (r.status_code, r.json()) == (201, {"item": "pen", "quantity": 3, "price": 1.5, "total": 4.5})
        assert c.post("/api/orders", json={"item": "pen"}).status_code == 422
        assert c.post("/api/orders", content=b"{not json", headers={"content-type": "application/json"}
                      ).status_code == 422
        assert c.post("/api/form", data={"name": "Ann", "age": "41"}).json() == {"name": "Ann", "age": 41}
        r = c.post("/api/upload", data={"note": "n"}, files={"file": ("up.bin", UPLOAD, "image/png")})
        assert r.json() == {"filename": "up.bin", "content_type": "image/png", "size": len(UPLOAD),
                            "sha256": hashlib.sha256(UPLOAD).hexdigest(), "note": "n"}
        with c.stream("GET", "/api/stream", params={"n": 20}) as r:
            assert list(r.iter_lines()) == [f"line {i}" for i in range(20)]
        assert c.post("/api/tasks/a").json() == {"queued": "a"}
        assert wait_until(lambda: c.get("/api/tasks").json() == ["a"], what="the background task")
        who = c.get("/api/who").json()
        assert who["client"][0] == "127.0.0.1" and who["scheme"] == "http" and who["url_scheme"] == "http"


def test_django(srv):
    with client(srv) as c:
        r = c.get("/dj/sync/bob", params={"q": "1 2"})
        assert r.status_code == 200
        # a sync view runs in a thread (asgiref), not on the worker's loop
        assert r.json() == {"view": "sync", "name": "bob", "method": "GET", "query": "1 2", "main_thread": False}
        r = c.post("/dj/async", json={"k": [1, 2]})
        assert r.json() == {"view": "async", "method": "POST", "body": {"k": [1, 2]}, "scheme": "http",
                            "remote_addr": "127.0.0.1", "path": "/dj/async", "main_thread": True}
        assert c.get("/dj/nowhere").status_code == 404  # Django's own
        assert c.get("/status").status_code == 200


def _requests(text: str) -> int:
    """The request total of a /status page."""
    return int(text.splitlines()[2].split()[2])


def test_access_log_status_and_metrics_count_asgi_requests(srv, tmp_path):
    access = tmp_path / "access.log"
    with client(srv) as c:
        before = _requests(c.get("/status").text)
        answers = [c.get("/items/3", params={"q": "x"}), c.post("/json", json={"a": 1}),
                   c.get("/api/users/5"), c.get("/dj/sync/x"), c.get("/nowhere"), c.get("/stream")]
        after = _requests(c.get("/status").text)
        assert after - before == len(answers) + 1  # and the second /status itself
        metrics = c.get("/metrics").text
    m = re.search(r'^prefork_requests_total\{slot="0",pid="\d+"\} (\d+)$', metrics, re.M)
    assert m and int(m.group(1)) == after + 1
    lines = [("GET /items/3?q=x", 200, answers[0]), ("POST /json", 201, answers[1]),
             ("GET /api/users/5", 200, answers[2]), ("GET /dj/sync/x", 200, answers[3]),
             ("GET /nowhere", 404, answers[4]), ("GET /stream", 200, answers[5])]

    def logged():
        text = access.read_text() if access.exists() else ""
        return text if all(f'"{what} HTTP/1.1" {status} {len(r.content)} ' in text
                           for what, status, r in lines) else None
    text = wait_until(logged, what="the access log lines (flushed once a second)")
    assert all(line.startswith("127.0.0.1 - - [") for line in text.splitlines())


def test_pipelined_requests_with_bodies_beside_status(srv):
    """On one kept-alive connection: POSTs with bodies to the app at "/", the
    built-in /status, FastAPI and Django, pipelined; answered in order."""
    c = Client(srv.connect())
    try:
        body = b'{"n":1}'
        c.send(b"POST /json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n"
               + body
               + b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /api/form HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
               b"Content-Length: 15\r\n\r\nname=Bo&age=7&x"
               b"GET /dj/sync/p HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /items/9 HTTP/1.1\r\nHost: x\r\n\r\n")
        answers = [c.response() for _ in range(5)]
        assert [status for status, _, _ in answers] == [201, 200, 200, 200, 200]
        assert answers[0][2] == b'{"got":{"n":1}}'
        assert answers[1][2].startswith(b"Active connections:")
        assert answers[2][2] == b'{"name":"Bo","age":7}'
        assert b'"name": "p"' in answers[3][2]
        assert answers[4][2] == b'{"id":9,"q":null,"tags":[]}'
        assert all(headers.get("connection") != "close" for _, headers, _ in answers)
        c.send(b"GET /items/10 HTTP/1.1\r\nHost: x\r\n\r\n")  # still open, still serving
        assert c.response()[2] == b'{"id":10,"q":null,"tags":[]}'
    finally:
        c.close()
