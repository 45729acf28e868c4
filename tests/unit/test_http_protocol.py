"""Unit tests for the sans-IO HTTP/1.1 protocol (prefork/protocols/http.py, with
the dispatcher of prefork/dispatch.py over it)
and the echo protocol: bytes in, bytes out, no sockets.

Every request is fed whole, byte by byte and pipelined (split at every
position); responses are split with a tiny Content-Length based parser and
checked exactly (status, headers, body).
"""

from __future__ import annotations

import random
import re
from email.utils import parsedate_to_datetime

import pytest

from prefork.apps.builtin import default_routes
from prefork import dispatch
from prefork.dispatch import HttpServerProtocol
from prefork.messages import Offload, Request, Response, constant
from prefork.protocols import http as http_mod
from prefork.protocols.echo import EchoProtocol
from prefork.protocols.http import BODY, CLOSED, HEAD, IDLE

from http_helpers import (PLAINTEXT_BODY, JSON_BODY, Clock, parse_responses, statuses, make_ctx, make_proto,
                          feed_whole, feed_bytewise, feed_split, FEEDERS, get, post, chunked, assert_plaintext,
                          assert_json, echo_routes)


# --- a single request, three ways ---------------------------------------------


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_plaintext(feed):
    proto = make_proto()
    out = feed(proto, get(b"/plaintext"))
    [r] = parse_responses(out)
    assert r.reason == "OK"
    assert_plaintext(r)
    assert r.headers["server"] == "prefork"
    parsedate_to_datetime(r.headers["date"])  # a valid HTTP date
    assert r.headers["date"].endswith(" GMT")
    assert "connection" not in r.headers  # HTTP/1.1 default keep-alive
    assert proto.closing is False and proto.linger is False
    assert proto.state == IDLE


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_json(feed):
    proto = make_proto()
    [r] = parse_responses(feed(proto, get(b"/json")))
    assert_json(r)
    assert r.headers["server"] == "prefork"
    assert "date" in r.headers
    assert proto.closing is False


def test_header_order_and_exact_head():
    proto = make_proto()
    out = proto.data_received(get(b"/plaintext"))
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 200 OK"
    assert lines[1] == b"Server: prefork"
    assert re.fullmatch(rb"Date: \w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", lines[2])
    assert lines[3:] == [b"Content-Type: text/plain", b"Content-Length: 13"]
    assert body == PLAINTEXT_BODY


def test_server_header_from_config():
    proto = make_proto(server_header="unit-test/1.0")
    [r] = parse_responses(proto.data_received(get()))
    assert r.headers["server"] == "unit-test/1.0"


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_unknown_path_404_keeps_alive(feed):
    proto = make_proto()
    out = feed(proto, get(b"/nope"))
    [r] = parse_responses(out)
    assert r.status == 404
    assert r.reason == "Not Found"
    assert r.headers["content-type"] == "text/html"
    assert b"404 Not Found" in r.body
    assert "connection" not in r.headers
    assert proto.closing is False and proto.linger is False
    # ...and the connection still works
    [r2] = parse_responses(proto.data_received(get(b"/plaintext")))
    assert_plaintext(r2)


def test_query_string_is_not_part_of_the_route():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    [r] = parse_responses(proto.data_received(get(b"/echo?a=1&b=2")))
    assert r.status == 200
    assert r.headers["x-path"] == "/echo"
    assert r.headers["x-query"] == "a=1&b=2"
    assert seen[0].target == b"/echo?a=1&b=2"
    [r] = parse_responses(proto.data_received(get(b"/plaintext?x=y")))
    assert_plaintext(r)


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_percent_encoded_path_routes(feed):
    proto = make_proto()
    [r] = parse_responses(feed(proto, get(b"/plain%74ext")))
    assert_plaintext(r)
    [r] = parse_responses(feed(proto, get(b"/%6A%73%6f%6e")))
    assert_json(r)


def test_request_object_seen_by_handler():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    proto.data_received(b"GET /echo HTTP/1.1\r\nHost: example.com\r\nX-Thing: Value\r\n\r\n")
    [req] = seen
    assert req.method == b"GET"
    assert req.version == "1.1"
    assert req.header(b"x-thing") == b"Value"
    assert req.header(b"HOST") == b"example.com"
    assert req.header(b"missing", b"dflt") == b"dflt"
    assert req.keep_alive is True
    assert req.peer == ("127.0.0.1", 12345)
    assert req.body == b""


# --- pipelining -------------------------------------------------------------------

PIPELINE = (
    get(b"/plaintext")
    + post(b"hello body", path=b"/echo")
    + get(b"/json")
    + chunked([b"abc", b"defgh"], path=b"/echo")
    + get(b"/missing")
    + get(b"/plaintext", method=b"HEAD")
    + get(b"/plaintext")
)


def check_pipeline(out: bytes, proto: HttpServerProtocol, seen: list[Request]):
    rs = parse_responses(out, head_only={5})
    assert statuses(rs) == [200, 200, 200, 200, 404, 200, 200]
    assert_plaintext(rs[0])
    assert rs[1].body == b"hello body" and rs[1].headers["x-method"] == "POST"
    assert_json(rs[2])
    assert rs[3].body == b"abcdefgh" and rs[3].headers["x-method"] == "POST"
    assert rs[4].headers["content-type"] == "text/html"
    assert rs[5].body == b"" and rs[5].headers["content-length"] == "13"
    assert_plaintext(rs[6])
    assert all("connection" not in r.headers for r in rs)
    assert [r.body for r in seen] == [b"hello body", b"abcdefgh"]
    assert proto.closing is False
    assert proto.state == IDLE
    assert proto._p is None


def test_pipeline_whole():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    check_pipeline(proto.data_received(PIPELINE), proto, seen)


