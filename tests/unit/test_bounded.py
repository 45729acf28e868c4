"""Bounded memory, fds and work per connection (issue 13, points 8-10).

Unit tests drive the sans-IO protocol with a fake driver; the e2e tests run a
server on every backend with clients that pipeline and do not read, flood a
connection whose request waits in the pool, or half-close, and measure the
worker in /proc: RSS, open fds, CPU time.

This file: the in-process tests; tests/e2e/test_bounded_e2e.py has those with
server processes, subprocesses and sockets."""

from __future__ import annotations

import os

from prefork.protocols import http as http_mod
from prefork.dispatch import HttpServerProtocol
from prefork.messages import FileChunk, Offload, Response
from prefork.protocols.http import WAITING
from prefork.apps.builtin import default_routes
from http_helpers import get, make_ctx, parse_responses

# --- unit: the protocol ---------------------------------------------------------------


class Driver:
    """Records the protocol's calls to its driver."""

    def __init__(self):
        self.calls = []
        self.delivered = []

    def pause_reading(self):
        self.calls.append("pause")

    def resume_reading(self):
        self.calls.append("resume")

    def hold(self):
        self.calls.append("hold")

    def deliver(self, out):
        self.delivered.append(out)


def proto_with(routes, **limits):
    ctx = make_ctx(routes=routes, **limits)
    jobs = []
    ctx.submit = lambda fn, arg, done: jobs.append((fn, arg, done)) or True
    driver = Driver()
    proto = HttpServerProtocol(ctx, peer=("127.0.0.1", 1), driver=driver)
    return proto, driver, jobs


def parts(out) -> list:
    return out if type(out) is list else [out]


def test_pipelined_file_bodies_are_one_at_a_time(tmp_path):
    """Each file response holds the connection: the next request is answered
    (and its file opened) only once the driver has sent the first."""
    path = tmp_path / "f"
    path.write_bytes(b"x" * 1000)
    opened = []

    def handler(request):
        fd = os.open(path, os.O_RDONLY)
        opened.append(fd)
        return Response(200, b"", b"application/octet-stream", file=FileChunk(fd, 0, 1000))

    proto, driver, _ = proto_with({b"/f": handler})
    try:
        out = proto.data_received(get(b"/f") * 5)
        assert [type(p) for p in parts(out)].count(FileChunk) == 1 and len(opened) == 1
        assert proto.held and proto.state == WAITING and driver.calls == ["hold"]
        for n in range(2, 6):
            out = proto.resume()
            assert [type(p) for p in parts(out)].count(FileChunk) == 1 and len(opened) == n
        assert proto.resume() == b"" or not proto.held
        assert proto.state == http_mod.IDLE and not proto._pending
    finally:
        for fd in opened:
            try:
                os.close(fd)
            except OSError:
                pass


def test_pipelined_inline_work_is_bounded_per_call():
    """A read full of pipelined requests answered by an inline handler (a
    database query, say): BURST answers per call, the rest after resume(), in order."""
    seen = []

    def handler(request):
        seen.append(request.query)
        return Response(200, request.query)

    proto, driver, _ = proto_with({b"/db": handler})
    n = 3 * http_mod.BURST + 5
    out = proto.data_received(b"".join(get(b"/db?%d" % i) for i in range(n)))
    responses = parse_responses(out)
    assert len(responses) == http_mod.BURST and len(seen) == http_mod.BURST and proto.held
    while proto.held:
        responses += parse_responses(proto.resume())
    assert [r.body for r in responses] == [b"%d" % i for i in range(n)]
    assert driver.calls.count("hold") == 3
    assert driver.calls.count("pause") == driver.calls.count("resume")  # reading is on again
    assert proto.state == http_mod.IDLE and proto.deadline  # kept alive, with its keep-alive deadline


def test_pipelined_large_responses_hold_above_high_water():
    big = Response(200, b"b" * 20000)
    proto, driver, _ = proto_with({b"/big/": lambda request: big}, high_water=65536)
    out = proto.data_received(get(b"/big/x") * 10)
    assert len(parse_responses(out)) == 4 and proto.held  # 4 * 20 KB > 64 KiB
    total = 4
    while proto.held:
        total += len(parse_responses(proto.resume()))
    assert total == 10


def test_held_connection_is_not_timed_out_nor_counted_as_pooled():
    proto, driver, _ = proto_with({b"/db": lambda request: Response(200, b"x")})
    proto.data_received(get(b"/db") * (http_mod.BURST + 1))
    assert proto.held and proto.ctx.pooled == 0
    assert proto.timeout(proto.ctx.clock() + 1e6) == b"" and not proto.closing
    proto.connection_lost()
    assert proto.ctx.pooled == 0 and proto.ctx.reading == 0


