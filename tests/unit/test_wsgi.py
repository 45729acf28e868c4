"""The WSGI adapter (prefork/wsgi.py, prefork/wsgi_environ.py): the environ, header
joining, start_response's rules, the framing and the flow control of a call,
driven with a fake protocol and driver (the hand-back runs at once).
tests/e2e/test_wsgi_e2e.py has the same over real sockets."""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from wsgiref.validate import check_environ

import pytest

from prefork.config import HttpConfig
from prefork.dispatch import STREAMING, HttpServerContext, Router
from prefork.messages import FileChunk, Request, pack_peer
from prefork.protocols.http import IDLE, WAITING
from prefork.protocols.http_flow import FlowControl
from prefork.wsgi import WsgiApp, _Call
from prefork.wsgi_environ import (EMPTY, NAMES_MAX, OWN_DATE, OWN_SERVER, ErrorStream, build_environ, check_headers,
                                  check_status)


def _request(method=b"GET", path=b"/", query=b"", headers=((b"Host", b"example.com:8080"),), body=b"",
             version="1.1", peer=("10.1.2.3", 5555)) -> Request:
    # the names lower-cased, as the parser gives them (Request.headers)
    return Request(method, path + (b"?" + query if query else b""), path, query, version,
                   [(name.lower(), value) for name, value in headers], body, True, peer)


# --- environ ---------------------------------------------------------------------------------------


def test_environ_per_pep_3333():
    request = _request(b"POST", b"/app/caf\xc3\xa9 x", b"a=1", [
        (b"Host", b"example.com:8080"), (b"Content-Type", b"text/plain"), (b"Cookie", b"a=1"),
        (b"X-Multi", b"one"), (b"cookie", b"b=2"), (b"x-multi", b"two"), (b"X_Multi", b"smuggled")], b"body")
    env = build_environ(WsgiApp(lambda e, s: [], "/app/"), request)
    check_environ(env)  # wsgiref's own checks
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/app", "/caf\xc3\xa9 x")  # latin-1 of the decoded bytes
    assert env["REQUEST_METHOD"] == "POST" and env["QUERY_STRING"] == "a=1"
    assert (env["CONTENT_TYPE"], env["CONTENT_LENGTH"]) == ("text/plain", "4")  # a chunked body, read whole
    assert "HTTP_CONTENT_TYPE" not in env and "HTTP_CONTENT_LENGTH" not in env
    assert env["HTTP_COOKIE"] == "a=1; b=2" and env["HTTP_X_MULTI"] == "one, two"  # X_Multi dropped
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["SERVER_PROTOCOL"]) == ("example.com", "8080", "HTTP/1.1")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("10.1.2.3", "5555")
    assert env["wsgi.version"] == (1, 0) and env["wsgi.url_scheme"] == "http"
    assert (env["wsgi.multithread"], env["wsgi.multiprocess"], env["wsgi.run_once"],
            env["wsgi.input_terminated"]) == (True, True, False, True)
    assert env["wsgi.input"].read() == b"body"
    assert callable(env["wsgi.file_wrapper"])


def test_environ_is_each_requests_own_and_keys_common_and_rare_headers_alike():
    request = _request(headers=[(b"HOST", b"h:1"), (b"user-Agent", b"a"), (b"Accept", b"x"), (b"accept", b"y"),
                                (b"X-Rare-Thing", b"r"), (b"TE", b"trailers")])
    first = build_environ(WsgiApp(None), request)
    assert (first["HTTP_HOST"], first["SERVER_NAME"], first["SERVER_PORT"]) == ("h:1", "h", "1")
    assert (first["HTTP_USER_AGENT"], first["HTTP_ACCEPT"], first["HTTP_X_RARE_THING"], first["HTTP_TE"]) \
        == ("a", "x, y", "r", "trailers")
    first["wsgi.run_once"] = True  # what one app does to its environ ...
    first["myapp.key"] = 1
    app = WsgiApp(None)
    second = build_environ(app, request)
    assert second["wsgi.run_once"] is False and "myapp.key" not in second  # ... the next one never sees
    # no body: the one stateless empty input; a body: a reader of its own per request
    assert second["wsgi.input"] is EMPTY and second["wsgi.input"].read() == b"" and list(second["wsgi.input"]) == []
    assert second["wsgi.input"].readline() == b"" and second["wsgi.input"].readlines() == []
    posted = [build_environ(app, _request(b"POST", body=b"xy")) for _ in range(2)]
    assert posted[0]["wsgi.input"] is not posted[1]["wsgi.input"]
    assert [env["wsgi.input"].read() for env in posted] == [b"xy", b"xy"]
    # wsgi.errors: the mount's one stream (as gunicorn's error log is every request's)
    assert second["wsgi.errors"] is posted[0]["wsgi.errors"] is app.errors


