"""WSGI apps over the wire (issue 16): a raw PEP 3333 app wrapped in
``wsgiref.validate.validator`` at "/", a Flask app mounted at "/flask/" and
the Django fixture project's WSGI side at "/dj/"
(fixtures in tests/wsgi_apps.py) behind a real prefork-server, on the epoll
reactor, uvloop and asyncio, driven with httpx and raw sockets.

tests/unit/test_wsgi.py has the pure parts (environ, start_response, framing)."""

from __future__ import annotations

import json
import os
import re
import socket
import time

import httpx
import pytest

from conftest import Client, read_until_closed, wait_until

ROUTES = """
[[route]]
path = "/status"
handler = "status"

[[route]]
path = "/flask/"
wsgi = "tests.wsgi_apps:flask_app"

[[route]]
path = "/files/"
wsgi = "tests.wsgi_apps:file_app"

[[route]]
path = "/dj/"
wsgi = "tests.django_project.wsgi:application"

[[route]]
path = "/"
wsgi = "tests.wsgi_apps:make_raw_app"
wsgi_factory = true
"""


@pytest.fixture(params=["epoll", "uvloop", "asyncio"])
def backend(request):
    """WSGI apps run on every backend, the native epoll reactor included."""
    return request.param


@pytest.fixture
def srv(start_server):
    return start_server(names=("http",), extra=ROUTES, http="send_timeout = 3")


def _client(srv) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=10)


def _counts(client) -> dict:
    return client.get("/closed").json()


def test_environ_and_errors_stream(srv):
    with _client(srv) as client:
        r = client.post("/env?a=1&b=%20", content=b"hello body", headers=[
            ("Content-Type", "text/x-test"), ("Cookie", "a=1"), ("Cookie", "b=2"),
            ("X-Multi", "one"), ("X-Multi", "two"), ("X_Multi", "smuggled")])
        assert r.status_code == 200
        env = r.json()
        port = env.pop("REMOTE_PORT")
        assert port.isdigit()
        assert env == {
            "REQUEST_METHOD": "POST", "SCRIPT_NAME": "", "PATH_INFO": "/env", "QUERY_STRING": "a=1&b=%20",
            "CONTENT_TYPE": "text/x-test", "CONTENT_LENGTH": "10", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": str(srv.port), "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
            "HTTP_COOKIE": "a=1; b=2", "HTTP_X_MULTI": "one, two", "wsgi.url_scheme": "http",
            "wsgi.multithread": True, "wsgi.multiprocess": True, "wsgi.run_once": False,
            "wsgi.input_terminated": True, "wsgi.version": [1, 0], "body": "hello body"}
    wait_until(lambda: "wsgi.errors: env asked" in srv.log(), what="wsgi.errors in the error log")


def test_percent_decoded_path_info_and_chunked_upload(srv):
    with _client(srv) as client:
        r = client.get("/%65nv")  # /env, escaped
        assert r.json()["PATH_INFO"] == "/env"
        r = client.post("/env", content=iter([b"chunk one, ", b"chunk two"]))  # Transfer-Encoding: chunked
        assert r.json()["body"] == "chunk one, chunk two"
        assert r.json()["CONTENT_LENGTH"] == "20"


def test_input_methods_never_read_past_the_body(srv):
    with _client(srv) as client:
        r = client.post("/input", content=b"abcdefgh\nsecond\nthird\nlast")
        assert r.json() == {"first": "abc", "line": "defg", "rest_line": "h\n",
                            "lines": ["second\n", "third\n", "last"], "after": ""}
        r = client.post("/iter-input", content=b"1\n2\n3")
        assert r.json() == {"lines": ["1\n", "2\n", "3"]}