def test_pipeline_bytewise():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    check_pipeline(feed_bytewise(proto, PIPELINE), proto, seen)


@pytest.mark.parametrize("pos", range(1, len(PIPELINE)))
def test_pipeline_split_at(pos):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    check_pipeline(feed_split(proto, PIPELINE, [pos]), proto, seen)


@pytest.mark.parametrize("seed", range(40))
def test_pipeline_random_splits(seed):
    rng = random.Random(seed)
    positions = sorted(rng.sample(range(1, len(PIPELINE)), rng.randint(2, 25)))
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    check_pipeline(feed_split(proto, PIPELINE, positions), proto, seen)


def test_responses_come_out_as_soon_as_each_request_completes():
    proto = make_proto()
    a, b = get(b"/plaintext"), get(b"/json")
    # the first request and half of the second: only the first is answered
    out = proto.data_received(a + b[:10])
    [r] = parse_responses(out)
    assert_plaintext(r)
    assert proto.state == HEAD
    [r] = parse_responses(proto.data_received(b[10:]))
    assert_json(r)


def test_many_pipelined_requests():
    proto = make_proto()
    out = proto.data_received(get(b"/plaintext") * 200)
    rs = parse_responses(out)
    assert len(rs) == 200
    for r in rs:
        assert_plaintext(r)
    assert proto.ctx.requests == 200


def test_leading_crlf_between_requests_is_ignored():
    proto = make_proto()
    out = proto.data_received(get() + b"\r\n" + get(b"/json"))
    assert statuses(parse_responses(out)) == [200, 200]


# --- keep-alive -----------------------------------------------------------------


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_http11_keepalive_by_default(feed):
    proto = make_proto()
    for _ in range(3):
        [r] = parse_responses(feed(proto, get()))
        assert_plaintext(r)
        assert "connection" not in r.headers
        assert proto.closing is False
    assert proto.state == IDLE


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("value", [b"close", b"Close", b"CLOSE"])
def test_connection_close(feed, value):
    proto = make_proto()
    out = feed(proto, get(headers=b"Connection: " + value + b"\r\n"))
    [r] = parse_responses(out)
    assert_plaintext(r)
    assert r.headers["connection"] == "close"
    assert proto.closing is True
    assert proto.linger is False  # a clean close, nothing to drain
    assert proto.state == CLOSED
    assert proto.data_received(get()) == b""


def test_connection_close_drops_later_pipelined_requests():
    proto = make_proto()
    out = proto.data_received(get(b"/json", headers=b"Connection: close\r\n") + get() + get())
    [r] = parse_responses(out)
    assert_json(r)
    assert r.headers["connection"] == "close"
    assert proto.closing is True


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_http10_closes_by_default(feed):
    proto = make_proto()
    out = feed(proto, get(version=b"1.0", host=False))
    [r] = parse_responses(out)
    assert_plaintext(r)
    assert r.headers["connection"] == "close"
    assert proto.closing is True
    assert proto.linger is False
    assert proto.data_received(get(version=b"1.0", host=False)) == b""


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_http10_keepalive(feed):
    proto = make_proto()
    req = get(version=b"1.0", host=False, headers=b"Connection: keep-alive\r\n")
    for _ in range(2):
        [r] = parse_responses(feed(proto, req))
        assert_plaintext(r)
        assert r.headers["connection"] == "keep-alive"
        assert proto.closing is False
    # a later HTTP/1.0 request without keep-alive closes
    [r] = parse_responses(feed(proto, get(version=b"1.0", host=False)))
    assert r.headers["connection"] == "close"
    assert proto.closing is True


@pytest.mark.parametrize("version,header,keep,says", [
    (b"1.1", b"", True, None),
    (b"1.1", b"Connection: keep-alive\r\n", True, None),
    (b"1.1", b"CONNECTION: Keep-Alive\r\n", True, None),
    (b"1.1", b"Connection: close\r\n", False, "close"),
    (b"1.0", b"", False, "close"),
    (b"1.0", b"connection: keep-alive\r\n", True, "keep-alive"),
    (b"1.0", b"Connection: close\r\n", False, "close"),
])
def test_version_and_connection_header_decide_keep_alive(version, header, keep, says):
    """The version is known without asking llhttp for it when no Connection
    header is present; with one, 1.0 and 1.1 must still be told apart."""
    proto = make_proto()
    for feed in (feed_whole, feed_bytewise):
        [r] = parse_responses(feed(proto, get(version=version, headers=header)))
        assert_plaintext(r)
        assert r.headers.get("connection") == says
        assert proto.closing is (not keep)
        if not keep:
            break


