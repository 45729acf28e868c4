"""The ASGI adapter (prefork/asgi.py) in-process: raw ASGI apps behind the
dispatcher, a fake driver collecting the bytes, on an asyncio loop.

This file: the in-process tests; tests/e2e/test_asgi_e2e.py has Starlette and
FastAPI apps behind real server processes, driven with httpx."""

from __future__ import annotations

import asyncio
import logging

import pytest

from prefork.asgi import AsgiApp, ClientDisconnected
from prefork.dispatch import Router
from prefork.protocols.http import IDLE, WAITING

from http_helpers import RecordingDriver, get, make_ctx, post
from prefork.dispatch import HttpServerProtocol


class Driver(RecordingDriver):
    """What the protocol and the ASGI adapter ask of a driver, recorded."""

    def __init__(self):
        super().__init__()
        self.blocked = False
        self.aborted = False
        self._drain = None

    def hold(self):
        asyncio.get_running_loop().call_soon(lambda: self.deliver(self.proto.resume()))

    def abort(self):
        self.aborted = True
        super().abort()

    def write_blocked(self):
        return self.blocked

    def drained(self):
        self._drain = asyncio.get_running_loop().create_future()
        if not self.blocked:
            self._drain.set_result(None)
        return self._drain

    def unblock(self):
        self.blocked = False
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def sockname(self):
        return ("127.0.0.1", 8080)


def serve(app, mount="/", extra_routes=None, **limits):
    router = Router(extra_routes or {})
    router.add(mount, AsgiApp(app, mount), True)
    ctx = make_ctx(routes=router, **limits)
    driver = Driver()
    proto = HttpServerProtocol(ctx, peer=("10.1.2.3", 4567), driver=driver)
    driver.proto = proto
    return proto, driver


async def settle(proto, driver, rounds=200):
    """Let the app's task run until the protocol stops waiting for it."""
    for _ in range(rounds):
        await asyncio.sleep(0)
        if proto.state != WAITING and not proto.ctx.asgi_calls:
            break
    await asyncio.sleep(0)


def feed(proto, driver, data):
    driver.deliver(proto.data_received(data))


def parse(data: bytes, head_only: bool = False):
    """Responses in ``data``: [(status, {lower name: value}, body, framing)], chunked decoded."""
    out = []
    rest = bytes(data)
    while rest:
        head, sep, rest = rest.partition(b"\r\n\r\n")
        assert sep, f"incomplete head {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"duplicate {name}"
            headers[name.lower()] = value.strip()
        if head_only or status in (204, 304):
            out.append((status, headers, b"", "none"))
        elif "content-length" in headers:
            n = int(headers["content-length"])
            assert len(rest) >= n, "truncated"
            out.append((status, headers, rest[:n], "length"))
            rest = rest[n:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                size, _, rest = rest.partition(b"\r\n")
                n = int(size, 16)
                if not n:
                    assert rest[:2] == b"\r\n"
                    rest = rest[2:]
                    break
                body, rest = body + rest[:n], rest[n + 2:]
            out.append((status, headers, body, "chunked"))
        else:
            out.append((status, headers, rest, "close"))
            rest = b""
    return out


def hello(body=b"hello", headers=((b"content-type", b"text/plain"),), status=200):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": list(headers)})
        await send({"type": "http.response.body", "body": body})
    return app


def test_scope_fields_per_the_http_spec():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope)
        await hello()(scope, receive, send)

    async def main():
        proto, driver = serve(app, mount="/api/")
        feed(proto, driver, b"GET /api/caf%C3%A9/x%2Fy?a=1&b=%20 HTTP/1.1\r\nHost: example.com\r\n"
                            b"X-Dup: 1\r\nAccept: */*\r\nX-Dup: 2\r\n\r\n")
        await settle(proto, driver)
        return driver

    driver = asyncio.run(main())
    [(status, _, body, _)] = parse(driver.out)
    assert (status, body) == (200, b"hello")
    [scope] = seen
    assert scope["type"] == "http"
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.3"}
    assert scope["http_version"] == "1.1"
    assert scope["method"] == "GET"
    assert scope["scheme"] == "http"
    assert scope["path"] == "/api/café/x/y"
    assert scope["raw_path"] == b"/api/caf%C3%A9/x%2Fy"
    assert scope["query_string"] == b"a=1&b=%20"
    assert scope["root_path"] == "/api"
    assert [tuple(h) for h in scope["headers"]] == [(b"host", b"example.com"), (b"x-dup", b"1"),
                                                    (b"accept", b"*/*"), (b"x-dup", b"2")]
    assert all(type(n) is bytes and type(v) is bytes for n, v in scope["headers"])
    assert tuple(scope["client"]) == ("10.1.2.3", 4567)
    assert tuple(scope["server"]) == ("127.0.0.1", 8080)
    assert scope["state"] == {}
    assert scope["extensions"] == {"http.response.pathsend": {}}  # trailers only with TE: trailers