def test_reading_stops_while_a_request_waits_in_the_pool():
    """Lazily: the first read that comes while a request waits is queued, then
    reading stops until the answer is out (one read at most beyond it)."""
    proto, driver, jobs = proto_with({b"/slow": lambda request: Offload(lambda r: Response(200, b"ok"))})
    proto.data_received(get(b"/slow"))
    assert proto.state == WAITING and driver.calls == []  # nothing more came: no need to stop
    proto.data_received(get(b"/plaintext"))
    assert driver.calls == ["pause"] and len(proto._pending) == 1
    fn, arg, done = jobs.pop()
    done(fn(arg), None)
    assert driver.calls == ["pause", "resume"]
    responses = parse_responses(parts(driver.delivered[-1])[0])
    assert [r.status for r in responses] == [200, 404]  # /plaintext is not a route here


def test_a_wait_with_nothing_behind_it_never_stops_reading():
    proto, driver, jobs = proto_with({b"/slow": lambda request: Offload(lambda r: Response(200, b"ok"))})
    for _ in range(3):
        proto.data_received(get(b"/slow"))
        fn, arg, done = jobs.pop()
        done(fn(arg), None)
        [r] = parse_responses(parts(driver.delivered[-1])[0])
        assert r.status == 200 and proto._paused is False
    assert driver.calls == []


def test_reading_stops_at_once_when_the_read_that_began_the_wait_goes_on():
    """Pipelined behind the waiting request in the same read (whole, or a head
    begun): reading stops then, as it did before the pause was lazy."""
    for tail in (get(b"/plaintext"), b"GET /plaintext HTTP/1.1\r\nHo"):
        proto, driver, jobs = proto_with({b"/slow": lambda request: Offload(lambda r: Response(200, b"ok"))})
        proto.data_received(get(b"/slow") + tail)
        assert proto.state == WAITING and driver.calls == ["pause"]
        fn, arg, done = jobs.pop()
        done(fn(arg), None)
        assert driver.calls == ["pause", "resume"]


def test_head_size_is_checked_while_a_request_waits_in_the_pool():
    proto, driver, jobs = proto_with({b"/slow": lambda request: Offload(lambda r: Response(200, b"ok"))},
                                     max_header_bytes=4096)
    proto.data_received(get(b"/slow") + b"GET /plaintext HTTP/1.1\r\nHost: x\r\nX-Big: ")
    for _ in range(10):
        proto.data_received(b"a" * 4096)
    assert list(proto._pending) == [431]  # queued behind the pooled request; nothing more is parsed
    fn, arg, done = jobs.pop()
    done(fn(arg), None)
    responses = parse_responses(parts(driver.delivered[-1])[0])
    assert [r.status for r in responses] == [200, 431] and proto.closing


def test_eof_while_waiting_is_queued_once():
    """A half-closed client: the driver may report EOF more than once; the
    pending queue does not grow."""
    proto, driver, jobs = proto_with({b"/slow": lambda request: Offload(lambda r: Response(200, b"ok"))})
    proto.data_received(get(b"/slow"))
    for _ in range(100):
        assert proto.eof_received() == b""
    assert list(proto._pending) == [0]
    fn, arg, done = jobs.pop()
    done(fn(arg), None)
    [r] = parse_responses(parts(driver.delivered[-1])[0])
    assert r.status == 200 and proto.closing


def test_held_requests_keep_their_order_with_constants_and_a_bad_request():
    """Constant routes, an error and EOF queued while held all come out in order."""
    routes = dict(default_routes())
    routes[b"/db"] = lambda request: Response(200, b"db" + request.query)
    proto, driver, _ = proto_with(routes)
    data = b"".join(get(b"/db?%d" % i) for i in range(http_mod.BURST)) + get(b"/plaintext") + get(b"/db?last")
    out = proto.data_received(data + b"BAD REQUEST\r\n\r\n")
    assert proto.eof_received() == b""
    responses = parse_responses(out)
    assert len(responses) == http_mod.BURST and proto.held
    responses += parse_responses(proto.resume())
    assert [r.status for r in responses[-3:]] == [200, 200, 400]
    assert responses[-3].body == b"Hello, World!" and responses[-2].body == b"dblast"
    assert proto.closing and not proto.held


def test_100_continue_owed_behind_a_held_batch_is_sent_on_resume():
    """A request that expects 100-continue, pipelined behind a held batch,
    gets its 100 once the batch is sent (resume), as behind a pooled request."""
    proto, driver, _ = proto_with({b"/db": lambda request: Response(200, b"x"),
                                   b"/up": lambda request: Response(200, request.body)})
    expecting = (b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Expect: 100-continue\r\n\r\n")
    out = proto.data_received(get(b"/db") * (http_mod.BURST + 1) + expecting)
    assert proto.held and b"100 Continue" not in out
    out = proto.resume()
    assert out.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert parse_responses(proto.data_received(b"hello"))[-1].body == b"hello"