def test_environ_mounts_and_server_names():
    assert build_environ(WsgiApp(None, "/"), _request(path=b"/x"))["SCRIPT_NAME"] == ""
    env = build_environ(WsgiApp(None, "/api/", "/pre"), _request(path=b"/api/v1"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("/pre/api", "/v1")
    env = build_environ(WsgiApp(None, "/exact"), _request(path=b"/exact"))
    assert (env["SCRIPT_NAME"], env["PATH_INFO"]) == ("", "/exact")
    env = build_environ(WsgiApp(None), _request(headers=[(b"Host", b"[::1]:9")]))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("[::1]", "9")
    request = _request(headers=[(b"Host", b"h")])
    request.scheme = "https"
    env = build_environ(WsgiApp(None), request)
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["wsgi.url_scheme"]) == ("h", "443", "https")
    env = build_environ(WsgiApp(None), _request(headers=[], version="1.0"), ("127.0.0.2", 81))
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.2", "81")
    env = build_environ(WsgiApp(None), _request(headers=[], peer="/run/sock"))
    assert "REMOTE_ADDR" not in env and "CONTENT_LENGTH" not in env


def test_input_methods_stop_at_the_body():
    stream = build_environ(WsgiApp(None), _request(body=b"ab\ncd\nef"))["wsgi.input"]
    assert stream.read(1) == b"a"
    assert stream.readline(1) == b"b"
    assert stream.readline() == b"\n"
    assert stream.readlines() == [b"cd\n", b"ef"]
    assert stream.read() == b"" and stream.read(5) == b""
    stream = build_environ(WsgiApp(None), _request(body=b"1\n2"))["wsgi.input"]
    assert list(stream) == [b"1\n", b"2"]


def test_errors_stream_logs_lines(caplog):
    stream = ErrorStream()
    with caplog.at_level(logging.ERROR, logger="prefork.worker"):
        stream.write("one\ntw")
        stream.writelines(["o\n", "three"])
        stream.flush()
    assert [r.getMessage() for r in caplog.records] == ["wsgi.errors: one", "wsgi.errors: two",
                                                        "wsgi.errors: three"]


def test_environ_caches_server_and_remote_names_per_host_and_peer():
    """SERVER_NAME/PORT are kept per Host value and REMOTE_ADDR/PORT per
    packed IPv4 peer: each request still gets its own host's and client's,
    and a cache that reaches NAMES_MAX starts again."""
    app = WsgiApp(None)
    one = _request(headers=[(b"Host", b"a.example:81")], peer=pack_peer(("10.0.0.1", 1001)))
    two = _request(headers=[(b"Host", b"b.example")], peer=pack_peer(("10.0.0.2", 1002)))
    for _ in range(2):  # the second time from the caches
        env1, env2 = build_environ(app, one), build_environ(app, two)
        assert (env1["SERVER_NAME"], env1["SERVER_PORT"], env1["REMOTE_ADDR"], env1["REMOTE_PORT"]) \
            == ("a.example", "81", "10.0.0.1", "1001")
        assert (env2["SERVER_NAME"], env2["SERVER_PORT"], env2["REMOTE_ADDR"], env2["REMOTE_PORT"]) \
            == ("b.example", "80", "10.0.0.2", "1002")
    assert app.hosts == {b"a.example:81": ("a.example", "81"), b"b.example": ("b.example", "80")}
    assert len(app.peers) == 2
    secure = _request(headers=[(b"Host", b"b.example")])
    secure.scheme = "https"  # a trusted proxy said so: the port is https's, not the cached http one
    assert build_environ(app, secure)["SERVER_PORT"] == "443"
    six = _request(peer=("::1", 7, 0, 0))  # not packed: not cached, still named
    assert (build_environ(app, six)["REMOTE_ADDR"], build_environ(app, six)["REMOTE_PORT"]) == ("::1", "7")
    assert len(app.peers) == 2
    for i in range(NAMES_MAX + 5):
        build_environ(app, _request(peer=pack_peer(("10.1.0.1", i + 1))))
    assert 0 < len(app.peers) <= NAMES_MAX


def test_status_and_header_checks():
    assert check_status("200 OK") == 200 and check_status("404 ") == 404 and check_status("599 x") == 599
    assert check_headers([("Content-Type", "text/plain")]) == 0
    assert check_headers([("content-length", " 12 "), ("SERVER", "s")]) == OWN_SERVER | 13 << 2
    assert check_headers([("Date", "d"), ("Content-Length", "0"), ("Content-Length", "7")]) == OWN_DATE | 8 << 2
    for bad in ([("Content-Length", "1x")], [("Content-Length", "-1")], [("Content-Length", "\u0661")],
                [("Content-Length", "9" * 19)]):
        with pytest.raises(ValueError, match="bad Content-Length"):
            check_headers(bad)
    for bad in ("200", "OK 200", 200, b"200 OK", None, "200\tOK", "200 OK\r\nX: y", "2x0 OK", "\u0662\u0660\u0660 OK"):
        with pytest.raises(ValueError):
            check_status(bad)
    check_headers([("Content-Type", "text/plain")])
    for bad in ([("Connection", "close")], [("Transfer-Encoding", "chunked")], [("Keep-Alive", "5")],
                [("X", "a\r\nInjected: 1")], [("Bad Name", "x")]):
        with pytest.raises(ValueError):
            check_headers(bad)
    for bad in ((("A", "b"),), [("A", b"b")], [("A",)]):
        with pytest.raises(TypeError):
            check_headers(bad)


def test_router_records_a_wsgi_app_as_streaming():
    router = Router()
    app = WsgiApp(lambda e, s: [])
    router.add("/", app)
    assert router.resolve(b"/anything") == (app, STREAMING)
    assert router.streaming  # large bodies stream (tests/unit/test_wsgi_body.py)


# --- a call, with a fake protocol and driver -----------------------------------------------------


class FakeDriver:
    def __init__(self):
        self.out: list[bytes] = []
        self.blocked = False
        self.waiter = None

    def deliver(self, out):
        self.out.append(out)

    def write_blocked(self):
        return self.blocked

    def when_drained(self, callback):
        self.waiter = callback

    def sockname(self):
        return ("127.0.0.1", 80)


class FakeProto(FlowControl):
    """The protocol's primitives recorded; its composite calls (answer_waited,
    fail_waited, abort_waited) are the real ones, made of these."""

    def __init__(self, high_water=65536):
        self.state = WAITING
        # a real context (compiled, the call reads its fields as C fields), with a fixed head
        self.ctx = HttpServerContext(HttpConfig(high_water=high_water), Router())
        self.ctx.server_line, self.ctx.date_line = b"Server: t\r\n", b"Date: d\r\n"
        self.driver = FakeDriver()
        self.events: list = []

    def end_wait(self, out=b""):
        self.events.append(("end_wait", out))
        self.state = IDLE

    def answered(self, request, status, length, hold=False):
        self.events.append(("answered", status, length, request.keep_alive))
        self.hold = hold

    def after_wait(self):
        self.events.append(("after_wait",))

    def write_response(self, request, response, status=0):
        self.events.append(("response", status))

    def abort(self):
        self.events.append(("abort",))


class Body:
    def __init__(self, chunks):
        self.chunks = iter(chunks)
        self.closed = 0

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.chunks)

    def close(self):
        self.closed += 1


