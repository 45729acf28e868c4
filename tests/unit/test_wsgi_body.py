"""Streamed request bodies in the WSGI adapter (prefork/wsgi.py, wsgi_input.py)
over the sans-IO protocol's body-sink mode: a real thread runs the app, the
test's thread is the reactor (it runs the hand-backs and feeds the protocol
while its fake driver is not paused).

tests/e2e/test_wsgi_body_e2e.py has the same over real sockets."""

from __future__ import annotations

import hashlib
import io
import queue
import threading
import time

import pytest

from http_helpers import Clock, RecordingDriver, chunked, make_ctx, post
from prefork.config import ConfigError, HttpConfig, from_dict
from prefork.dispatch import STREAMING, HttpServerProtocol, Router
from prefork.wsgi import WsgiApp
from prefork.wsgi_input import BodyInput

LIMIT = 4096


class Driver(RecordingDriver):
    """The recording driver, with the WSGI adapter's flow control (never blocked)."""

    def hold(self):
        self.deliver(self.proto.resume())

    def write_blocked(self):
        return False

    def when_drained(self, callback):
        callback()

    def sockname(self):
        return ("127.0.0.1", 8000)


class Reactor:
    """The protocol, its driver, a thread per submitted call, and the hand-backs
    run on the test's thread (the reactor's)."""

    def __init__(self, app, clock=None, **limits):
        limits.setdefault("wsgi_body_buffer", LIMIT)
        router = Router()
        router.add("/", WsgiApp(app))
        self.ctx = make_ctx(clock=clock, routes=router, **limits)
        self.backs: queue.Queue = queue.Queue()
        self.threads: list[threading.Thread] = []
        self.ctx.submit = self._submit
        self.ctx.hand_back = lambda fn, *args: self.backs.put((fn, args))
        self.driver = Driver()
        self.proto = HttpServerProtocol(self.ctx, peer=("10.1.2.3", 4567), driver=self.driver)
        self.driver.proto = self.proto

    def _submit(self, fn, arg, done):
        def work():
            fn(arg)
            if done is not None:  # the pool's contract: None hands nothing back
                self.backs.put((done, (None, None)))
        thread = threading.Thread(target=work, daemon=True)
        self.threads.append(thread)
        thread.start()
        return True

    def turn(self, wait: float = 0.002) -> None:
        try:
            fn, args = self.backs.get(timeout=wait)
        except queue.Empty:
            return
        fn(*args)

    def feed(self, data: bytes, step: int = 0, deadline: float = 10.0) -> bytes:
        """Feed ``data`` in pieces while reading is not paused; what is left if it stays paused."""
        step = step or len(data)
        end = time.monotonic() + deadline
        while data and time.monotonic() < end and not self.driver.closed:
            if self.driver.paused:
                self.turn()
                continue
            piece, data = data[:step], data[step:]
            self.driver.deliver(self.proto.data_received(piece))
        return data

    def until(self, predicate, deadline: float = 10.0) -> bool:
        end = time.monotonic() + deadline
        while not predicate() and time.monotonic() < end:
            self.turn()
        return predicate()

    def finished(self) -> bool:
        return self.until(lambda: not self.ctx.asgi_calls and all(not t.is_alive() for t in self.threads)
                          and self.backs.empty())


def digest_app(seen, piece=1000, gate=None):
    """Reads wsgi.input in ``piece`` bytes; answers its sha256 and size."""
    def app(environ, start_response):
        body = environ["wsgi.input"]
        seen["input"] = type(body)
        if gate is not None:
            gate.wait(10)
        h = hashlib.sha256()
        n = 0
        while True:
            data = body.read(piece)
            if not data:
                break
            seen["held"] = max(seen.get("held", 0), getattr(body, "size", 0))
            h.update(data)
            n += len(data)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%s %d" % (h.hexdigest().encode(), n)]
    return app


BIG = bytes(range(256)) * 1024  # 256 KiB


@pytest.mark.parametrize("step", [0, 1000, 65536])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_large_body_streams_through_a_bounded_buffer(framing, step):
    seen = {}
    r = Reactor(digest_app(seen))
    request = post(BIG, path=b"/up") if framing == "length" else chunked(
        [BIG[i:i + 5000] for i in range(0, len(BIG), 5000)], path=b"/up")
    assert r.feed(request, step) == b""
    assert r.finished()
    assert seen["input"] is BodyInput
    assert seen["held"] <= LIMIT + (step or len(request))  # at most a read beyond the limit
    assert r.driver.out.endswith(b"%s %d" % (hashlib.sha256(BIG).hexdigest().encode(), len(BIG)))
    assert r.driver.out.startswith(b"HTTP/1.1 200 OK\r\n")
    assert r.ctx.requests == 1


def test_reading_pauses_while_the_buffer_is_full_and_resumes_as_the_app_reads():
    seen = {}
    gate = threading.Event()
    r = Reactor(digest_app(seen, gate=gate))
    rest = r.feed(post(BIG, path=b"/up"), 1000, deadline=0.5)
    assert rest  # the app has read nothing: the protocol stopped reading
    assert r.driver.paused
    held = r.ctx.asgi_calls[r.proto].body.size
    assert LIMIT <= held <= LIMIT + 1000
    gate.set()
    assert r.feed(rest, 1000) == b""
    assert r.finished()
    assert r.driver.out.endswith(b" %d" % len(BIG))