def test_root_path_is_empty_at_slash_and_body_is_given_then_disconnect():
    seen = []

    async def app(scope, receive, send):
        first = await receive()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": first["body"]})
        seen.append((scope["root_path"], first, await receive()))

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, post(b'{"a": 1}', path=b"/x"))
        await settle(proto, driver)
        return driver

    driver = asyncio.run(main())
    assert parse(driver.out)[0][2] == b'{"a": 1}'
    assert seen == [("", {"type": "http.request", "body": b'{"a": 1}', "more_body": False},
                     {"type": "http.disconnect"})]


def test_content_length_given_computed_or_chunked_when_streamed():
    async def given(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        await send({"type": "http.response.body", "body": b"ab", "more_body": True})
        await send({"type": "http.response.body", "body": b"cde"})

    async def streamed(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"one", b"", b"two"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def main(app, request):
        proto, driver = serve(app)
        feed(proto, driver, request)
        await settle(proto, driver)
        return driver, proto

    driver, _ = asyncio.run(main(given, get(b"/")))
    assert parse(driver.out) == [(200, {**parse(driver.out)[0][1]}, b"abcde", "length")]
    assert "transfer-encoding" not in parse(driver.out)[0][1]
    driver, _ = asyncio.run(main(hello(b"whole"), get(b"/")))
    [(_, headers, body, framing)] = parse(driver.out)
    assert (headers["content-length"], body, framing) == ("5", b"whole", "length")
    driver, proto = asyncio.run(main(streamed, get(b"/")))
    [(_, headers, body, framing)] = parse(driver.out)
    assert (body, framing) == (b"onetwo", "chunked")
    assert not driver.closed and proto.state == IDLE  # kept alive
    # HTTP/1.0, streamed, no length: the body ends with the connection
    driver, proto = asyncio.run(main(streamed, get(b"/", version=b"1.0", headers=b"Connection: keep-alive\r\n")))
    assert driver.out.startswith(b"HTTP/1.1 200 OK\r\n")
    [(_, headers, body, framing)] = parse(driver.out)
    assert (body, framing, headers["connection"]) == (b"onetwo", "close", "close")
    assert driver.closed


def test_head_sends_no_body_and_204_304_have_none():
    async def main(app, request):
        proto, driver = serve(app)
        feed(proto, driver, request)
        await settle(proto, driver)
        return driver

    out = asyncio.run(main(hello(b"0123456789", [(b"content-length", b"10")]), get(b"/", method=b"HEAD"))).out
    assert out.endswith(b"\r\n\r\n") and b"Content-Length: 10\r\n" in out.replace(b"content-length", b"Content-Length")
    [(status, headers, body, _)] = parse(out, head_only=True)
    assert status == 200 and headers["content-length"] == "10"
    for status in (204, 304):
        out = asyncio.run(main(hello(b"ignored", [], status=status), get(b"/"))).out
        assert out.endswith(b"\r\n\r\n") and b"ignored" not in out
        assert b"Content-Length" not in out and b"Transfer-Encoding" not in out


def test_exception_before_start_is_a_500_logged_once(caplog):
    async def app(scope, receive, send):
        raise ValueError("boom")

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        await settle(proto, driver)
        return driver

    with caplog.at_level(logging.ERROR, logger="prefork.worker"):
        driver = asyncio.run(main())
    [(status, headers, _, _)] = parse(driver.out)
    assert status == 500 and headers["connection"] == "close"
    failures = [r for r in caplog.records if r.exc_info and "boom" in str(r.exc_info[1])]
    assert len(failures) == 1


def test_exception_after_start_closes_the_connection_not_a_truncated_success():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise ValueError("mid-way")

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/") + get(b"/"))  # a pipelined second request is not answered
        await settle(proto, driver)
        return driver

    driver = asyncio.run(main())
    assert driver.aborted
    assert driver.out.count(b"HTTP/1.1") == 1
    assert not driver.out.endswith(b"0\r\n\r\n")  # no last chunk: the client sees the cut


def test_app_returning_without_a_response_is_a_500():
    async def app(scope, receive, send):
        await receive()

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        await settle(proto, driver)
        return driver

    [(status, _, _, _)] = parse(asyncio.run(main()).out)
    assert status == 500


def test_pipelined_requests_queue_behind_the_app_and_answer_in_order():
    async def app(scope, receive, send):
        await asyncio.sleep(0.01 if scope["path"] == "/slow" else 0)
        await hello(scope["path"].encode())(scope, receive, send)

    async def main():
        proto, driver = serve(app, extra_routes={b"/plain": lambda request: __import__(
            "prefork.messages").messages.Response(200, b"builtin")})
        feed(proto, driver, get(b"/slow") + get(b"/plain") + get(b"/fast"))
        assert proto.state == WAITING and driver.paused  # reading stops while the app runs
        for _ in range(100):
            await asyncio.sleep(0.005)
            if driver.out.count(b"HTTP/1.1") == 3:
                break
        return proto, driver

    proto, driver = asyncio.run(main())
    assert [body for _, _, body, _ in parse(driver.out)] == [b"/slow", b"builtin", b"/fast"]
    assert proto.state == IDLE and not driver.paused and proto.ctx.requests == 3


def test_disconnect_while_waiting_in_receive_and_send_after_raises_oserror():
    got = []

    async def app(scope, receive, send):
        await receive()
        got.append(await receive())  # waits: the response is not complete
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError as exc:
            got.append(exc)

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        for _ in range(5):
            await asyncio.sleep(0)
        proto.connection_lost()  # what the driver calls when the client goes
        await settle(proto, driver)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got[0] == {"type": "http.disconnect"}
    assert isinstance(got[1], ClientDisconnected) and isinstance(got[1], OSError)
    assert driver.out == b"" and proto.ctx.pooled == 0


def test_send_waits_while_the_output_is_above_high_water():
    progress = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(3):
            await send({"type": "http.response.body", "body": b"x" * 10, "more_body": True})
            progress.append(i)
        await send({"type": "http.response.body", "body": b""})

    async def main():
        proto, driver = serve(app)
        driver.blocked = True
        feed(proto, driver, get(b"/"))
        for _ in range(20):
            await asyncio.sleep(0)
        stalled = list(progress)
        driver.unblock()
        await settle(proto, driver)
        return stalled, driver

    stalled, driver = asyncio.run(main())
    assert stalled == []  # the first send waited for the driver
    assert progress == [0, 1, 2] and parse(driver.out)[0][2] == b"x" * 30


def test_access_log_and_counter_cover_asgi_requests():
    logged = []

    async def main():
        proto, driver = serve(hello(b"12345"))
        proto.ctx.on_response = lambda request, status, length: logged.append((request.path, status, length))
        feed(proto, driver, get(b"/a"))
        await settle(proto, driver)
        return proto

    proto = asyncio.run(main())
    assert logged == [(b"/a", 200, 5)] and proto.ctx.requests == 1


def test_half_close_while_in_receive_gives_disconnect_and_send_still_works():
    got = []

    async def app(scope, receive, send):
        await receive()
        got.append(await receive())
        await hello(b"late")(scope, receive, send)

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        for _ in range(5):
            await asyncio.sleep(0)
        assert not driver.paused  # waiting for a disconnect, the connection reads again to see it
        driver.deliver(proto.eof_received())
        await settle(proto, driver)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got == [{"type": "http.disconnect"}]
    assert parse(driver.out)[0][2] == b"late"
    assert driver.closed  # answered what was asked, then closed (the client half-closed)


@pytest.mark.parametrize("declared, parts", [(b"3", [b"ab", b"cd"]), (b"10", [b"ab", b""])])
def test_a_body_that_breaks_the_apps_content_length_closes_the_connection(declared, parts):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", declared)]})
        for i, part in enumerate(parts):
            await send({"type": "http.response.body", "body": part, "more_body": i < len(parts) - 1})

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/") + get(b"/"))
        await settle(proto, driver)
        return driver

    driver = asyncio.run(main())
    assert driver.aborted and driver.out.count(b"HTTP/1.1") <= 1  # never a second response on a broken frame


def test_bad_response_headers_before_any_byte_is_sent_are_a_500():
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"x")]})
        await send({"type": "http.response.body", "body": b"x"})

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        await settle(proto, driver)
        return driver

    assert parse(asyncio.run(main()).out)[0][0] == 500