def run(app, request=None, proto=None):
    proto = proto or FakeProto()
    call = _Call(WsgiApp(app), proto, request or _request(), lambda fn, *args: fn(*args))
    call.run()
    return proto, call


def _app(status="200 OK", headers=(("Content-Type", "text/plain"),), chunks=(b"hello",), holder=None):
    def app(environ, start_response):
        start_response(status, list(headers))
        body = Body(chunks)
        if holder is not None:
            holder.append(body)
        return body
    return app


def test_one_piece_goes_out_in_one_delivery_with_its_length():
    bodies = []
    proto, _ = run(_app(holder=bodies))
    assert proto.driver.out == []  # nothing before the end: one delivery, through end_wait
    kind, out = proto.events[0]
    assert kind == "end_wait"
    assert out == b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nServer: t\r\nDate: d\r\nContent-Length: 5\r\n\r\nhello"
    assert proto.events[1] == ("answered", 200, 5, True)
    assert bodies[0].closed == 1


def test_pieces_are_chunked_on_1_1_and_close_delimited_on_1_0():
    proto, _ = run(_app(chunks=(b"a", b"", b"bb", b"ccc")))
    sent = b"".join(proto.driver.out) + proto.events[0][1]
    assert b"Transfer-Encoding: chunked\r\n" in sent
    assert sent.endswith(b"\r\n\r\n1\r\na\r\n2\r\nbb\r\n3\r\nccc\r\n0\r\n\r\n")
    proto, _ = run(_app(chunks=(b"a", b"bb")), _request(version="1.0"))
    sent = b"".join(proto.driver.out) + proto.events[0][1]
    assert b"Transfer-Encoding" not in sent and b"Content-Length" not in sent
    assert b"Connection: close\r\n" in sent and sent.endswith(b"\r\n\r\nabb")
    assert proto.events[1] == ("answered", 200, 3, False)