def test_write_callable_chunks_one_piece_head_and_no_content(srv):
    with _client(srv) as client:
        closed = _counts(client)["closed"]
        r = client.get("/write")
        assert r.text == "written then iterated"
        assert r.headers["transfer-encoding"] == "chunked"
        r = client.get("/chunks")
        assert r.text == "abbccc" and r.headers["transfer-encoding"] == "chunked"
        r = client.get("/one")  # one piece: one delivery, framed with its length
        assert r.text == "just one" and r.headers["content-length"] == "8"
        r = client.head("/one")
        assert r.content == b"" and r.headers["content-length"] == "8"
        r = client.head("/chunks")
        assert r.content == b"" and "content-length" not in r.headers
        r = client.get("/nocontent")
        assert r.status_code == 204 and "content-length" not in r.headers
        # every iterable with a close() had it called (5 of the requests above), before the answer
        assert _counts(client)["closed"] == closed + 5


def test_http10_is_close_delimited(srv):
    sock = srv.connect()
    sock.sendall(b"GET /chunks HTTP/1.0\r\n\r\n")
    data = read_until_closed(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head and b"Content-Length" not in head
    assert b"Connection: close" in head
    assert body == b"abbccc"
    sock.close()


def test_http10_without_host_names_the_listening_socket(srv):
    sock = srv.connect()
    sock.sendall(b"GET /env HTTP/1.0\r\n\r\n")
    head, _, body = read_until_closed(sock).partition(b"\r\n\r\n")
    sock.close()
    assert head.startswith(b"HTTP/1.1 200")
    env = json.loads(body)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("127.0.0.1", str(srv.port), "HTTP/1.0")
    assert "HTTP_HOST" not in env


def test_app_errors(srv):
    workers = srv.wait_workers(1)
    with _client(srv) as client:
        r = client.get("/fail-before")
        assert r.status_code == 500
        r = client.get("/exc-info")  # exc_info before the head is out: the new status
        assert (r.status_code, r.text) == (503, "error page")
        # exc_info after a first piece: start_response re-raises (PEP 3333); that piece
        # was still held back, so nothing is on the wire yet and a 500 is still possible
        r = client.get("/exc-info-late")
        assert r.status_code == 500 and "begun" not in r.text
        for path in ("/fail-mid", "/short"):
            # the head is out: the response is cut (the connection closed), not completed
            with pytest.raises(httpx.RemoteProtocolError):
                client.get(path)
        assert client.get("/one").text == "just one"
    log = srv.log()
    assert log.count("WSGI app for /fail-before failed") == 1  # logged once, with its traceback
    assert log.count("RuntimeError: the app failed before start_response") == 1
    assert "Traceback" in log
    assert "5 bytes of the Content-Length (10)" in log
    assert "ValueError: late" in log and "failed mid-response" in log
    assert srv.workers() == workers  # the worker survived every app error


def test_keep_alive_and_pipelining_in_order(srv):
    c = Client(srv.connect())
    c.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n"
           + b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n" + b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = c.response()
    assert (status, body) == (200, b"just one")
    status, headers, _ = c.response()
    assert headers["transfer-encoding"] == "chunked"
    while b"0\r\n\r\n" not in c.buf:
        c._fill()
    c.buf = c.buf.partition(b"0\r\n\r\n")[2]  # skip the chunked body
    status, headers, body = c.response()
    assert status == 200 and b"active" in body
    status, headers, body = c.response()
    assert body == b"just one"
    c.close()


def test_flask(srv):
    with _client(srv) as client:
        r = client.get("/flask/json", params={"q": "a b"})
        assert r.json() == {"hello": "flask", "args": {"q": "a b"}, "root": "/flask", "path": "/json"}
        r = client.post("/flask/upload", data={"name": "report"},
                        files={"file": ("r.bin", b"HELLO" + b"\0" * 100000)})
        assert r.json() == {"name": "report", "filename": "r.bin", "size": 100005, "head": "HELLO"}
        r = client.post("/flask/echo", json={"x": [1, 2]})
        assert r.json() == {"got": {"x": [1, 2]}}
        with client.stream("GET", "/flask/stream") as r:
            assert r.headers["transfer-encoding"] == "chunked"
            assert list(r.iter_lines()) == [f"line {i}" for i in range(5)]
        r = client.get("/flask/teapot")
        assert (r.status_code, r.json()) == (418, {"error": "teapot", "detail": "short and stout"})
        assert client.get("/flask/crash").status_code == 500  # Flask's own 500
        assert client.get("/flask/nowhere").status_code == 404


def test_django(srv):
    with _client(srv) as client:
        r = client.get("/dj/sync/bob", params={"q": "1 2"})
        # the view runs in the worker's pool, not on the reactor's thread
        assert r.json() == {"view": "sync", "name": "bob", "method": "GET", "query": "1 2", "main_thread": False}
        r = client.post("/dj/async", json={"k": [1, 2]})
        assert r.json() == {"view": "async", "method": "POST", "body": {"k": [1, 2]}, "scheme": "http",
                            "remote_addr": "127.0.0.1", "path": "/dj/async", "main_thread": False}
        assert client.get("/dj/nowhere").status_code == 404  # Django's own


def test_file_wrapper_goes_out_without_the_thread_reading_it(srv, tmp_path):
    data = os.urandom(300_000)
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    with _client(srv) as client:
        reads = client.get("/files/reads").json()["file_reads"]
        r = client.get("/files/", params={"path": str(path)})
        assert r.content == data and r.headers["content-length"] == str(len(data))
        r = client.get("/files/", params={"path": str(path), "skip": "1000"})  # from the file's position on
        assert r.content == data[1000:]
        r = client.head("/files/", params={"path": str(path)})
        assert r.content == b"" and r.headers["content-length"] == str(len(data))
        assert client.get("/files/", params={"path": str(path)}).content == data  # kept alive after a file
        # the app's thread never read the file (sendfile, or the reactor's reads on asyncio)
        assert client.get("/files/reads").json()["file_reads"] == reads
        with pytest.raises(httpx.RemoteProtocolError):  # a Content-Length the file breaks: cut
            client.get("/files/", params={"path": str(path), "length": "10"})


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_big_response_to_a_client_that_reads_nothing(srv):
    """100 MiB streamed to a client that reads nothing: the app thread waits
    (a bounded number of 64 KiB pieces made), the worker's memory stays
    bounded, /status counts the connection as writing; the thread is released
    (the iterable closed) when send_timeout closes the connection."""
    [worker] = srv.wait_workers(1)
    with _client(srv) as client:
        before = _counts(client)
        rss_before = _rss_kib(worker)
        sock = srv.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        sock.sendall(b"GET /big?1600 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: _counts(client)["produced"] > before["produced"], what="the app to begin")
        # the waiting call counts as writing, beside this /status request itself
        status = client.get("/status").text
        assert int(re.search(r"Writing: (\d+)", status).group(1)) >= 2, status
        # watch for a while: far fewer than the 1600 pieces are ever made while nobody reads
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            made = _counts(client)["produced"] - before["produced"]
            assert made < 200, made  # < 12.5 MiB: socket buffers plus high_water, not the whole body
            time.sleep(0.05)
        assert _rss_kib(worker) - rss_before < 40 * 1024
        # send_timeout (3 s) closes the connection; the app's iterable is closed
        wait_until(lambda: _counts(client)["closed"] > before["closed"], timeout=15, what="close() at send_timeout")
        assert _counts(client)["produced"] - before["produced"] < 200
        sock.close()
    assert srv.workers() == [worker] and os.path.exists(f"/proc/{worker}")


def test_client_disconnect_mid_response_closes_the_iterable(srv):
    with _client(srv) as client:
        before = _counts(client)
        sock = srv.connect()
        sock.sendall(b"GET /big?1600 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        sock.close()  # gone mid-response
        wait_until(lambda: _counts(client)["closed"] > before["closed"], what="close() on disconnect")
        assert _counts(client)["produced"] - before["produced"] < 1600


def test_a_full_pool_queue_is_a_503(start_server):
    """threads = 1, queue = 1: the thread held by a client that reads
    nothing, one request queued, the next one gets 503 at once."""
    srv = start_server(names=("http",), extra=ROUTES, server="threads = 1\nqueue = 1")
    with _client(srv) as client:
        hog = srv.connect()
        hog.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        hog.sendall(b"GET /big?1600 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert hog.recv(100).startswith(b"HTTP/1.1 200 OK")  # the one thread is in the app, held
        queued = Client(srv.connect())
        queued.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        # the queued one and the held one count as writing, beside this /status request
        wait_until(lambda: _writing(client) >= 3, what="the request queued")
        refused = Client(srv.connect())
        refused.send(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
        assert refused.response()[0] == 503
        refused.close()
        hog.close()  # the thread is freed: the queued request is answered
        assert queued.response()[2] == b"just one"
        queued.close()


def _writing(client) -> int:
    return int(re.search(r"Writing: (\d+)", client.get("/status").text).group(1))


def _status_figure(client, name: str) -> int:
    return int(re.search(rf"{name}: (\d+)", client.get("/status").text).group(1))


def test_slow_clients_hold_no_pool_thread(start_server):
    """200 connections trickling their heads and 50 trickling their bodies
    against a 4-thread pool: the reactor holds them all (reading), no call
    is in the pool (writing is /status's own request alone), a normal request
    is answered at once, and the trickled requests are answered once whole."""
    srv = start_server(names=("http",), extra=ROUTES, server="threads = 4")
    heads, bodies = [], []
    try:
        for _ in range(200):
            sock = srv.connect()
            sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n")
            heads.append(sock)
        for _ in range(50):
            sock = srv.connect()
            sock.sendall(b"POST /env HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 20\r\n\r\n0123")
            bodies.append(sock)
        for sock in heads:
            sock.sendall(b"X-Trickle: 1\r\n")
        for sock in bodies:
            sock.sendall(b"4567")
        with _client(srv) as client:
            wait_until(lambda: _status_figure(client, "Reading") >= 250, what="250 connections reading")
            start = time.monotonic()
            assert client.get("/one").text == "just one"
            assert time.monotonic() - start < 1.0
            assert _status_figure(client, "Writing") == 1  # this request: nothing waits in the pool
        for sock in heads[:20]:
            sock.sendall(b"\r\n")
            assert Client(sock).response()[2] == b"just one"
        for sock in bodies[:20]:
            sock.sendall(b"89abcdefghij")
            assert json.loads(Client(sock).response()[2])["body"] == "0123456789abcdefghij"
    finally:
        for sock in heads + bodies:
            sock.close()


def _policies(pid: int) -> dict[int, int]:
    """Each thread of ``pid`` and its scheduling policy (/proc's stat field 41:
    0 SCHED_OTHER, 3 SCHED_BATCH)."""
    policies = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        policies[int(tid)] = int(fields[38])  # field 41; fields[0] is field 3
    return policies


@pytest.mark.parametrize("backend", ["epoll"])
@pytest.mark.parametrize("sched, pool_policy", [("", os.SCHED_BATCH), ('threads_sched = "normal"', os.SCHED_OTHER)])
def test_pool_threads_scheduling_policy(start_server, sched, pool_policy):
    """The pool's threads are SCHED_BATCH by default (a woken one does not
    preempt the reactor for a GIL it holds) and SCHED_NORMAL with
    threads_sched = "normal"; the reactor thread is SCHED_NORMAL either way.
    The pool answers (a WSGI request) before its threads are looked at."""
    srv = start_server(names=("http",), extra=ROUTES, server=f"threads = 3\n{sched}")
    with _client(srv) as client:
        assert client.get("/flask/json").status_code == 200
    (worker,) = srv.workers()
    # each thread sets its own policy as it starts: wait for the three
    wait_until(lambda: list(_policies(worker).values()).count(pool_policy) >= 3 + (pool_policy == os.SCHED_OTHER),
               what="the pool's threads' policy")
    policies = _policies(worker)
    assert policies.pop(worker) == os.SCHED_OTHER  # the reactor
    assert list(policies.values()).count(pool_policy) == 3, policies
    if pool_policy == os.SCHED_OTHER:
        assert os.SCHED_BATCH not in policies.values()
