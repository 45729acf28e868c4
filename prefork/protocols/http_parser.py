"""The HTTP/1.1 request parser: httptools (llhttp) callbacks and the checks
on what they report (limits, Host, framing headers, trailers).

A ``Parser`` is borrowed by one connection's ``HttpProtocol`` while a request
arrives (``proto``), and reports back to it: ``_special_head`` when a head
that announces a body or an expectation is complete, ``_body_progress`` as the
body arrives, ``on_request`` when the request is whole. An error raises
``ParseError`` (answered with its status) or ``Stop`` (nothing more is parsed).

A request whose route takes its body as a stream (chosen at head time, see
``HttpProtocol._special_head``) has a ``sink``: its body goes there as it is
parsed (``HttpProtocol._stream_body``), its end too (``_stream_end``), instead
of being gathered for ``on_request``.
"""

from __future__ import annotations

import re
import socket

import httptools

from ..config import HttpConfig
from .states import CLOSED

# on_header looks only at names of the lengths of host (4), expect (6), connection (10),
# content-length (14) and transfer-encoding (17)

# Host: uri-host [ ":" port ] (RFC 9112 3.2, RFC 3986 3.2.2): an IP-literal in
# brackets, or a reg-name (an IPv4 address is one) of unreserved, sub-delims
# and %XX; the port is digits.
_HOST_RE = re.compile(rb"(?:\[([^\]]*)\]|(?:[A-Za-z0-9._~!$&'()*+,;=-]|%[0-9A-Fa-f]{2})*)(?::([0-9]*))?")
_IPVFUTURE_RE = re.compile(rb"[vV][0-9A-Fa-f]+\.[A-Za-z0-9._~!$&'()*+,;=:-]+")

# Fields a request may not carry in its trailer section (RFC 9110 6.5.1: those
# needed before the content is processed): framing, routing, authentication,
# request modifiers, connection controls and the content's format. A trailer
# with one of them is answered 400; the others go to ``Request.trailers``.
FORBIDDEN_TRAILERS = frozenset((
    b"content-length", b"transfer-encoding", b"trailer", b"te",           # framing
    b"host", b"forwarded", b"x-forwarded-for", b"x-forwarded-host",       # routing
    b"x-forwarded-proto", b"x-real-ip",
    b"authorization", b"proxy-authorization", b"cookie", b"set-cookie",   # authentication
    b"www-authenticate", b"proxy-authenticate",
    b"expect", b"max-forwards", b"range", b"if-match", b"if-none-match",  # request modifiers
    b"if-modified-since", b"if-unmodified-since", b"if-range", b"cache-control", b"pragma",
    b"connection", b"keep-alive", b"upgrade", b"proxy-connection",        # connection controls
    b"content-type", b"content-encoding", b"content-range", b"content-location",  # content format
))


def valid_host(value: bytes) -> bool:
    """Is ``value`` a valid Host field value (uri-host [":" port])? Empty is
    valid (RFC 9112 3.2: a target without an authority)."""
    m = _HOST_RE.fullmatch(value.strip(b" \t"))
    if m is None:
        return False
    literal, port = m.groups()
    if port:
        port = port.lstrip(b"0")
        if len(port) > 5 or (port and int(port) > 65535):
            return False
    if literal is not None:
        if literal[:1] in (b"v", b"V"):
            return _IPVFUTURE_RE.fullmatch(literal) is not None
        try:
            socket.inet_pton(socket.AF_INET6, literal.decode("ascii"))
        except (OSError, UnicodeDecodeError, ValueError):
            return False
    return True


class Stop(Exception):
    """Raised from a callback to stop parsing: the connection is closing."""