def test_head_204_and_the_apps_content_length():
    proto, _ = run(_app(), _request(b"HEAD"))
    assert proto.events[0][1].endswith(b"Content-Length: 5\r\n\r\n")
    proto, _ = run(_app("204 No Content", (), (b"",)))
    assert b"Content-Length" not in proto.events[0][1]
    proto, _ = run(_app(headers=[("Content-Length", "3")], chunks=(b"a", b"bc")))
    sent = b"".join(proto.driver.out) + proto.events[0][1]
    assert b"chunked" not in sent and sent.endswith(b"Content-Length: 3\r\nServer: t\r\nDate: d\r\n\r\nabc")


def test_too_few_bytes_for_the_content_length_closes():
    bodies = []
    proto, _ = run(_app(headers=[("Content-Length", "10")], chunks=(b"12345",), holder=bodies))
    assert proto.events[-1] == ("abort",)
    assert proto.driver.out[-1].endswith(b"\r\n\r\n12345")
    assert bodies[0].closed == 1


def test_write_callable_goes_first():
    def app(environ, start_response):
        write = start_response("200 OK", [])
        write(b"w1")
        write(b"w2")
        return [b"it"]
    proto, _ = run(app)
    sent = b"".join(proto.driver.out) + proto.events[0][1]
    assert sent.endswith(b"2\r\nw1\r\n2\r\nw2\r\n2\r\nit\r\n0\r\n\r\n")


