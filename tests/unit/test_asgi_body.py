"""Streamed request bodies, 100-continue, pathsend and trailers in the ASGI
adapter (prefork/asgi.py, asgi_response.py) over the sans-IO protocol's
body-sink mode (protocols/http.py): raw ASGI apps, a fake driver that honours
pause/resume, fed whole, byte by byte and pipelined.

tests/unit/test_asgi.py has the rest of the adapter's spec tests;
tests/e2e/test_asgi_body_e2e.py the same over real sockets."""

from __future__ import annotations

import asyncio
import os

import pytest

from http_helpers import Clock, chunked, get, make_ctx, post
from prefork.asgi import AsgiApp
from prefork.dispatch import HttpServerProtocol, Router
from prefork.messages import FileChunk, Response
from prefork.protocols.http import IDLE, WAITING
from test_asgi import Driver, parse

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class FileDriver(Driver):
    """The test driver, sending file chunks by reading them (as the asyncio pump does)."""

    def __init__(self):
        super().__init__()
        self.files = 0

    def deliver(self, out):
        if type(out) is list:
            data = b""
            for part in out:
                if type(part) is FileChunk:
                    self.files += 1
                    data += os.pread(part.fd, part.count, part.offset)
                    part.close()
                else:
                    data += part
            out = data
        super().deliver(out)


def serve(app, clock=None, extra_routes=None, **limits):
    router = Router(extra_routes or {})
    router.add("/", AsgiApp(app, "/"), True)
    ctx = make_ctx(clock=clock, routes=router, **limits)
    driver = FileDriver()
    proto = HttpServerProtocol(ctx, peer=("10.1.2.3", 4567), driver=driver)
    driver.proto = proto
    return proto, driver


async def until(predicate, rounds=500):
    """Let the loop run until ``predicate()`` holds (a bounded number of turns)."""
    for _ in range(rounds):
        if predicate():
            return True
        await asyncio.sleep(0)
    return predicate()


async def feed(proto, driver, data: bytes, step: int = 0):
    """Feed ``data`` as a driver would: in pieces of ``step`` bytes (all at
    once for 0), and only while reading is not paused. Returns what is left
    when reading stays paused."""
    step = step or len(data)
    while data:
        if not await until(lambda: not driver.paused or driver.closed):
            return data
        if driver.closed:
            return data
        piece, data = data[:step], data[step:]
        driver.deliver(proto.data_received(piece))
    return b""


async def done(proto, timeout=5.0):
    """Until the call has ended: bare turns, then (an app waiting for a thread,
    as Starlette's FileResponse does for its stat) polling up to ``timeout``."""
    finished = lambda: not proto.ctx.asgi_calls and proto.state != WAITING  # noqa: E731
    if await until(finished):
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not finished() and loop.time() < deadline:
        await asyncio.sleep(0.005)


def recorder(log, answer=True):
    """An app that reads the whole body, noting each message, then answers its size."""
    async def app(scope, receive, send):
        total = b""
        while True:
            message = await receive()
            log.append(message)
            if message["type"] != "http.request":
                return
            total += message["body"]
            if not message["more_body"]:
                break
        if answer:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"%d:%s" % (len(total), total[:16])})
    return app


BODY = bytes(range(256)) * 40  # 10 KiB


@pytest.mark.parametrize("step", [0, 1, 7, 1000])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_streamed_body_arrives_as_more_body_messages(framing, step):
    request = post(BODY, path=b"/up") if framing == "length" else chunked(
        [BODY[i:i + 3000] for i in range(0, len(BODY), 3000)], path=b"/up")
    log = []

    async def main():
        proto, driver = serve(recorder(log))
        rest = await feed(proto, driver, request + get(b"/after"), step)
        await done(proto)
        if rest:  # the pipelined GET waited behind the upload
            await feed(proto, driver, rest, step)
            await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    first, second = parse(driver.out)
    assert first[0] == 200 and first[2] == b"%d:%s" % (len(BODY), BODY[:16])
    assert second[0] == 200 and second[2] == b"0:"  # the GET: an empty body, kept alive
    bodies = [m for m in log if m["type"] == "http.request"]
    upload, after = bodies[:-1], bodies[-1]
    assert after == {"type": "http.request", "body": b"", "more_body": False}
    assert b"".join(m["body"] for m in upload) == BODY
    assert all(m["more_body"] for m in upload[:-1]) and not upload[-1]["more_body"]
    if step == 1:
        assert len(upload) > 100  # byte by byte: it came as it arrived, not gathered
    if step == 0:
        assert upload == [{"type": "http.request", "body": BODY, "more_body": False}]
    assert proto.state == IDLE and not driver.closed
    assert (proto.ctx.reading, proto.ctx.pooled, proto.ctx.requests) == (0, 0, 2)  # /status counts