class ParseError(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


class Parser:
    """An httptools parser and the request being built; pooled per worker.

    This is the hot path: the limits are copied in at creation, and the
    per-request fields are reset where a message begins."""

    __slots__ = ("parser", "proto", "url", "headers", "header_bytes", "body", "body_len",
                 "content_length", "chunked", "host_count", "connection", "expect", "in_message", "head_done", "version",
                 "max_url", "max_headers", "max_header_bytes", "max_body", "header_timeout", "reusable", "method",
                 "special", "head_bytes", "trailers", "good_host", "continue_due", "sink", "keep_alive")

    def __init__(self, config: HttpConfig) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.proto = None  # the HttpProtocol being parsed for
        self.in_message = False
        self.max_url = config.max_request_line
        self.max_headers = config.max_headers
        self.max_header_bytes = config.max_header_bytes
        self.max_body = config.max_body
        self.header_timeout = config.header_timeout
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] | None = None
        self.head_done = False
        self.version = "1.1"
        self.method = b""
        self.reusable = True
        self.keep_alive = False   # llhttp's should_keep_alive(), asked at the end of the head
        self.special = False      # a body or an Expect: the fields below are in use
        self.content_length = -1
        self.chunked = False
        self.expect = b""
        self.body_len = 0
        self.head_bytes = 0       # bytes received since the request began (for _check_head_size)
        self.trailers: list[tuple[bytes, bytes]] | None = None  # a chunked body's trailer fields
        self.good_host = b""      # the last Host value found valid: most requests repeat it
        self.continue_due = False  # a 100 Continue owed (once the requests before this one are answered,
        #                            or, for a streamed body, when its consumer first asks for it)
        self.sink = None           # where a streamed body goes (a BodySink), or None: gathered whole

    # httptools callbacks -----------------------------------------------------

    def on_message_begin(self) -> None:
        proto = self.proto
        state = proto.state
        if state == CLOSED or proto._stopped:
            raise Stop  # pipelined data after the last request we answer
        self.in_message = True
        self.url = b""
        self.headers = []
        self.header_bytes = 0
        self.host_count = 0
        self.connection = False
        self.head_done = False
        # body, content_length, chunked and expect are at their defaults here:
        # whatever sets one sets ``special``, and the message's end resets them.
        # The state stays IDLE: a request that arrives whole in one read never
        # needs HEAD and its header deadline; one that does not is moved to
        # HEAD when the read ends (data_received).

    def on_url(self, url: bytes) -> None:
        url = self.url = self.url + url
        if len(url) > self.max_url:
            raise ParseError(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.head_done:  # llhttp reports a chunked body's trailer fields here too
            self._trailer(name, value)
            return
        headers = self.headers
        self.header_bytes += len(name) + len(value) + 4
        if len(headers) >= self.max_headers or self.header_bytes > self.max_header_bytes:
            raise ParseError(431, "request header fields too large")
        # the names are kept lower-cased (Request.headers): lowered once here,
        # where the special ones are looked at, not again by each consumer
        if name == b"Host":  # as nearly every client spells it: no lower() needed
            headers.append((b"host", value))
            self.host_count += 1
            if value != self.good_host:
                self._check_host(value)
            return
        lname = name.lower()
        headers.append((lname, value))
        n = len(name)
        if n != 4 and n != 6 and n != 10 and n != 14 and n != 17:  # see the lengths at the top
            return
        if lname == b"host":
            self.host_count += 1
            if value != self.good_host:
                self._check_host(value)
        elif lname == b"content-length":
            self.special = True
            self.content_length = int(value)  # llhttp has checked digits and duplicates
        elif lname == b"transfer-encoding":
            self.special = True
            if value.strip().lower() != b"chunked":
                raise ParseError(501, "unsupported transfer coding")
            self.chunked = True
        elif lname == b"expect":
            self.special = True
            self.expect = value.strip().lower()
        elif lname == b"connection":
            self.connection = True

    def _check_host(self, value: bytes) -> None:
        if not valid_host(value):
            raise ParseError(400, "invalid Host")
        self.good_host = value

    def _trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field: kept apart from the headers (RFC 9110 6.5.1), under the same limits."""
        trailers = self.trailers
        if trailers is None:
            trailers = self.trailers = []
        trailers.append((name, value))
        self.header_bytes += len(name) + len(value) + 4
        if len(self.headers) + len(trailers) > self.max_headers or self.header_bytes > self.max_header_bytes:
            raise ParseError(431, "request header fields too large")
        if name.lower() in FORBIDDEN_TRAILERS:
            raise ParseError(400, "field not allowed in a trailer")

    def on_headers_complete(self) -> None:
        self.head_done = True
        parser = self.parser
        # llhttp's answer is final here for a request (a trailer may not carry
        # Connection: _trailer refuses it): on_message_complete reuses it
        keep_alive = self.keep_alive = parser.should_keep_alive()
        if not self.connection and keep_alive:
            # llhttp accepts only 0.9, 1.0, 1.1 and 2.0, and keeps alive
            # without a Connection header only an x.y with y > 0: 1.1. This
            # skips get_http_version, which formats a new string every time.
            version = self.version = "1.1"
        else:
            version = self.version = parser.get_http_version()
            if version != "1.1" and version != "1.0":
                # llhttp accepts "GET /" (0.9) and 2.0; this server speaks 1.x
                raise ParseError(400 if version == "0.9" else 505, "unsupported HTTP version")
        method = self.method = parser.get_method()
        if method == b"CONNECT":
            raise ParseError(405, "CONNECT is not supported")
        if self.host_count != 1 and (self.host_count or version == "1.1"):
            raise ParseError(400, "missing or repeated Host")
        if self.special:
            self.proto._special_head(self)

    def on_body(self, body: bytes) -> None:
        self.body_len += len(body)
        if self.body_len > self.max_body:
            raise ParseError(413, "request body too large")
        if self.sink is not None:
            self.proto._stream_body(self.sink, body)
            return
        if self.body is None:
            self.body = [body]
        else:
            self.body.append(body)
        self.proto._body_progress()

    def on_message_complete(self) -> None:
        self.in_message = False
        self.head_bytes = 0
        # after a message that ends the connection llhttp refuses more input:
        # such a parser must not go back to the pool
        keep_alive = self.reusable = self.keep_alive  # (on_headers_complete asked llhttp)
        if self.special:
            sink = self.sink
            if sink is not None:  # a streamed body: its request is the route's already
                self.sink = None
                self.special = False
                self.content_length = -1
                self.chunked = False
                self.expect = b""
                self.continue_due = False
                trailers = self.trailers
                self.trailers = None
                self.proto._stream_end(sink, trailers or ())
                return
            body = self.body
            body = b"" if body is None else body[0] if len(body) == 1 else b"".join(body)
            self.special = False
            self.body = None
            self.content_length = -1
            self.chunked = False
            self.expect = b""
            self.continue_due = False
            trailers = self.trailers
            if trailers is not None:
                self.trailers = None
                self.proto.on_request(self.method, self.url, self.version, self.headers, body, keep_alive, trailers)
                return
        else:
            body = b""
        proto = self.proto  # compiled: the protocol's class (on_request a C call)
        proto.on_request(self.method, self.url, self.version, self.headers, body, keep_alive)

