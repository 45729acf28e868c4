"""Request framing and headers (issue 13, points 1-6), on the sans-IO protocol:
Upgrade with a body, trailers, Host values, asterisk-form, HEAD errors, heads
of 1xx/204/304 responses and a 100 Continue behind a pooled request. Fed whole
and byte by byte, as in test_http_protocol.py."""

from __future__ import annotations

import pytest

from prefork.dispatch import HttpServerProtocol
from prefork.messages import Offload, Response
from prefork.protocols.http import BODY
from http_helpers import (FEEDERS, Clock, assert_json, assert_plaintext, echo_routes, get, make_ctx,
                                make_proto, parse_responses, statuses)

UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
SMUGGLED = b"GET /json HTTP/1.1\r\nHost: x\r\n\r\n"


def split_head(out: bytes) -> tuple[bytes, bytes]:
    head, sep, rest = out.partition(b"\r\n\r\n")
    assert sep, out
    return head, rest


# --- 1. Upgrade ------------------------------------------------------------------------


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_upgrade_with_a_body_is_refused_and_its_body_never_parsed(feed, framing):
    if framing == "length":
        data = (b"POST /plaintext HTTP/1.1\r\nHost: x\r\n" + UPGRADE
                + b"Content-Length: %d\r\n\r\n" % len(SMUGGLED) + SMUGGLED)
    else:
        data = (b"POST /plaintext HTTP/1.1\r\nHost: x\r\n" + UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n")
    # before it, Upgrade requests without a body: answered, and HTTP/1.1 goes on
    no_body = get(headers=UPGRADE) + get(b"/json", headers=UPGRADE + b"Content-Length: 0\r\n")
    proto = make_proto()
    out = feed(proto, no_body + data)
    ok, json, refused = parse_responses(out)  # three: the body is not a fourth request
    assert_plaintext(ok)
    assert_json(json)
    assert refused.status == 400 and refused.headers["connection"] == "close"
    assert proto.closing and proto.linger


def test_a_thousand_upgrade_requests_in_one_read_do_not_recurse():
    n = 3000
    proto = make_proto(keepalive_requests=n + 1)
    out = proto.data_received(get(headers=UPGRADE) * n)
    rs = parse_responses(out)
    assert len(rs) == n and set(statuses(rs)) == {200}
    assert not proto.closing


# --- 2. trailers -------------------------------------------------------------------------


def chunked_with_trailers(trailers: bytes, path: bytes = b"/echo") -> bytes:
    return (b"POST " + path + b" HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\n" + trailers + b"\r\n")


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_header_names_are_lower_cased_in_order_with_duplicates_kept(feed):
    """Request.headers: the parser lowers each name once (the ASGI scope and
    the WSGI environ take them from there); values stay as sent."""
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    head = (b"GET /echo HTTP/1.1\r\nHOST: a.example\r\nX-Trace-ID: AbC\r\nAccept: text/HTML\r\n"
            b"x-trace-id: dEf\r\nReferer: http://X/\r\n\r\n")
    [r] = parse_responses(feed(proto, head))
    assert r.status == 200
    assert seen[0].headers == [(b"host", b"a.example"), (b"x-trace-id", b"AbC"), (b"accept", b"text/HTML"),
                               (b"x-trace-id", b"dEf"), (b"referer", b"http://X/")]


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_trailers_are_kept_apart_from_the_headers(feed):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    out = feed(proto, chunked_with_trailers(b"X-Checksum: 42\r\nX-Other: o\r\n") + get(b"/echo"))
    rs = parse_responses(out)
    assert statuses(rs) == [200, 200] and rs[0].body == b"abc"
    first, second = seen
    assert [name for name, _ in first.headers] == [b"host", b"transfer-encoding"]  # lower-cased
    assert first.trailers == [(b"X-Checksum", b"42"), (b"X-Other", b"o")]
    assert first.header(b"x-checksum") is None
    assert second.trailers == ()  # nothing carried over to the next request
    assert not proto.closing
    # and they count against the header limits
    proto = make_proto(routes=routes, max_headers=5)
    out = proto.data_received(chunked_with_trailers(b"".join(b"X-%d: v\r\n" % i for i in range(4))))
    [r] = parse_responses(out)
    assert r.status == 431 and len(seen) == 2


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("field", [b"Host: evil.example", b"host: evil.example", b"Authorization: Basic Zm9vOmJhcg==",
                                   b"X-Forwarded-For: 1.2.3.4",
                                   b"Connection: close", b"Cookie: a=b", b"Content-Type: text/html"])
def test_forbidden_trailer_fields_are_400(feed, field):
    routes, seen = echo_routes()
    proto = make_proto(routes=routes)
    out = feed(proto, chunked_with_trailers(b"X-Fine: 1\r\n" + field + b"\r\n") + get(b"/echo"))
    [r] = parse_responses(out)
    assert r.status == 400 and proto.closing and proto.linger
    assert seen == []  # the handler never sees it


# --- 3. Host values and asterisk-form ------------------------------------------------------


BAD_HOSTS = [b"bad host", b"a/b", b"user@host", b"host:abc", b"host:80:80", b"host:99999", b"host:" + b"9" * 5000, b"[::1", b"[zz]:80",
             b"[::1]x", b"a\\b", b"a%zz", b"h\"ost", b"<script>", b"a,b c"]
GOOD_HOSTS = [b"example.com", b"example.com:8080", b"127.0.0.1:80", b"[::1]", b"[::1]:8080", b"[v1.fe80::a+en1]",
              b"", b"a_b-c~d.example", b"xn--bcher-kva.example", b"example.com:", b"ex%41mple.com",
              b"example.com  "]


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("host", BAD_HOSTS)
def test_invalid_host_is_400(feed, host):
    proto = make_proto()
    out = feed(proto, b"GET /plaintext HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    [r] = parse_responses(out)
    assert r.status == 400 and proto.closing


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_valid_hosts_are_served_and_an_invalid_one_after_them_is_400(feed):
    proto = make_proto(keepalive_requests=100)
    data = b"".join(b"GET /plaintext HTTP/1.1\r\n%s: %s\r\n\r\n" % (name, host)
                    for host in GOOD_HOSTS for name in (b"Host", b"host"))
    data += get() + get() + b"GET /plaintext HTTP/1.1\r\nHost: example.com/x\r\n\r\n"
    rs = parse_responses(feed(proto, data))
    assert statuses(rs) == [200] * (2 * len(GOOD_HOSTS) + 2) + [400]
    assert proto.closing


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("method", [b"GET", b"POST", b"DELETE"])
def test_asterisk_form_is_only_for_options(feed, method):
    proto = make_proto()
    [r] = parse_responses(feed(proto, get(b"*", method=method) + get()))
    assert r.status == 400 and r.headers["connection"] == "close"
    assert proto.closing and proto.linger


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_options_asterisk_is_200_with_allow(feed):
    proto = make_proto()
    rs = parse_responses(feed(proto, get(b"*", method=b"OPTIONS") + get()))
    assert statuses(rs) == [200, 200]
    assert rs[0].headers["allow"] == "GET, HEAD, POST, OPTIONS" and rs[0].body == b""
    assert not proto.closing


def test_head_asterisk_is_400_without_content():
    proto = make_proto()
    out = proto.data_received(get(b"*", method=b"HEAD"))
    head, rest = split_head(out)
    assert head.startswith(b"HTTP/1.1 400 ") and rest == b""


# --- 4. no content in any answer to HEAD -------------------------------------------------


HEAD_ERRORS = {
    "missing Host": (b"HEAD /plaintext HTTP/1.1\r\n\r\n", {}, 400),
    "bad Host": (b"HEAD /plaintext HTTP/1.1\r\nHost: a b\r\n\r\n", {}, 400),
    "repeated Host": (b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", {}, 400),
    "bad header": (b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", {}, 400),
    "url too long": (b"HEAD /" + b"a" * 200 + b" HTTP/1.1\r\nHost: a\r\n\r\n", {"max_request_line": 100}, 414),
    "headers too large": (b"HEAD / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 300 + b"\r\n\r\n",
                          {"max_header_bytes": 100}, 431),
    "body too large": (b"HEAD / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n", {"max_body": 10}, 413),
    "expectation": (b"HEAD / HTTP/1.1\r\nHost: a\r\nExpect: nothing\r\n\r\n", {}, 417),
    "version": (b"HEAD / HTTP/2.0\r\nHost: a\r\n\r\n", {}, 505),
}


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
@pytest.mark.parametrize("case", list(HEAD_ERRORS), ids=list(HEAD_ERRORS))
def test_errors_to_head_have_no_content(feed, case):
    data, limits, status = HEAD_ERRORS[case]
    proto = make_proto(**limits)
    out = feed(proto, data)
    head, rest = split_head(out)
    assert head.startswith(b"HTTP/1.1 %d " % status)
    assert rest == b""
    assert proto.closing


def test_header_timeout_408_to_head_has_no_content():
    clock = Clock()
    proto = make_proto(clock=clock)
    assert proto.data_received(b"HEAD /plaintext HTTP/1.1\r\nHost: a\r\n") == b""
    clock.now = proto.deadline + 1
    head, rest = split_head(proto.timeout(clock.now))
    assert head.startswith(b"HTTP/1.1 408 ") and rest == b""


def test_only_errors_to_head_lose_their_content():
    # llhttp still holds the previous request's method while a new one's is read:
    # a GET's error after a HEAD keeps its content...
    proto = make_proto()
    out = proto.data_received(get(method=b"HEAD") + b"\x01GET / HTTP/1.1\r\n\r\n")
    [ok, bad] = parse_responses(out, head_only={0})
    assert ok.status == 200 and bad.status == 400
    assert len(bad.body) == int(bad.headers["content-length"]) > 0
    # ... and a HEAD's error after a GET has none
    proto = make_proto()
    out = proto.data_received(get() + b"HEAD / HTTP/1.1\r\n\r\n")
    assert_plaintext(parse_responses(out[:out.index(b"HTTP/1.1 400")])[0])
    head, rest = split_head(out[out.index(b"HTTP/1.1 400"):])
    assert rest == b""


class Driver:
    """What the epoll Connection and the asyncio adapter give the protocol."""

    def __init__(self):
        self.out = []
        self.paused = False

    def deliver(self, out):
        self.out.append(out if type(out) is bytes else b"".join(out))

    def pause_reading(self):
        self.paused = True

    def resume_reading(self):
        self.paused = False


def pooled(routes=None):
    """A protocol whose /slow route runs in a (hand-driven) pool: run() finishes the oldest job."""
    jobs = []
    if routes is None:
        routes, _ = echo_routes()
    routes[b"/slow"] = lambda request: Offload(lambda r: Response(200, b"slow"))
    ctx = make_ctx(routes=routes)
    ctx.submit = lambda fn, arg, done: jobs.append((fn, arg, done)) or True
    driver = Driver()
    proto = HttpServerProtocol(ctx, peer=("127.0.0.1", 1), driver=driver)

    def run():
        fn, arg, done = jobs.pop(0)
        done(fn(arg), None)
        return driver.out.pop()
    return proto, run


def test_error_to_head_queued_behind_a_pooled_request_has_no_content():
    proto, run = pooled()
    assert proto.data_received(get(b"/slow") + b"HEAD /plaintext HTTP/1.1\r\n\r\n") == b""
    out = run()
    [slow] = parse_responses(out[:out.index(b"HTTP/1.1 400 ")])
    assert slow.status == 200 and slow.body == b"slow"
    head, rest = split_head(out[out.index(b"HTTP/1.1 400 "):])
    assert rest == b"" and proto.closing


# --- 5. no Content-Length on 1xx, 204, 304 ------------------------------------------------


@pytest.mark.parametrize("status", [204, 304, 103])
@pytest.mark.parametrize("method", [b"GET", b"HEAD"])
def test_no_content_length_on_bodyless_statuses(status, method):
    routes = {b"/x": lambda request: Response(status, b"ignored", b"text/plain", [(b"ETag", b'"1"')]),
              b"/empty": lambda request: Response(200, b"")}
    proto = make_proto(routes=routes)
    out = proto.data_received(get(b"/x", method=method) + get(b"/x", method=method))
    first, rest = split_head(out)
    second, rest = split_head(rest)
    assert first == second and rest == b""  # no content, so the second head comes straight after
    lines = first.lower().split(b"\r\n")
    assert lines[0].startswith(b"http/1.1 %d " % status)
    assert not [line for line in lines if line.startswith((b"content-length:", b"content-type:"))]
    assert b'etag: "1"' in lines
    assert not proto.closing
    # an empty 200 still says Content-Length: 0
    [r] = parse_responses(proto.data_received(get(b"/empty")))
    assert r.status == 200 and r.headers["content-length"] == "0"


def test_bodyless_response_drops_its_body():
    r = Response(304, b"body")
    assert r.body == b"" and r.length == 0
    r = Response(200, b"body")
    assert r.body == b"body" and r.length == 4


# --- 6. 100 Continue only when the request is the one being served -------------------------


def expect_head(length: int = 7) -> bytes:
    return (b"POST /echo HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % length)


@pytest.mark.parametrize("feed", list(FEEDERS.values()), ids=list(FEEDERS))
def test_100_continue_waits_for_the_pooled_request_before_it(feed):
    proto, run = pooled()
    assert feed(proto, get(b"/slow") + expect_head()) == b""  # no 100 while /slow is computed
    out = run()
    assert out.endswith(b"HTTP/1.1 100 Continue\r\n\r\n")  # /slow's answer, then the 100
    [slow, cont] = parse_responses(out)
    assert (slow.status, slow.body, cont.status) == (200, b"slow", 100)
    assert proto.state == BODY
    [r] = parse_responses(feed(proto, b"payload"))
    assert r.status == 200 and r.body == b"payload"
    assert not proto.closing
    # nothing in the pool now: the next one's 100 is immediate
    assert feed(proto, expect_head(1)) == b"HTTP/1.1 100 Continue\r\n\r\n"


def test_100_continue_waits_behind_every_pooled_request_before_it():
    proto, run = pooled()
    assert proto.data_received(get(b"/slow") + get(b"/slow") + expect_head()) == b""
    out = run()  # the first; the second goes to the pool
    assert statuses(parse_responses(out)) == [200]
    out = run()
    assert statuses(parse_responses(out)) == [200, 100]
    [r] = parse_responses(proto.data_received(b"payload"))
    assert r.body == b"payload"


def test_100_continue_not_sent_when_the_body_came_anyway():
    proto, run = pooled()
    assert proto.data_received(get(b"/slow") + expect_head() + b"payload") == b""
    rs = parse_responses(run())
    assert statuses(rs) == [200, 200] and rs[1].body == b"payload"


def test_100_continue_not_sent_when_part_of_the_body_came_anyway():
    proto, run = pooled()
    assert proto.data_received(get(b"/slow") + expect_head() + b"pay") == b""
    assert statuses(parse_responses(run())) == [200]
    assert proto.state == BODY
    [r] = parse_responses(proto.data_received(b"load"))
    assert r.body == b"payload"