def test_reading_stops_while_the_app_does_not_receive_and_resumes_when_it_does():
    gate = asyncio.Event
    taken = []

    async def main():
        go = gate()

        async def app(scope, receive, send):
            await go.wait()
            while True:
                message = await receive()
                taken.append(len(message["body"]))
                if not message["more_body"]:
                    break
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body"})

        proto, driver = serve(app, body_timeout=5.0)
        head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 30000\r\n\r\n"
        driver.deliver(proto.data_received(head + b"a" * 1000))
        assert proto.state == WAITING and driver.paused  # the app has the request, not its body
        await until(lambda: False, rounds=20)
        assert driver.paused and proto.deadline == 0.0  # it does not read: nor do we (no body timeout)
        call = proto.ctx.asgi_calls[proto]
        assert call.chunks == [b"a" * 1000]  # what is held: one read
        go.set()
        assert await until(lambda: not driver.paused)  # taken: read on
        assert proto.deadline > 0  # with the body deadline again
        driver.deliver(proto.data_received(b"b" * 20000))
        assert driver.paused  # one read at a time
        await feed(proto, driver, b"c" * 9000)
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert taken == [1000, 20000, 9000]
    assert parse(driver.out)[0][0] == 204 and proto.state == IDLE and not driver.paused


@pytest.mark.parametrize("started", [False, True])
def test_max_body_mid_stream_is_a_413_or_a_close(started):
    got = []

    async def app(scope, receive, send):
        if started:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        while True:
            message = await receive()
            got.append(message["type"])
            if message["type"] == "http.disconnect":
                break
        try:
            await send({"type": "http.response.body", "body": b"late"})
        except OSError as exc:
            got.append(type(exc).__name__)

    async def main():
        proto, driver = serve(app, max_body=5000)
        await feed(proto, driver, chunked([b"x" * 1000] * 10, path=b"/up"), 1500)
        await until(lambda: len(got) >= 3)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got[-2:] == ["http.disconnect", "ClientDisconnected"] and "http.request" in got
    assert proto.closing and driver.closed and not proto.ctx.asgi_calls and proto.ctx.pooled == 0
    if started:  # its answer had begun: cut (no last chunk), never a 413 after it
        assert driver.out.count(b"HTTP/1.1 ") == 1 and b"413" not in driver.out
        assert not driver.out.endswith(b"0\r\n\r\n")
    else:
        [(status, headers, _, _)] = parse(driver.out)
        assert status == 413 and headers["connection"] == "close" and proto.linger


