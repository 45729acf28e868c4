"""The built-in WebSocket routes: ``websocket_echo``, ``pubsub`` and ``publish``.

A WebSocket route is a ``ServedRoute`` (``serve``): for a request that is a
valid opening handshake (``protocols.wshandshake.check_handshake``) and the
one llhttp stopped at for its Upgrade header (``upgradable``), it makes a
``WebSocketProtocol`` and has the HTTP protocol hand the connection over
(``switch_to``, with the 101); anything else gets the handshake's refusal
(400, 403, 426) as an ordinary response. Ordinary requests never come here,
so the HTTP hot path pays nothing for WebSockets.

``pubsub`` on a prefix route (``/ws/``): a client of ``/ws/<channel>``
subscribes to ``<channel>``; each message it sends is published through the
worker's ``Bus`` (``prefork.pubsub``), which delivers it to the ``Hub`` of
every worker it reaches, and the hub sends it to each subscriber of the
channel there, the sender included: the frame is built once per delivery
(and compressed once, for the subscribers with permessage-deflate).
``publish`` (``POST /publish/<channel>``, for the addresses of
``[websocket] publish_allow``, as ``/status``'s allow list) publishes a
request's body the same way: binary with ``Content-Type:
application/octet-stream``, else text (UTF-8, or 400).
"""

from __future__ import annotations

import logging
from typing import Protocol

from ..config import WebSocketConfig
from ..messages import Request, Response
from ..protocols.websocket import Shared, WebSocketContext, WebSocketProtocol
from ..protocols.wshandshake import agree, check_handshake, response_101
from ..pubsub import Bus, LoopbackBus
from .status import _Access

log = logging.getLogger("prefork.worker")

_REFUSALS = {400: b"400 Bad Request: not a valid WebSocket handshake\n", 403: b"403 Forbidden: origin not allowed\n",
             404: b"404 Not Found: no channel\n", 426: b"426 Upgrade Required: a WebSocket (version 13) route\n"}


class Upgrading(Protocol):
    """What a WebSocket route needs of the HTTP protocol (``HttpServerProtocol``)."""

    def upgradable(self, request: Request) -> bool: ...

    def switch_to(self, new, head: bytes, request: Request) -> None: ...

    def write_response(self, request: Request, response: Response | None, status: int = 0) -> None: ...


class WebSocketRoute:
    """A route whose requests become WebSocket connections of ``ctx``;
    ``tag(request)`` is what each connection is for (a pubsub channel), or
    None to refuse it with 404."""

    def __init__(self, ctx: WebSocketContext, prefix: bytes = b"", channels: bool = False):
        self.ctx = ctx
        self.prefix = prefix
        self.channels = channels  # the path after the prefix names a channel (pubsub)

    def serve(self, proto: Upgrading, request: Request) -> None:
        status, extra = check_handshake(request.method, request.headers, self.ctx.config.origins)
        tag = None
        if status == 101:
            if self.channels:
                tag = request.path[len(self.prefix):]
                if not tag:
                    status, extra = 404, ()
            if status == 101 and not proto.upgradable(request):
                status, extra = 400, ()  # queued behind another request: what follows may not be frames
        if status != 101:
            proto.write_response(request, Response(status, _REFUSALS[status], b"text/plain", list(extra)))
            return
        pmd = agree(self.ctx.deflate, request.headers)
        proto.switch_to(WebSocketProtocol(self.ctx, tag, pmd=pmd), response_101(extra, (), pmd), request)


class EchoHandler:
    """``websocket_echo``: every text and binary message back."""

    def opened(self, conn: WebSocketProtocol) -> None:
        pass

    def message(self, conn: WebSocketProtocol, payload: bytes, binary: bool) -> None:
        conn.send(payload, binary)

    def closed(self, conn: WebSocketProtocol, code: int, reason: str) -> None:
        pass


class Hub:
    """A worker's channels: channel -> the set of its subscribers here
    (O(1) to join and leave). It publishes through the bus and is what the
    bus delivers to (``pubsub.Subscriber``)."""

    def __init__(self, bus: Bus):
        self.channels: dict[bytes, set] = {}
        self.bus = bus
        self.published = 0
        self.delivered = 0
        bus.attach(self)

    # the WebSocketHandler of the pubsub routes
    def opened(self, conn: WebSocketProtocol) -> None:
        subs = self.channels.get(conn.tag)
        if subs is None:
            subs = self.channels[conn.tag] = set()
        subs.add(conn)

    def message(self, conn: WebSocketProtocol, payload: bytes, binary: bool) -> None:
        self.publish(conn.tag, payload, binary)

    def closed(self, conn: WebSocketProtocol, code: int, reason: str) -> None:
        subs = self.channels.get(conn.tag)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self.channels[conn.tag]

    # the bus's side
    def publish(self, channel: bytes, payload: bytes, binary: bool) -> None:
        self.published += 1
        self.bus.publish(channel, payload, binary)

    def deliver(self, channel: bytes, payload: bytes, binary: bool) -> None:
        subs = self.channels.get(channel)
        if not subs:
            return
        shared = Shared(payload, binary)
        data = shared.plain
        # a copy: a send may close a slow reader, which leaves the set
        for conn in tuple(subs):
            pmd = conn.pmd
            if conn.send_frame(data if pmd is None else shared.frame_for(pmd)):
                self.delivered += 1


def websocket_context(app, handler) -> WebSocketContext:
    """A WebSocket context for a route of this worker (its clock, its
    high-water mark), registered for the worker's graceful stop."""
    config: WebSocketConfig = app.config.websocket
    ctx = WebSocketContext(config, handler, app.clock, app.config.http.high_water)
    app.websockets.append(ctx)
    return ctx


def hub(app) -> Hub:
    """The worker's hub (one for every pubsub and publish route)."""
    found = app.shared.get("pubsub.hub")
    if found is None:
        found = app.shared["pubsub.hub"] = Hub(app.bus if app.bus is not None else LoopbackBus())
    return found


def make_echo(app, prefix: str) -> WebSocketRoute:
    return WebSocketRoute(websocket_context(app, EchoHandler()))


def make_pubsub(app, prefix: str) -> WebSocketRoute:
    return WebSocketRoute(websocket_context(app, hub(app)), prefix.encode(), channels=True)


def make_publish(app, prefix: str):
    """``POST <prefix><channel>``: publish the body to the channel."""
    the_hub = hub(app)
    access = _Access(app.config.websocket.publish_allow)
    start = len(prefix)

    def publish(request: Request) -> Response:
        if not access.allowed(request.peer):
            return Response(403, b"403 Forbidden\n", b"text/plain")
        if request.method != b"POST":
            return Response(405, b"405 Method Not Allowed: POST a message\n", b"text/plain", [(b"Allow", b"POST")])
        channel = request.path[start:]
        if not channel:
            return Response(404, _REFUSALS[404], b"text/plain")
        body = request.body
        binary = (request.header(b"content-type") or b"").lower().startswith(b"application/octet-stream")
        if not binary:
            try:
                body.decode()
            except UnicodeDecodeError:
                return Response(400, b"400 Bad Request: a text message must be UTF-8 "
                                     b"(or send Content-Type: application/octet-stream)\n", b"text/plain")
        the_hub.publish(channel, body, binary)
        return Response(204, b"", b"text/plain")

    return publish