def test_head_without_a_length_gets_no_invented_content_length():
    async def main():
        proto, driver = serve(hello(b"", []))
        feed(proto, driver, get(b"/", method=b"HEAD"))
        await settle(proto, driver)
        return driver

    out = bytes(asyncio.run(main()).out)
    assert out.startswith(b"HTTP/1.1 200 OK\r\n") and out.endswith(b"\r\n\r\n")
    assert b"Content-Length" not in out and b"Transfer-Encoding" not in out


def test_listening_for_a_disconnect_keeps_reading_past_pipelined_input():
    """An app waiting in receive() for http.disconnect: input that comes then
    (a pipelined request) is queued without stopping reading, so the EOF that
    follows is still seen (the lazy pause of wait() must not apply after listen())."""
    got = []

    async def app(scope, receive, send):
        await receive()
        got.append(await receive())
        await hello(b"late")(scope, receive, send)

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        for _ in range(5):
            await asyncio.sleep(0)
        feed(proto, driver, get(b"/next"))
        assert not driver.paused and len(proto._pending) == 1
        driver.deliver(proto.eof_received())
        await settle(proto, driver)
        return proto, driver

    proto, driver = asyncio.run(main())
    assert got == [{"type": "http.disconnect"}]
    assert parse(driver.out)[0][2] == b"late"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_each_call_runs_in_a_task_named_asgi_http_or_made_by_the_apps_task_factory(loop):
    """A call's task is named (asyncio would otherwise format "Task-<n>" for
    each request); a task factory the app has set on the loop makes the tasks."""
    import uvloop

    seen = []

    async def app(scope, receive, send):
        seen.append(asyncio.current_task().get_name())
        await hello()(scope, receive, send)

    made = []

    def factory(loop, coro, **kwargs):
        made.append(coro)
        return asyncio.Task(coro, loop=loop, name="from-factory", **kwargs)

    async def main():
        proto, driver = serve(app)
        feed(proto, driver, get(b"/"))
        await settle(proto, driver)
        asyncio.get_running_loop().set_task_factory(factory)
        feed(proto, driver, get(b"/"))
        await settle(proto, driver)
        asyncio.get_running_loop().set_task_factory(None)
        return driver

    driver = (uvloop.run if loop == "uvloop" else asyncio.run)(main())
    assert [status for status, _, _, _ in parse(driver.out)] == [200, 200]
    assert seen == ["asgi-http", "from-factory"] and len(made) == 1