def test_body_timeout_while_reading_for_the_app_is_a_408_but_not_while_it_holds_the_body():
    clock = Clock()
    got = []

    async def main():
        go = asyncio.Event()

        async def app(scope, receive, send):
            await go.wait()
            got.append(await receive())
            got.append(await receive())

        proto, driver = serve(app, clock=clock, body_timeout=10.0)
        driver.deliver(proto.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"))
        clock.now += 100  # the app holds the body: the time is its own
        assert proto.deadline == 0.0
        go.set()
        assert await until(lambda: not driver.paused)
        assert proto.deadline == clock.now + 10.0
        clock.now += 11
        driver.deliver(proto.timeout(clock.now))
        await until(lambda: len(got) == 2)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got == [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]
    [(status, headers, _, _)] = parse(driver.out)
    assert status == 408 and headers["connection"] == "close" and driver.closed


def test_100_continue_is_sent_at_the_first_receive_only():
    async def main():
        go = asyncio.Event()
        log = []
        inner = recorder(log)

        async def app(scope, receive, send):
            await go.wait()
            await inner(scope, receive, send)

        proto, driver = serve(app)
        driver.deliver(proto.data_received(
            b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"))
        await until(lambda: False, rounds=20)
        before = bytes(driver.out)
        go.set()
        assert await until(lambda: driver.out)
        at_receive = bytes(driver.out)
        rest = await feed(proto, driver, b"hello")
        await done(proto)
        return before, at_receive, rest, driver

    before, at_receive, rest, driver = asyncio.run(main())
    assert before == b"" and at_receive == CONTINUE and rest == b""
    assert driver.out.count(b"100 Continue") == 1
    [(status, _, body, _)] = parse(driver.out[len(CONTINUE):])
    assert (status, body) == (200, b"5:hello")
    assert not driver.closed


@pytest.mark.parametrize("expect", [True, False])
def test_an_app_that_answers_without_reading_gets_no_100_and_the_connection_closes(expect):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 403, "headers": []})
        await send({"type": "http.response.body", "body": b"no"})

    async def main():
        proto, driver = serve(app)
        head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 50000\r\n" + (
            b"Expect: 100-continue\r\n" if expect else b"") + b"\r\n"
        driver.deliver(proto.data_received(head + (b"" if expect else b"x" * 100)))
        await done(proto)
        # what the client sends now is never parsed as a request (a lingering close drops it)
        driver.deliver(proto.data_received(b"x" * 1000 + get(b"/smuggled")))
        return proto, driver

    proto, driver = asyncio.run(main())
    assert b"100 Continue" not in driver.out
    [(status, headers, body, _)] = parse(driver.out)
    assert (status, body, headers["connection"]) == (403, b"no", "close")
    assert proto.closing and proto.linger and driver.closed and proto.ctx.requests == 1


def test_a_body_that_came_whole_before_the_app_ran_keeps_the_connection_alive_unread():
    async def main():
        proto, driver = serve(lambda scope, receive, send: _answer(send, b"ignored it"))
        await feed(proto, driver, post(b"x" * 300, path=b"/up") + get(b"/next"))
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert [r[2] for r in parse(driver.out)] == [b"ignored it", b"ignored it"]
    assert not driver.closed and proto.state == IDLE


async def _answer(send, body):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def slow_then(inner, gate=None, listen=False):
    """``inner`` for every path but /slow, which answers "0:" after a few turns
    of the loop (or once ``gate`` is set). With ``listen``, /slow waits in a second
    receive() meanwhile (for http.disconnect), so the protocol reads on."""
    async def app(scope, receive, send):
        if scope["path"] != "/slow":
            await inner(scope, receive, send)
            return
        await receive()
        listener = asyncio.ensure_future(receive()) if listen else None
        if gate is not None:
            await gate.wait()
        for _ in range(5):  # a few turns of the loop (deterministic: feed() waits out 500)
            await asyncio.sleep(0)
        await _answer(send, b"0:")
        if listener is not None:
            assert (await listener) == {"type": "http.disconnect"}
    return app


@pytest.mark.parametrize("step", [1000, 4096])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_a_request_queued_behind_another_streams_when_its_turn_comes(framing, step):
    """Pipelined behind a request its app is still answering, an upload's head
    and the start of its body wait in the parser (reading paused: one read at
    most); at its turn the app gets that much, then the rest as it comes."""
    upload = post(BODY, path=b"/up") if framing == "length" else chunked(
        [BODY[i:i + 3000] for i in range(0, len(BODY), 3000)], path=b"/up")
    log = []
    held = []

    async def main():
        proto, driver = serve(slow_then(recorder(log)))
        data = get(b"/slow") + upload + get(b"/after")
        driver.deliver(proto.data_received(data[:step]))
        p = proto._p
        held.append((proto.state, driver.paused, sum(map(len, p.body or ())), proto.ctx.asgi_calls[proto].request.path))
        await feed(proto, driver, data[step:], step)
        await until(lambda: driver.out.count(b"HTTP/1.1 200") == 3, rounds=5000)
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert [r[2] for r in parse(driver.out)] == [b"0:", b"%d:%s" % (len(BODY), BODY[:16]), b"0:"]
    state, paused, queued, path = held[0]
    assert (state, paused, path) == (WAITING, True, b"/slow") and 0 < queued < step  # the upload waits
    bodies = [m for m in log if m["type"] == "http.request"]
    upload_msgs = bodies[:-1]
    assert b"".join(m["body"] for m in upload_msgs) == BODY
    assert len(upload_msgs) > 1 and all(m["more_body"] for m in upload_msgs[:-1])
    assert not upload_msgs[-1]["more_body"]
    if framing == "length":
        assert len(upload_msgs[0]["body"]) == queued  # what was held, then back-pressure: a read at a time
    assert proto.state == IDLE and not driver.closed
    assert (proto.ctx.reading, proto.ctx.pooled, proto.ctx.requests) == (0, 0, 3)