def test_a_small_body_comes_whole_before_the_app_runs():
    seen = {}
    r = Reactor(digest_app(seen))
    body = b"x" * LIMIT
    assert r.feed(post(body, path=b"/up")) == b""
    assert r.finished()
    assert seen["input"] is io.BytesIO
    assert r.driver.out.endswith(b" %d" % LIMIT)
    assert r.ctx.requests == 1
    assert not r.driver.closed  # kept alive


def test_readline_readlines_and_iteration_on_a_streamed_body():
    lines = [b"line %d %s\n" % (i, b"y" * (i % 97)) for i in range(2000)]
    body = b"".join(lines) + b"tail"
    got = {}

    def app(environ, start_response):
        stream = environ["wsgi.input"]
        got["first"] = stream.readline()
        got["limited"] = stream.readline(3)
        got["rest_of_1"] = stream.readline()
        got["some"] = stream.readlines(100)
        got["iter"] = [line for _, line in zip(range(10), stream)]
        got["all"] = stream.read()
        got["eof"] = (stream.read(), stream.readline(), stream.read(10))
        start_response("204 No Content", [])
        return []

    r = Reactor(app)
    assert r.feed(chunked([body[i:i + 3000] for i in range(0, len(body), 3000)], path=b"/x"), 777) == b""
    assert r.finished()
    assert got["first"] == lines[0]
    assert got["limited"] + got["rest_of_1"] == lines[1] and got["limited"] == lines[1][:3]
    assert got["some"] == lines[2:2 + len(got["some"])] and sum(map(len, got["some"])) >= 100
    n = 2 + len(got["some"])
    assert got["iter"] == lines[n:n + 10]
    assert got["all"] == b"".join(lines[n + 10:]) + b"tail"
    assert got["eof"] == (b"", b"", b"")
    assert r.driver.out.startswith(b"HTTP/1.1 204")


def cutting_app(seen):
    def app(environ, start_response):
        try:
            while environ["wsgi.input"].read(1000):
                pass
        except OSError as exc:
            seen["error"] = exc
            raise
        start_response("200 OK", [])
        return [b"whole"]
    return app


def test_body_timeout_while_the_app_waits_is_a_408_and_its_read_raises():
    clock = Clock()
    seen = {}
    r = Reactor(cutting_app(seen), clock=clock, body_timeout=5.0)
    request = post(BIG, path=b"/up")
    assert r.feed(request[:20000]) == b""
    assert r.until(lambda: r.proto.deadline > 0 and not r.driver.paused)  # waiting for bytes on their way
    clock.now += 6
    r.driver.deliver(r.proto.timeout(clock.now))
    assert r.finished()
    assert isinstance(seen["error"], OSError)
    assert r.driver.out.startswith(b"HTTP/1.1 408")
    assert r.driver.closed


def test_the_client_going_mid_body_makes_the_read_raise():
    seen = {}
    r = Reactor(cutting_app(seen))
    assert r.feed(post(BIG, path=b"/up")[:20000]) == b""
    assert r.until(lambda: "input" in seen or not r.driver.paused)
    r.proto.connection_lost()
    assert r.finished()
    assert isinstance(seen["error"], OSError)
    assert b"whole" not in r.driver.out


def test_an_app_that_answers_before_reading_the_body_closes_the_connection():
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"early"]

    r = Reactor(app)
    r.feed(post(BIG, path=b"/up")[:10000])
    assert r.finished()
    assert b"Connection: close" in r.driver.out or b"connection: close" in r.driver.out.lower()
    assert r.driver.out.endswith(b"early")


def test_a_wsgi_app_is_a_streaming_route():
    router = Router()
    app = WsgiApp(lambda e, s: [])
    router.add("/", app)
    assert router.resolve(b"/anything") == (app, STREAMING)


def test_wsgi_body_buffer_is_checked():
    assert HttpConfig().wsgi_body_buffer == 65536
    listen = [{"address": "127.0.0.1:8000"}]
    assert from_dict({"listen": listen, "http": {"wsgi_body_buffer": 8192}}).http.wsgi_body_buffer == 8192
    for bad in (0, -1, "big", 1.5, True):
        with pytest.raises(ConfigError, match=r"x\.toml.*wsgi_body_buffer"):
            from_dict({"listen": listen, "http": {"wsgi_body_buffer": bad}}, "x.toml")


@pytest.mark.parametrize("expect", [False, True])
def test_a_short_chunked_body_comes_whole_with_its_length(expect):
    seen = {}

    def app(environ, start_response):
        seen["input"] = type(environ["wsgi.input"])
        seen["length"] = environ.get("CONTENT_LENGTH")
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response("200 OK", [])
        return [b"got " + body]

    r = Reactor(app)
    head, _, rest = chunked([b"chunk one, ", b"chunk two"], path=b"/x",
                            headers=b"Expect: 100-continue\r\n" if expect else b"").partition(b"\r\n\r\n")
    r.feed(head + b"\r\n\r\n")
    if expect:  # asked for before the app runs, so that the body comes
        assert r.until(lambda: r.driver.out == b"HTTP/1.1 100 Continue\r\n\r\n")
    assert r.feed(rest, 5) == b""
    assert r.finished()
    assert seen == {"input": io.BytesIO, "length": "20"}
    assert r.driver.out.endswith(b"got chunk one, chunk two")
    assert b"close" not in r.driver.out.lower()