def test_whole_request_is_never_reading_a_split_one_is():
    ctx = make_ctx()
    whole, split = HttpServerProtocol(ctx), HttpServerProtocol(ctx)
    whole.data_received(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n")
    assert whole.state == IDLE and ctx.reading == 0
    split.data_received(b"GET /plaintext HTTP/1.1\r\n")
    assert split.state == HEAD and ctx.reading == 1
    assert split.deadline == pytest.approx(ctx.clock() + ctx.config.header_timeout, abs=1.0)
    split.data_received(b"Host: x\r\n\r\n")
    assert split.state == IDLE and ctx.reading == 0
    assert split.deadline == pytest.approx(ctx.clock() + ctx.config.keepalive_timeout, abs=1.0)


def test_http10_keepalive_404_says_keep_alive():
    proto = make_proto()
    [r] = parse_responses(proto.data_received(get(b"/x", version=b"1.0", host=False,
                                                  headers=b"Connection: keep-alive\r\n")))
    assert r.status == 404
    assert r.headers["connection"] == "keep-alive"
    assert proto.closing is False


@pytest.mark.parametrize("n", [1, 2, 3])
def test_keepalive_requests_limit_pipelined(n):
    proto = make_proto(keepalive_requests=n)
    out = proto.data_received(get() * (n + 3))
    rs = parse_responses(out)
    assert len(rs) == n
    for r in rs:
        assert_plaintext(r)
    for r in rs[:-1]:
        assert "connection" not in r.headers
    assert rs[-1].headers["connection"] == "close"
    assert proto.closing is True
    assert proto.linger is False
    assert proto.data_received(get()) == b""


def test_keepalive_requests_limit_sequential():
    proto = make_proto(keepalive_requests=3)
    for i in range(3):
        [r] = parse_responses(proto.data_received(get()))
        if i < 2:
            assert "connection" not in r.headers
            assert proto.closing is False
        else:
            assert r.headers["connection"] == "close"
            assert proto.closing is True
    assert proto.data_received(get()) == b""


# --- HEAD ---------------------------------------------------------------------------


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("path,length,ctype", [(b"/plaintext", 13, "text/plain"),
                                               (b"/json", len(JSON_BODY), "application/json")])
def test_head(feed, path, length, ctype):
    proto = make_proto()
    out = feed(proto, get(path, method=b"HEAD"))
    assert out.endswith(b"\r\n\r\n")
    assert b"Hello" not in out
    [r] = parse_responses(out, head_only={0})
    assert r.status == 200
    assert r.headers["content-length"] == str(length)
    assert r.headers["content-type"] == ctype
    assert proto.closing is False
    # the next response is not confused by a missing body
    [r] = parse_responses(proto.data_received(get(path)))
    assert r.status == 200 and len(r.body) == length


def test_head_404_has_no_body():
    proto = make_proto()
    out = proto.data_received(get(b"/nope", method=b"HEAD"))
    assert out.endswith(b"\r\n\r\n")
    [r] = parse_responses(out, head_only={0})
    assert r.status == 404
    assert int(r.headers["content-length"]) > 0


# --- request bodies -------------------------------------------------------------------


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_content_length_body(feed):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    out = feed(proto, post(b"x=1&y=2", path=b"/echo"))
    [r] = parse_responses(out)
    assert r.status == 200 and r.body == b"x=1&y=2"
    assert seen[0].body == b"x=1&y=2"
    [r] = parse_responses(feed(proto, post(b"anything")))
    assert_plaintext(r)
    assert proto.closing is False


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_chunked_body(feed):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    out = feed(proto, chunked([b"Wiki", b"pedia", b" in\r\n\r\nchunks."], path=b"/echo"))
    [r] = parse_responses(out)
    assert r.status == 200
    assert r.body == b"Wikipedia in\r\n\r\nchunks."
    [r] = parse_responses(feed(proto, chunked([b"abc"])))
    assert_plaintext(r)
    assert proto.closing is False


def test_chunked_with_extension_and_trailer():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    data = (b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n")
    [r] = parse_responses(proto.data_received(data))
    assert r.status == 200 and r.body == b"abc"


def test_body_split_across_calls():
    routes, seen = echo_routes()
    clock = Clock()
    proto = make_proto(clock=clock, routes=routes)
    body = bytes(range(256)) * 4
    data = post(body, path=b"/echo")
    head_len = data.index(b"\r\n\r\n") + 4
    assert proto.data_received(data[:head_len]) == b""
    assert proto.state == BODY
    assert proto.data_received(data[head_len:head_len + 100]) == b""
    assert proto.data_received(data[head_len + 100:-1]) == b""
    assert proto.state == BODY
    [r] = parse_responses(proto.data_received(data[-1:]))
    assert r.body == body
    assert seen[0].body == body
    assert proto.state == IDLE


def test_body_at_exactly_max_body_is_accepted():
    routes, seen = echo_routes()
    proto = make_proto(routes=routes, max_body=10)
    [r] = parse_responses(proto.data_received(post(b"0123456789", path=b"/echo")))
    assert r.status == 200 and r.body == b"0123456789"
    [r] = parse_responses(proto.data_received(chunked([b"01234", b"56789"], path=b"/echo")))
    assert r.status == 200 and r.body == b"0123456789"


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_expect_100_continue(feed):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    data = post(b"payload", path=b"/echo", headers=b"Expect: 100-continue\r\n")
    head, body = data[:-7], data[-7:]
    out = feed(proto, head)
    assert out == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert proto.state == BODY
    assert seen == []
    out = feed(proto, body)
    [r] = parse_responses(out)
    assert r.status == 200 and r.body == b"payload"
    assert proto.closing is False


def test_expect_100_continue_body_in_same_call():
    proto = make_proto()
    out = proto.data_received(post(b"abc", headers=b"Expect: 100-continue\r\n"))
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    rs = parse_responses(out)
    assert statuses(rs) == [100, 200]
    assert_plaintext(rs[1])


def test_expect_100_continue_chunked():
    proto = make_proto()
    data = chunked([b"abc"], headers=b"Expect: 100-continue\r\n")
    head_len = data.index(b"\r\n\r\n") + 4
    assert proto.data_received(data[:head_len]) == b"HTTP/1.1 100 Continue\r\n\r\n"
    [r] = parse_responses(proto.data_received(data[head_len:]))
    assert_plaintext(r)


def test_expect_100_continue_without_body_sends_no_100():
    proto = make_proto()
    out = proto.data_received(get(headers=b"Expect: 100-continue\r\n"))
    assert b"100 Continue" not in out
    [r] = parse_responses(out)
    assert_plaintext(r)


def test_expect_100_continue_http10_sends_no_100():
    proto = make_proto()
    data = (b"POST /plaintext HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
    assert proto.data_received(data) == b""
    [r] = parse_responses(proto.data_received(b"abc"))
    assert_plaintext(r)


def test_expect_100_continue_too_large_sends_no_100():
    proto = make_proto(max_body=10)
    out = proto.data_received(b"POST /plaintext HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                              b"Content-Length: 11\r\n\r\n")
    assert b"100 Continue" not in out
    [r] = parse_responses(out)
    assert r.status in (400, 413)
    assert r.headers["connection"] == "close"
    assert proto.closing is True


# --- errors -------------------------------------------------------------------

BIG = b"x" * 200

CLIENT_HELLO = bytes.fromhex(
    "16030100a5010000a10303" + "00" * 32 + "00" + "0020" + "c02b" * 16 + "0100" + "0054" + "00" * 84)

# id, data, config overrides, expected status
ERROR_CASES = [
    ("bad-request-line", b"GARBAGE\r\n\r\n", {}, 400),
    ("request-line-no-version", b"GET /plaintext\r\n\r\n", {}, 400),
    ("request-line-extra-token", b"GET /plaintext HTTP/1.1 extra\r\nHost: a\r\n\r\n", {}, 400),
    ("bad-version", b"GET /plaintext HTTP/x.y\r\nHost: a\r\n\r\n", {}, 400),
    ("invalid-header-token", get(headers=b"X(A): 1\r\n"), {}, 400),
    ("space-before-colon", get(headers=b"X-A : 1\r\n"), {}, 400),
    ("header-without-colon", get(headers=b"NoColonHere\r\n"), {}, 400),
    ("obs-fold", get(headers=b"X-A: 1\r\n  folded\r\n"), {}, 400),
    ("cl-then-te", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", {}, 400),
    ("te-then-cl", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                   b"Content-Length: 5\r\n\r\n0\r\n\r\n", {}, 400),
    ("conflicting-cl", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n"
                       b"Content-Length: 2\r\n\r\nxx", {}, 400),
    ("conflicting-cl-list", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 1, 2\r\n\r\nxx",
     {}, 400),
    ("non-numeric-cl", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", {}, 400),
    ("negative-cl", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", {}, 400),
    ("overflow-cl", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n",
     {}, 400),
    ("bad-chunk-size", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"zz\r\nabc\r\n0\r\n\r\n", {}, 400),
    ("chunk-missing-crlf", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"3\r\nabcXX0\r\n\r\n", {}, 400),
    ("missing-host", get(host=False), {}, 400),
    ("two-hosts", get(headers=b"Host: other.example\r\n"), {}, 400),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", {}, 400),
    ("tls-client-hello", CLIENT_HELLO, {}, 400),
    ("binary-junk", b"\x00\x01\x02\x03\xff\xfe\r\n\r\n", {}, 400),
    ("request-line-too-long", get(b"/" + b"a" * 100), {"max_request_line": 64}, 414),
    ("header-bytes-too-large", get(headers=b"X-Big: " + BIG + b"\r\nX-Big2: " + BIG + b"\r\n"),
     {"max_header_bytes": 256}, 431),
    ("too-many-headers", get(headers=b"".join(b"X-%d: v\r\n" % i for i in range(5))),
     {"max_headers": 4}, 431),
    ("content-length-too-large", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n",
     {"max_body": 10}, 413),
    ("chunked-too-large", chunked([b"012345", b"6789ab"]), {"max_body": 10}, 413),
    ("unknown-expect", post(b"abc", headers=b"Expect: something-else\r\n"), {}, 417),
    ("te-gzip-chunked", b"POST /plaintext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
                        b"0\r\n\r\n", {}, 501),
    ("connect", b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", {}, 405),
]


ERROR_PARAMS = [pytest.param(data, limits, status, id=case_id) for case_id, data, limits, status in ERROR_CASES]


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("data,limits,status", ERROR_PARAMS)
def test_error_exact_status(feed, data, limits, status):
    proto = make_proto(**limits)
    out = feed(proto, data)
    rs = parse_responses(out)
    assert statuses(rs) == [status]
    assert rs[0].headers["content-type"] == "text/html"
    assert str(status).encode() in rs[0].body


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("data,limits,status", ERROR_PARAMS)
def test_error_closes_and_lingers(feed, data, limits, status):
    """Whatever the status, an error answer says close, lingers, and ends parsing."""
    proto = make_proto(**limits)
    out = feed(proto, data)
    rs = parse_responses(out)
    assert rs, "no error response"
    last = rs[-1]
    assert last.status >= 400
    assert last.status in (status, 400)
    assert last.headers["connection"] == "close"
    assert proto.closing is True
    assert proto.linger is True
    assert proto.state == CLOSED
    assert proto.deadline == 0.0
    assert proto._p is None
    # nothing more is said, whatever arrives afterwards
    assert proto.data_received(get()) == b""
    assert proto.data_received(b"garbage\r\n\r\n") == b""
    assert proto.timeout(10 ** 9) == b""
    assert proto.eof_received() == b""


@pytest.mark.parametrize("line", [
    pytest.param(b"GET /plaintext\r\nHost: a\r\n\r\n", id="no-version"),
    pytest.param(b"GET /plaintext HTTP/0.9\r\nHost: a\r\n\r\n", id="0.9"),
    pytest.param(b"GET /plaintext HTTP/2.0\r\nHost: a\r\n\r\n", id="2.0"),
    pytest.param(b"GET /plaintext HTTP/1.2\r\nHost: a\r\n\r\n", id="1.2"),
    pytest.param(b"GET /plaintext HTTP/3.0\r\nHost: a\r\n\r\n", id="3.0"),
])
def test_unsupported_http_version_rejected(line):
    proto = make_proto()
    [r] = parse_responses(proto.data_received(line))
    assert r.status in (400, 505)
    assert r.headers["connection"] == "close"
    assert proto.closing and proto.linger


def test_error_in_request_that_follows_a_close_is_not_answered():
    proto = make_proto()
    out = proto.data_received(get(headers=b"Connection: close\r\n") + b"GARBAGE\r\n\r\n")
    [r] = parse_responses(out)
    assert r.status == 200
    assert r.headers["connection"] == "close"
    assert proto.linger is False


def test_te_gzip_alone_is_rejected():
    proto = make_proto()
    out = proto.data_received(b"POST /plaintext HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc")
    [r] = parse_responses(out)
    assert r.status in (400, 501)
    assert r.headers["connection"] == "close"
    assert proto.closing and proto.linger


@pytest.mark.parametrize("status", [
    413,
])
def test_content_length_too_large_rejected_before_body(status):
    """413 is decided from the head alone: no body byte has been sent."""
    proto = make_proto(max_body=10)
    out = proto.data_received(b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    [r] = parse_responses(out)
    assert r.status == status


def test_content_length_too_large_rejected_before_body_closes():
    proto = make_proto(max_body=10)
    out = proto.data_received(b"POST /plaintext HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n")
    [r] = parse_responses(out)
    assert r.status >= 400
    assert r.headers["connection"] == "close"
    assert proto.closing and proto.linger
    assert proto.data_received(b"x" * 1000) == b""


def test_huge_header_value_in_chunks_431():
    """One header field that never ends: httptools buffers it, so the protocol
    bounds the bytes received for the head (max_request_line + max_header_bytes)."""
    proto = make_proto(max_request_line=64, max_header_bytes=256)
    limit = 64 + 256
    start = b"GET /plaintext HTTP/1.1\r\nHost: a\r\nX-Huge: "
    sent = len(start)
    assert proto.data_received(start) == b""
    out = b""
    while not out:
        assert sent <= limit, "no 431 although the head exceeded the limit"
        chunk = b"v" * 16
        out = proto.data_received(chunk)
        sent += len(chunk)
    assert sent > limit
    [r] = parse_responses(out)
    assert r.status == 431
    assert r.headers["connection"] == "close"
    assert proto.closing and proto.linger
    assert proto.data_received(b"v" * 100 + b"\r\n\r\n") == b""


def test_huge_header_name_in_chunks_431():
    proto = make_proto(max_request_line=64, max_header_bytes=256)
    out = proto.data_received(b"GET /plaintext HTTP/1.1\r\nHost: a\r\nX-")
    for _ in range(100):
        out += proto.data_received(b"n" * 10)
        if out:
            break
    [r] = parse_responses(out)
    assert r.status == 431


def test_huge_head_limit_counts_per_request():
    """The head-size budget is per request: many small keep-alive requests on
    one connection never add up to a 431."""
    proto = make_proto(max_request_line=64, max_header_bytes=256)
    req = get(headers=b"X-Pad: " + b"p" * 100 + b"\r\n")
    for _ in range(20):
        [r] = parse_responses(feed_bytewise(proto, req))
        assert_plaintext(r)


def test_pipeline_third_request_malformed():
    proto = make_proto()
    out = proto.data_received(get() + get(b"/json") + b"BROKEN REQUEST\r\n\r\n" + get())
    rs = parse_responses(out)
    assert statuses(rs) == [200, 200, 400]
    assert_plaintext(rs[0])
    assert_json(rs[1])
    assert "connection" not in rs[0].headers and "connection" not in rs[1].headers
    assert rs[2].headers["connection"] == "close"
    assert proto.closing and proto.linger


@pytest.mark.parametrize("pos", range(1, 120, 3))
def test_pipeline_third_request_malformed_split(pos):
    data = get() + get(b"/json") + b"BROKEN REQUEST\r\n\r\n" + get()
    proto = make_proto()
    rs = parse_responses(feed_split(proto, data, [pos]))
    assert statuses(rs) == [200, 200, 400]


def test_handler_exception_500():
    def boom(request):
        raise RuntimeError("handler failure")

    routes = default_routes()
    routes[b"/boom"] = boom
    proto = make_proto(routes=routes)
    out = proto.data_received(get(b"/plaintext") + get(b"/boom") + get(b"/plaintext"))
    rs = parse_responses(out)
    assert statuses(rs) == [200, 500]
    assert_plaintext(rs[0])
    assert rs[1].reason == "Internal Server Error"
    assert rs[1].headers["connection"] == "close"
    assert b"500 Internal Server Error" in rs[1].body
    assert proto.closing is True
    assert proto.linger is True
    assert proto.state == CLOSED
    assert proto.data_received(get()) == b""


def test_handler_exception_500_head_has_no_body():
    def boom(request):
        raise ValueError("x")

    proto = make_proto(routes={b"/boom": boom})
    out = proto.data_received(get(b"/boom", method=b"HEAD"))
    assert out.endswith(b"\r\n\r\n")
    [r] = parse_responses(out, head_only={0})
    assert r.status == 500
    assert r.headers["connection"] == "close"


def test_handler_custom_status_and_headers():
    def custom(request):
        return Response(201, b"made", b"text/x-custom", [(b"X-One", b"1"), (b"Location", b"/thing")])

    proto = make_proto(routes={b"/custom": custom})
    [r] = parse_responses(proto.data_received(get(b"/custom")))
    assert r.status == 201 and r.reason == "Created"
    assert r.body == b"made"
    assert r.headers["content-type"] == "text/x-custom"
    assert r.headers["x-one"] == "1" and r.headers["location"] == "/thing"


def test_empty_body_response_and_unknown_status():
    proto = make_proto(routes={b"/e": lambda r: Response(299, b"")})
    out = proto.data_received(get(b"/e"))
    assert out.startswith(b"HTTP/1.1 299 Unknown\r\n")
    [r] = parse_responses(out)
    assert r.headers["content-length"] == "0" and r.body == b""


def test_upgrade_request_is_ignored():
    proto = make_proto()
    out = proto.data_received(get(headers=b"Connection: upgrade\r\nUpgrade: h2c\r\n") + get(b"/json"))
    rs = parse_responses(out)
    assert_plaintext(rs[0])
    # the unsupported Upgrade is ignored: the connection stays HTTP/1.1
    assert not proto.closing
    assert statuses(rs) == [200, 200]
    assert_json(rs[1])


def test_absolute_form_target():
    proto = make_proto()
    [r] = parse_responses(proto.data_received(get(b"http://example.com/plaintext")))
    assert_plaintext(r)


# --- timeouts -------------------------------------------------------------------------


def test_fresh_connection_deadline_is_header_timeout():
    clock = Clock(500.0)
    proto = make_proto(clock=clock, header_timeout=7.0, keepalive_timeout=30.0)
    assert proto.state == IDLE
    assert proto.deadline == 507.0


def test_fresh_connection_timeout_is_quiet():
    clock = Clock(500.0)
    proto = make_proto(clock=clock, header_timeout=7.0)
    clock.now = 507.5
    assert proto.timeout(clock.now) == b""
    assert proto.closing is True
    assert proto.linger is False
    assert proto.state == CLOSED
    assert proto.data_received(get()) == b""


@pytest.mark.parametrize("partial", [b"G", b"GET /plain", get()[:-2], get()[:-1]])
def test_partial_head_timeout_408(partial):
    clock = Clock(100.0)
    proto = make_proto(clock=clock, header_timeout=5.0)
    clock.now = 101.0
    assert proto.data_received(partial) == b""
    assert proto.state == HEAD
    assert proto.deadline == 106.0  # header timeout counted from the request's first byte
    clock.now = 106.0
    out = proto.timeout(clock.now)
    [r] = parse_responses(out)
    assert r.status == 408
    assert r.reason == "Request Timeout"
    assert r.headers["connection"] == "close"
    assert proto.closing is True and proto.linger is True
    assert proto.state == CLOSED
    assert proto._p is None
    assert proto.data_received(get()[len(partial):]) == b""


def test_header_deadline_not_extended_by_more_head_bytes():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, header_timeout=10.0)
    req = get(headers=b"X-A: 1\r\nX-B: 2\r\n")
    proto.data_received(req[:5])
    assert proto.deadline == 10.0
    clock.now = 8.0
    proto.data_received(req[5:20])
    assert proto.deadline == 10.0  # client_header_timeout covers the whole head


def test_after_request_idle_keepalive_deadline_and_quiet_close():
    clock = Clock(1000.0)
    proto = make_proto(clock=clock, header_timeout=5.0, keepalive_timeout=20.0)
    clock.now = 1003.0
    [r] = parse_responses(proto.data_received(get()))
    assert r.status == 200
    assert proto.state == IDLE
    assert proto.deadline == 1023.0
    clock.now = 1023.0
    assert proto.timeout(clock.now) == b""
    assert proto.closing is True
    assert proto.linger is False
    assert proto.state == CLOSED


def test_keepalive_idle_then_new_request_uses_header_timeout():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, header_timeout=5.0, keepalive_timeout=20.0)
    proto.data_received(get())
    assert proto.deadline == 20.0
    clock.now = 12.0
    proto.data_received(b"GET /pl")
    assert proto.state == HEAD
    assert proto.deadline == 17.0
    clock.now = 17.0
    [r] = parse_responses(proto.timeout(clock.now))
    assert r.status == 408


def test_body_resets_deadline_to_body_timeout():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, header_timeout=5.0, body_timeout=3.0, keepalive_timeout=50.0)
    data = post(b"0123456789")
    head_len = data.index(b"\r\n\r\n") + 4
    clock.now = 1.0
    assert proto.data_received(data[:head_len]) == b""
    assert proto.state == BODY
    assert proto.deadline == 4.0
    clock.now = 2.5
    assert proto.data_received(data[head_len:head_len + 4]) == b""
    assert proto.deadline == 5.5
    clock.now = 5.0
    assert proto.data_received(data[head_len + 4:head_len + 8]) == b""
    assert proto.deadline == 8.0
    clock.now = 7.0
    [r] = parse_responses(proto.data_received(data[head_len + 8:]))
    assert_plaintext(r)
    assert proto.state == IDLE
    assert proto.deadline == 57.0


def test_chunked_body_resets_deadline():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, body_timeout=3.0)
    data = chunked([b"aaaa", b"bbbb"])
    head_len = data.index(b"\r\n\r\n") + 4
    proto.data_received(data[:head_len])
    assert proto.deadline == 3.0
    clock.now = 2.0
    proto.data_received(data[head_len:head_len + 6])  # "4\r\naaa"
    assert proto.deadline == 5.0


def test_timeout_mid_body_408():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, body_timeout=3.0)
    data = post(b"0123456789")
    proto.data_received(data[:-4])
    assert proto.state == BODY
    clock.now = proto.deadline
    out = proto.timeout(clock.now)
    [r] = parse_responses(out)
    assert r.status == 408
    assert r.headers["connection"] == "close"
    assert proto.closing and proto.linger
    assert proto._p is None
    assert proto.data_received(data[-4:]) == b""


def test_timeout_waiting_for_body_after_100_continue_408():
    clock = Clock(0.0)
    proto = make_proto(clock=clock, body_timeout=3.0)
    out = proto.data_received(post(b"abc", headers=b"Expect: 100-continue\r\n")[:-3])
    assert out == b"HTTP/1.1 100 Continue\r\n\r\n"
    assert proto.deadline == 3.0
    clock.now = 3.0
    [r] = parse_responses(proto.timeout(clock.now))
    assert r.status == 408


def test_eof_mid_request_drops_it():
    proto = make_proto()
    proto.data_received(get()[:10])
    assert proto._p is not None
    assert proto.eof_received() == b""
    assert proto.closing is True
    assert proto.state == CLOSED
    assert proto.deadline == 0.0
    assert proto._p is None
    assert not proto.ctx.parser_pool  # a half-used parser is not pooled
    assert proto.data_received(get()[10:]) == b""


# --- parser pooling ---------------------------------------------------------------------


def test_parser_returned_to_pool_after_request():
    ctx = make_ctx()
    proto = HttpServerProtocol(ctx)
    assert proto._p is None and not ctx.parser_pool
    proto.data_received(get()[:10])
    assert proto._p is not None
    parser = proto._p
    assert list(ctx.parser_pool) == []
    proto.data_received(get()[10:])
    assert proto._p is None
    assert list(ctx.parser_pool) == [parser]
    assert parser.proto is None


def test_parser_reused_across_sequential_connections():
    ctx = make_ctx()
    first = None
    for i in range(50):
        proto = HttpServerProtocol(ctx)
        [r] = parse_responses(proto.data_received(get(b"/json" if i % 2 else b"/plaintext")))
        assert r.status == 200
        assert len(ctx.parser_pool) == 1
        if first is None:
            first = ctx.parser_pool[0]
        assert ctx.parser_pool[0] is first


def test_parser_pool_is_bounded():
    ctx = make_ctx()
    n = ctx.parser_pool_max + 50
    protos = [HttpServerProtocol(ctx) for _ in range(n)]
    for proto in protos:
        proto.data_received(get()[:5])   # every connection holds a parser
    assert list(ctx.parser_pool) == []
    for proto in protos:
        [r] = parse_responses(proto.data_received(get()[5:]))
        assert_plaintext(r)
    assert len(ctx.parser_pool) == ctx.parser_pool_max
    assert len({id(p) for p in ctx.parser_pool}) == ctx.parser_pool_max


def test_parser_not_pooled_after_error_or_close():
    ctx = make_ctx()
    HttpServerProtocol(ctx).data_received(b"GARBAGE\r\n\r\n")
    assert list(ctx.parser_pool) == []
    HttpServerProtocol(ctx).data_received(get(headers=b"Connection: close\r\n"))
    assert list(ctx.parser_pool) == []
    HttpServerProtocol(ctx).data_received(get(version=b"1.0", host=False))
    assert list(ctx.parser_pool) == []


def test_pooled_parser_state_does_not_leak_between_connections():
    routes, seen = echo_routes()
    ctx = make_ctx(routes=routes)
    a = HttpServerProtocol(ctx)
    a.data_received(get(version=b"1.0", host=False, headers=b"Connection: keep-alive\r\n"))
    assert len(ctx.parser_pool) == 1
    # an HTTP/1.0 request without keep-alive on another connection must close
    b = HttpServerProtocol(ctx)
    [r] = parse_responses(b.data_received(get(version=b"1.0", host=False)))
    assert r.headers["connection"] == "close" and b.closing
    # a body on one connection does not show up on the next
    c = HttpServerProtocol(ctx)
    c.data_received(post(b"secret", path=b"/echo"))
    d = HttpServerProtocol(ctx)
    [r] = parse_responses(d.data_received(get(b"/echo?q")))
    assert r.body == b"" and r.headers["x-method"] == "GET" and r.headers["x-query"] == "q"
    assert seen[-1].headers == [(b"host", b"example.com")]
    assert seen[-1].target == b"/echo?q"


def test_idle_connection_holds_no_parser_between_pipelined_calls():
    ctx = make_ctx()
    proto = HttpServerProtocol(ctx)
    out = proto.data_received(get() * 3)
    assert len(parse_responses(out)) == 3
    assert proto._p is None
    assert len(ctx.parser_pool) == 1


# --- misc --------------------------------------------------------------------------------


def test_status_line_helper():
    assert http_mod.status_line(200) == b"HTTP/1.1 200 OK\r\n"
    assert http_mod.status_line(431) == b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    assert http_mod.status_line(799) == b"HTTP/1.1 799 Unknown\r\n"


def test_refresh_date():
    ctx = make_ctx()
    ctx.refresh_date(0)
    assert ctx.date_line == b"Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n"
    ctx.refresh_date(784111777.9)
    assert ctx.date_line == b"Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
    proto = HttpServerProtocol(ctx)
    [r] = parse_responses(proto.data_received(get()))
    assert r.headers["date"] == "Sun, 06 Nov 1994 08:49:37 GMT"


def test_requests_counter():
    ctx = make_ctx()
    HttpServerProtocol(ctx).data_received(get() + get(b"/nope"))
    HttpServerProtocol(ctx).data_received(get(b"/json"))
    assert ctx.requests == 3


def test_access_log_is_told_of_every_response_written():
    """The dispatcher wires its access log to the protocol's ``on_response``:
    constant routes, inline handlers, 404s, HEADs and pooled answers are all
    logged (a constant route leaves its fast path for it); a bad request's
    400, which ends the connection unparsed, is not."""
    class Log:
        def __init__(self):
            self.lines = []

        def log(self, request, status, length):
            self.lines.append((request.method, request.target, status, length))

    ctx = make_ctx(routes={**default_routes(), b"/pooled": lambda r: Offload(lambda r: Response(201, b"made"))})
    ctx.access_log = access = Log()
    assert ctx.on_response == access.log
    proto = HttpServerProtocol(ctx)
    out = proto.data_received(get() + get(b"/json") + get(b"/nope") + get(method=b"HEAD") + get(b"/pooled"))
    assert statuses(parse_responses(out, head_only={3})) == [200, 200, 404, 200, 201]
    assert access.lines == [(b"GET", b"/plaintext", 200, len(PLAINTEXT_BODY)),
                            (b"GET", b"/json", 200, len(JSON_BODY)),
                            (b"GET", b"/nope", 404, access.lines[2][3]),
                            (b"HEAD", b"/plaintext", 200, 0),
                            (b"GET", b"/pooled", 201, 4)]
    assert access.lines[2][3] > 0
    proto.data_received(b"BAD\r\n\r\n")
    assert len(access.lines) == 5 and proto.closing
    ctx.access_log = None
    assert ctx.on_response is None


def test_memoryview_and_bytearray_input():
    proto = make_proto()
    data = get() + post(b"abc")
    out = proto.data_received(memoryview(data)[:10]) + proto.data_received(bytearray(data[10:]))
    assert statuses(parse_responses(out)) == [200, 200]


# --- echo protocol ------------------------------------------------------------------------


def test_echo_returns_what_it_gets():
    proto = EchoProtocol()
    assert proto.data_received(b"hello") == b"hello"
    assert proto.data_received(b"") == b""
    out = proto.data_received(memoryview(b"\x00\xffbinary"))
    assert out == b"\x00\xffbinary" and type(out) is bytes
    out = proto.data_received(bytearray(b"ba"))
    assert out == b"ba" and type(out) is bytes
    big = bytes(range(256)) * 1000
    assert proto.data_received(big) == big
    assert proto.closing is False and proto.linger is False
    assert proto.idle is True
    assert proto.deadline == 0.0


def test_echo_eof_closes():
    proto = EchoProtocol(None, ("127.0.0.1", 1))
    assert proto.eof_received() == b""
    assert proto.closing is True
    assert proto.linger is False


def test_echo_timeout_closes_quietly():
    proto = EchoProtocol()
    assert proto.deadline == 0.0  # echo sets no deadline of its own...
    assert proto.timeout(123.0) == b""
    assert proto.closing is True  # ...but one set for it (graceful stop) closes it


# --- the counts /status shows: kept by state changes, never by a scan ---------------


def test_reading_count_follows_requests_through_every_ending():
    ctx = make_ctx()
    protos = [HttpServerProtocol(ctx) for _ in range(6)]
    head = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n"
    for p in protos:
        p.data_received(head)
    assert ctx.reading == 6
    protos[0].data_received(b"\r\n")                        # answered
    protos[1].data_received(b"X-Bad Header\r\n\r\n")         # 400
    protos[2].timeout(protos[2].deadline + 1)               # 408
    protos[3].connection_lost()                             # the client went away
    assert ctx.reading == 2
    body = HttpServerProtocol(ctx)
    body.data_received(b"POST /plaintext HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")
    assert body.state == BODY and ctx.reading == 3
    body.data_received(b"cd")
    assert ctx.reading == 2
    protos[4].data_received(b"\r\nGET /plaintext HTTP/1.1\r\nHost: x\r\n")  # one answered, the next begun
    assert ctx.reading == 2
    for p in protos[4:]:
        p.connection_lost()
    assert ctx.reading == 0 and ctx.pooled == 0


def test_pooled_count_follows_offloaded_requests():
    jobs = []
    ctx = make_ctx(routes={b"/slow": lambda req: Offload(lambda r: Response(200, b"ok"))})
    ctx.submit = lambda fn, arg, done: jobs.append((fn, arg, done)) or True
    a, b = HttpServerProtocol(ctx), HttpServerProtocol(ctx)
    for p in (a, b):
        p.data_received(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert ctx.pooled == 2 and ctx.reading == 0
    fn, arg, done = jobs[0]
    done(fn(arg), None)                                     # a's answer comes back
    assert ctx.pooled == 1
    b.connection_lost()                                     # b's client leaves while it is computed
    assert ctx.pooled == 0
    fn, arg, done = jobs[1]
    done(fn(arg), None)                                     # a late answer for a closed connection
    assert ctx.pooled == 0 and ctx.reading == 0


# --- constant routes: answered without a Request ------------------------------------


def test_constant_routes_only_plain_paths_and_every_spelling_of_the_target():
    ok = Response(200, b"Hello, World!", b"text/plain")
    router = dispatch.Router({b"/plaintext": constant(ok),
                              b"/a%41": constant(Response(200, b"escaped key")),
                              b"/called": lambda req: ok})
    assert set(router.constants) == {b"/plaintext"}  # "/a%41" would shadow the decoded path "/aA"
    proto = make_proto(routes=router)
    for target in (b"/plaintext", b"/plaintext?x=1", b"/plain%74ext", b"http://example.com/plaintext"):
        [r] = parse_responses(proto.data_received(get(target)))
        assert_plaintext(r)
    [r] = parse_responses(proto.data_received(get(b"/a%41")))
    assert r.status == 404  # routed by its decoded path, /aA
    [r] = parse_responses(proto.data_received(get(b"/a%41", method=b"HEAD")), head_only={0})
    assert r.status == 404


def test_constant_response_follows_the_date_and_the_request():
    now = [1_000_000.0]
    ctx = make_ctx()
    ctx.refresh_date(now[0])
    proto = HttpServerProtocol(ctx)
    [r1] = parse_responses(proto.data_received(get()))
    ctx.refresh_date(now[0] + 1)
    [r2] = parse_responses(proto.data_received(get()))
    assert r1.headers["date"] != r2.headers["date"]  # built again in the next second
    [h] = parse_responses(proto.data_received(get(method=b"HEAD")), head_only={0})
    assert h.status == 200 and h.body == b"" and h.headers["content-length"] == "13"
    [c] = parse_responses(proto.data_received(get(headers=b"Connection: close\r\n")))
    assert_plaintext(c)
    assert c.headers["connection"] == "close" and proto.closing