def test_a_request_queued_while_the_app_listens_streams_byte_by_byte():
    """An app waiting for http.disconnect lets the protocol read on; a queued
    upload's head comes, and one byte of its body, then reading stops until
    its turn: the app then gets the body byte by byte as it arrives."""
    log = []
    seen = {}

    async def main():
        gate = asyncio.Event()
        proto, driver = serve(slow_then(recorder(log), gate, listen=True))
        rest = await feed(proto, driver, get(b"/slow") + post(BODY, path=b"/up"), 1)
        seen["held"] = (proto.state, driver.paused, proto._p.body, len(BODY) - len(rest))
        gate.set()
        await feed(proto, driver, rest, 1)
        await until(lambda: driver.out.count(b"HTTP/1.1 200") == 2, rounds=5000)
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    state, paused, body, sent = seen["held"]
    assert (state, paused, body, sent) == (WAITING, True, [BODY[:1]], 1)  # a read's worth, no more
    assert [r[2] for r in parse(driver.out)] == [b"0:", b"%d:%s" % (len(BODY), BODY[:16])]
    upload = [m for m in log if m["type"] == "http.request"]
    assert upload[0] == {"type": "http.request", "body": BODY[:1], "more_body": True}
    assert len(upload) > 1000 and b"".join(m["body"] for m in upload) == BODY
    assert proto.state == IDLE and not driver.closed and (proto.ctx.reading, proto.ctx.pooled) == (0, 0)


def test_a_queued_request_gets_its_100_continue_at_its_apps_first_receive():
    """Not when its turn comes (as before): when its app first asks for the body."""
    log = []
    marks = {}

    async def main():
        go = asyncio.Event()
        inner = recorder(log)

        async def gated(scope, receive, send):
            await go.wait()
            await inner(scope, receive, send)

        proto, driver = serve(slow_then(gated))
        head = b"POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n"
        driver.deliver(proto.data_received(get(b"/slow") + head))
        await until(lambda: b"0:" in driver.out, rounds=5000)
        await until(lambda: False, rounds=20)
        marks["turn"] = bytes(driver.out)
        go.set()
        await until(lambda: b"100 Continue" in driver.out)
        marks["receive"] = bytes(driver.out)
        await feed(proto, driver, b"hello")
        await done(proto)
        return driver

    driver = asyncio.run(main())
    assert b"100 Continue" not in marks["turn"] and marks["turn"].startswith(b"HTTP/1.1 200")
    assert marks["receive"].endswith(CONTINUE) and driver.out.count(b"100 Continue") == 1
    assert parse(driver.out.replace(CONTINUE, b""))[1][2] == b"5:hello"


def test_a_builtin_route_queued_behind_an_asgi_request_still_gets_its_body_whole():
    seen = []

    def handler(request):
        seen.append(request.body)
        return Response(200, b"builtin %d" % len(request.body))

    async def main():
        proto, driver = serve(slow_then(recorder([])), extra_routes={b"/plain": handler})
        await feed(proto, driver, get(b"/slow") + post(b"z" * 3000, path=b"/plain") + get(b"/plain"), 1000)
        await until(lambda: driver.out.count(b"HTTP/1.1 200") == 3, rounds=5000)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert seen == [b"z" * 3000, b""]
    assert [r[2] for r in parse(driver.out)] == [b"0:", b"builtin 3000", b"builtin 0"]
    assert proto.state == IDLE and (proto.ctx.reading, proto.ctx.pooled) == (0, 0)