def test_start_response_rules():
    def twice(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return []
    proto, _ = run(twice)
    assert proto.events[-2] == ("response", 500)

    def replaced(environ, start_response):
        start_response("200 OK", [])
        try:
            raise KeyError("x")
        except KeyError:
            start_response("500 Oops", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"sorry"]
    proto, _ = run(replaced)
    assert proto.events[0][1].startswith(b"HTTP/1.1 500 Oops\r\n") and proto.events[0][1].endswith(b"sorry")

    seen = []

    def late(environ, start_response):
        start_response("200 OK", [])
        yield b"first"
        try:
            raise KeyError("late")
        except KeyError:
            try:
                start_response("500 Oops", [], sys.exc_info())
            except KeyError as exc:
                seen.append(exc)  # re-raised: the headers count as sent
        yield b"second"
    proto, _ = run(late)
    assert len(seen) == 1 and proto.events[0][1].endswith(b"6\r\nsecond\r\n0\r\n\r\n")

    def bad_header(environ, start_response):
        start_response("200 OK", [("Connection", "close")])
        return []
    proto, _ = run(bad_header)
    assert proto.events[-2] == ("response", 500)


def test_errors_before_and_after_the_head(caplog):
    def before(environ, start_response):
        raise RuntimeError("early")
    with caplog.at_level(logging.ERROR, logger="prefork.worker"):
        proto, _ = run(before)
    assert proto.events == [("end_wait", b""), ("response", 500), ("after_wait",)]
    assert [r.exc_info is not None for r in caplog.records] == [True]  # once, with its traceback

    bodies = []

    def chunks():
        yield b"one"
        yield b"two"
        raise RuntimeError("mid")

    def after(environ, start_response):
        start_response("200 OK", [])
        body = Body(chunks())
        bodies.append(body)
        return body
    proto, _ = run(after)
    assert proto.events == [("abort",)] and b"3\r\none\r\n" in proto.driver.out[0]
    assert bodies[0].closed == 1

    proto, _ = run(lambda e, s: [b"no start_response"])
    assert proto.events[1] == ("response", 500)


def test_the_thread_waits_above_high_water_and_stops_when_the_client_goes():
    proto = FakeProto(high_water=4)
    proto.driver.blocked = True
    bodies = []
    app = _app(chunks=(b"aaaa", b"bbbb", b"cccc", b"dddd"), holder=bodies)
    call = _Call(WsgiApp(app), proto, _request(), lambda fn, *args: fn(*args))
    thread = threading.Thread(target=call.run)
    thread.start()
    deadline = threading.Event()
    while proto.driver.waiter is None and not deadline.wait(0.01):
        pass  # the first piece delivered, the connection blocked: the thread waits
    assert len(proto.driver.out) == 1 and thread.is_alive()
    proto.driver.blocked = False
    waiter, proto.driver.waiter = proto.driver.waiter, None
    waiter()  # drained: the thread goes on
    thread.join(5)
    assert not thread.is_alive() and proto.events[0][0] == "end_wait"

    proto = FakeProto(high_water=4)
    proto.driver.blocked = True
    bodies.clear()
    call = _Call(WsgiApp(app), proto, _request(), lambda fn, *args: fn(*args))
    thread = threading.Thread(target=call.run)
    thread.start()
    while proto.driver.waiter is None and not deadline.wait(0.01):
        pass
    call.lost()  # the client went: the thread stops, the iterable is closed, nothing completes
    thread.join(5)
    assert not thread.is_alive() and proto.events == [] and bodies[0].closed == 1


def test_file_wrapper_on_a_regular_file_is_a_file_chunk(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789")
    opened = []

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        f = open(path, "rb")
        f.seek(3)
        opened.append(f)
        return environ["wsgi.file_wrapper"](f)
    proto, _ = run(app)
    kind, out = proto.events[0]
    assert kind == "end_wait" and type(out) is list and len(out) == 2
    assert out[0].endswith(b"Content-Length: 7\r\n\r\n")
    chunk = out[1]
    assert type(chunk) is FileChunk and (chunk.offset, chunk.count) == (3, 7)
    assert opened[0].closed and os.pread(chunk.fd, 7, 3) == b"3456789"  # its own fd: the app's file is closed
    assert proto.events[1] == ("answered", 200, 7, True) and proto.hold  # held until the file is sent
    chunk.close()

    def pipe_app(environ, start_response):  # not a regular file: iterated as wsgiref's FileWrapper does
        start_response("200 OK", [])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"abc"), 2)
    proto, _ = run(pipe_app)
    sent = b"".join(proto.driver.out) + proto.events[0][1]
    assert sent.endswith(b"2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")


def test_proto_bench_wsgi_case_runs_whole_requests():
    """prefork-bench proto --case wsgi-hello (the instruction counts of the
    README): each request goes through the protocol, the dispatcher and the
    call, and its 200 is delivered (run() checks the first, and would raise)."""
    from prefork_bench.protobench import run as proto_run

    per_request = proto_run("wsgi-hello", 200, 1)
    assert 0 < per_request < 0.01