def test_status_counts_a_connection_streaming_a_body_as_reading_then_pooled():
    counts = []

    async def main():
        go = asyncio.Event()

        async def app(scope, receive, send):
            while (await receive())["more_body"]:
                pass
            await go.wait()
            await _answer(send, b"ok")

        proto, driver = serve(app)
        ctx = proto.ctx
        driver.deliver(proto.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
        counts.append((ctx.reading, ctx.pooled))  # the body is coming
        await feed(proto, driver, b"defghij")
        await until(lambda: False, rounds=20)
        counts.append((ctx.reading, ctx.pooled))  # whole: the app computes its answer
        go.set()
        await done(proto)
        counts.append((ctx.reading, ctx.pooled))
        # and a body cut by the client's going: nothing left counted
        driver.deliver(proto.data_received(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
        counts.append((ctx.reading, ctx.pooled))
        proto.connection_lost()
        counts.append((ctx.reading, ctx.pooled))
        await until(lambda: False, rounds=20)

    asyncio.run(main())
    assert counts == [(1, 0), (0, 1), (0, 0), (1, 0), (0, 0)]


def test_an_asgi_app_added_without_blocking_is_still_served_as_a_streaming_route():
    """The route's kind comes from what it is (recorded once by Router.add), not the flag."""
    log = []

    async def main():
        router = Router({})
        router.add("/", AsgiApp(recorder(log), "/"))
        ctx = make_ctx(routes=router)
        driver = FileDriver()
        proto = HttpServerProtocol(ctx, peer=("10.1.2.3", 4567), driver=driver)
        driver.proto = proto
        await feed(proto, driver, get(b"/x") + post(b"abc", path=b"/y"))
        await until(lambda: driver.out.count(b"HTTP/1.1 200") == 2, rounds=5000)
        return driver

    driver = asyncio.run(main())
    assert [r[2] for r in parse(driver.out)] == [b"0:", b"3:abc"]


def test_eof_mid_body_gives_the_data_then_disconnect():
    got = []

    async def main():
        async def app(scope, receive, send):
            got.append(await receive())
            got.append(await receive())

        proto, driver = serve(app)
        await feed(proto, driver, b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc")
        await until(lambda: got)
        driver.deliver(proto.eof_received())
        await until(lambda: len(got) == 2)
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got == [{"type": "http.request", "body": b"abc", "more_body": True}, {"type": "http.disconnect"}]
    assert parse(driver.out)[0][0] == 500  # it returned without an answer
    assert driver.closed


def test_builtin_routes_beside_an_asgi_app_still_get_whole_bodies():
    seen = []

    def handler(request):
        seen.append(request.body)
        return Response(200, b"builtin %d" % len(request.body))

    async def main():
        proto, driver = serve(recorder([]), extra_routes={b"/plain": handler})
        await feed(proto, driver, post(b"z" * 3000, path=b"/plain"), 100)
        await done(proto)
        return driver

    driver = asyncio.run(main())
    assert seen == [b"z" * 3000] and parse(driver.out)[0][2] == b"builtin 3000"


# --- pathsend ---------------------------------------------------------------------


def pathsend_app(path, headers=(), before=b""):
    async def app(scope, receive, send):
        assert "http.response.pathsend" in scope["extensions"]
        await send({"type": "http.response.start", "status": 200, "headers": list(headers)})
        if before:
            await send({"type": "http.response.body", "body": before, "more_body": True})
        await send({"type": "http.response.pathsend", "path": str(path)})
    return app


@pytest.fixture
def data_file(tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(300_000))
    return path


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_pathsend_sends_the_whole_file_with_its_length_as_a_file_chunk(data_file):
    async def main(app, request):
        proto, driver = serve(app)
        await feed(proto, driver, request)
        await done(proto)
        return proto, driver

    fds = open_fds()
    proto, driver = asyncio.run(main(pathsend_app(data_file), get(b"/f") + get(b"/f")))
    responses = parse(driver.out)
    assert len(responses) == 2 and driver.files == 2  # as FileChunks, one per response (held between)
    for status, headers, body, framing in responses:
        assert (status, framing, headers["content-length"]) == (200, "length", "300000")
        assert body == data_file.read_bytes()
    # after a streamed start (HTTP/1.1, no length): one chunk
    proto, driver = asyncio.run(main(pathsend_app(data_file, before=b"head:"), get(b"/f")))
    [(_, headers, body, framing)] = parse(driver.out)
    assert framing == "chunked" and body == b"head:" + data_file.read_bytes()
    # HEAD: the length, no body, the file never opened
    proto, driver = asyncio.run(main(pathsend_app(data_file), get(b"/f", method=b"HEAD")))
    [(status, headers, _, _)] = parse(driver.out, head_only=True)
    assert headers["content-length"] == "300000" and driver.out.endswith(b"\r\n\r\n") and driver.files == 0
    # a Content-Length the file does not match: never a broken frame
    proto, driver = asyncio.run(main(pathsend_app(data_file, [(b"content-length", b"10")]), get(b"/f")))
    assert driver.aborted or parse(driver.out)[0][0] == 500
    assert open_fds() == fds  # every file closed


# --- trailers ---------------------------------------------------------------------


def trailers_app(seen, headers=()):
    async def app(scope, receive, send):
        seen.append(scope["extensions"])
        await send({"type": "http.response.start", "status": 200, "headers": list(headers), "trailers": True})
        await send({"type": "http.response.body", "body": b"data", "more_body": True})
        await send({"type": "http.response.body", "body": b"more"})
        await send({"type": "http.response.trailers", "headers": [(b"x-checksum", b"abc")], "more_trailers": True})
        await send({"type": "http.response.trailers", "headers": [(b"x-count", b"2")]})
    return app


def test_trailers_go_in_the_last_chunk_when_the_client_sent_te_trailers():
    seen = []

    async def main(request, headers=()):
        proto, driver = serve(trailers_app(seen, headers))
        await feed(proto, driver, request + get(b"/next"))
        await done(proto)
        return proto, driver

    proto, driver = asyncio.run(main(get(b"/t", headers=b"TE: deflate, trailers\r\n")))
    assert seen[0] == {"http.response.pathsend": {}, "http.response.trailers": {}}
    head, _, rest = bytes(driver.out).partition(b"\r\n\r\n")
    assert b"Transfer-Encoding: chunked" in head
    assert rest.startswith(b"4\r\ndata\r\n4\r\nmore\r\n0\r\nx-checksum: abc\r\nx-count: 2\r\n\r\nHTTP/1.1 200")
    [(status, _, body, _)] = parse(rest.partition(b"x-count: 2\r\n\r\n")[2])
    assert (status, body) == (200, b"datamore") and not driver.closed  # kept alive: the next one came
    # no TE: trailers: not advertised, and dropped if sent anyway
    seen.clear()
    proto, driver = asyncio.run(main(get(b"/t")))
    assert seen[0] == {"http.response.pathsend": {}}
    assert b"x-checksum" not in driver.out and [r[2] for r in parse(driver.out)][0] == b"datamore"
    # a Content-Length response drops them
    proto, driver = asyncio.run(main(get(b"/t", headers=b"TE: trailers\r\n"), [(b"content-length", b"8")]))
    assert b"x-checksum" not in driver.out and parse(driver.out)[0][2] == b"datamore"
    # HTTP/1.0: close-delimited, dropped
    proto, driver = asyncio.run(main(get(b"/t", version=b"1.0", headers=b"TE: trailers\r\n")))
    assert b"x-checksum" not in driver.out and parse(driver.out)[0][2] == b"datamore" and driver.closed


def test_starlette_file_response_uses_pathsend_when_offered(data_file):
    from starlette.responses import FileResponse

    async def main():
        proto, driver = serve(FileResponse(data_file))
        await feed(proto, driver, get(b"/f"))
        await done(proto)  # Starlette stats the file in a thread: done() polls with a deadline
        return driver

    driver = asyncio.run(main())
    [(status, headers, body, _)] = parse(driver.out)
    assert status == 200 and body == data_file.read_bytes() and driver.files == 1


def test_a_streamed_request_from_a_trusted_proxy_gets_the_forwarded_client_and_scheme():
    """The head-time hand-over builds its own Request: the forwarded step runs there too."""
    import ipaddress
    seen = []

    async def app(scope, receive, send):
        seen.append((scope["client"], scope["scheme"]))
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body"})

    async def main():
        router = Router({})
        router.add("/", AsgiApp(app, "/"), True)
        ctx = make_ctx(routes=router, forwarded_allow=(ipaddress.ip_network("10.1.2.3"),))
        driver = FileDriver()
        proto = HttpServerProtocol(ctx, peer=("10.1.2.3", 4567), driver=driver)
        driver.proto = proto
        upload = post(BODY, path=b"/up", headers=b"X-Forwarded-For: 192.0.2.7:99\r\nX-Forwarded-Proto: https\r\n")
        await feed(proto, driver, upload, 1000)
        await done(proto)

    asyncio.run(main())
    assert seen == [(("192.0.2.7", 99), "https")]
