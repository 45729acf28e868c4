"""The ASGI ``websocket`` scope: an ASGI route's WebSocket connections.

``AsgiApp.serve`` hands a request here when it is a WebSocket opening
handshake llhttp stopped at (``HttpProtocol.upgradable``) and valid
(``wshandshake.check_handshake``; else its 400/426/403 is the answer, as on the
built-in routes). The protocol waits (state ``WAITING``, as for an HTTP
call) while the app runs as a task and decides:

* ``websocket.accept`` (``subprotocol``, ``headers``): the 101 goes out and
  the HTTP protocol hands the connection to a ``WebSocketProtocol``
  (``switch_to``) whose handler is this call: each message becomes a
  ``websocket.receive``, the close (any code, or 1006 when the connection is
  lost) a ``websocket.disconnect``;
* ``websocket.close`` before accepting: 403;
* the denial-response extension (``websocket.http.response.start`` and
  ``.body``): that response, whole;
* returning without either: 403 (a failure: 500). After the accept, an app
  that returns closes with 1000, one that fails with 1011.

``send`` after the accept frames ``websocket.send`` (``text`` or
``bytes``) and ``websocket.close`` (``code``, ``reason``), and waits while
the driver's unsent output is above ``high_water``. Messages the app has not
taken yet wait in the call (at most ``INBOX_HIGH``; reading pauses there).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from .asgi_response import Exchange
from .framing import ClientDisconnected
from .messages import Request, Response
from .protocols.http import WAITING
from .protocols.websocket import ABNORMAL, INTERNAL, NORMAL, WebSocketContext, WebSocketProtocol
from .protocols.wshandshake import agree, check_handshake, response_101

log = logging.getLogger("prefork.worker")

INBOX_HIGH = 16  # received messages not yet taken by the app: reading pauses at this many
INBOX_LOW = 4    # ...and resumes below this many

_REFUSALS = {400: b"400 Bad Request: not a valid WebSocket handshake\n", 403: b"403 Forbidden\n",
             426: b"426 Upgrade Required: WebSocket version 13\n"}


class CallHandler:
    """The ``WebSocketHandler`` of an ASGI route's context: each connection's
    messages go to its call (``conn.tag``)."""

    def opened(self, conn: WebSocketProtocol) -> None:
        pass

    def message(self, conn: WebSocketProtocol, payload: bytes, binary: bool) -> None:
        conn.tag.received(payload, binary)

    def closed(self, conn: WebSocketProtocol, code: int, reason: str) -> None:
        conn.tag.closed(code, reason)


class WebSocketCall:
    """One WebSocket connection handed to an ASGI app: its receive and send."""

    __slots__ = ("proto", "request", "ctx", "loop", "scope", "task", "conn", "inbox", "waiter", "connected",
                 "accepted", "ended", "denial", "denial_body", "paused")

    def __init__(self, proto: Exchange, request: Request, ctx: WebSocketContext, loop, scope: dict):
        self.proto = proto
        self.request = request
        self.ctx = ctx
        self.loop = loop
        self.scope = scope
        self.task = None
        self.conn: WebSocketProtocol | None = None
        self.inbox: deque = deque()
        self.waiter: asyncio.Future | None = None
        self.connected = False   # websocket.connect given
        self.accepted = False
        self.ended = False       # closed (either way) or answered without accepting
        self.denial: tuple | None = None  # (status, headers) of a denial response begun
        self.denial_body: list[bytes] = []
        self.paused = False

    # --- the connection's side -------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        if binary:
            self.inbox.append({"type": "websocket.receive", "bytes": payload})
        else:
            self.inbox.append({"type": "websocket.receive", "text": payload.decode()})
        if len(self.inbox) >= INBOX_HIGH and not self.paused and self.conn is not None:
            self.paused = True
            self.conn.driver.pause_reading()
        self._wake()

    def closed(self, code: int, reason: str = "") -> None:
        if not self.ended:
            self.ended = True
            self.inbox.append({"type": "websocket.disconnect", "code": code, "reason": reason})
        self._wake()

    # the HTTP protocol's calls before the accept (its ctx.asgi_calls)
    def lost(self) -> None:
        self.closed(ABNORMAL)

    def eof(self) -> None:
        self.closed(ABNORMAL)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- the app's side -----------------------------------------------------------------

    async def receive(self) -> dict:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        while True:
            inbox = self.inbox
            if inbox:
                event = inbox.popleft()
                if self.paused and len(inbox) < INBOX_LOW and self.conn is not None:
                    self.paused = False
                    self.conn.driver.resume_reading()
                return event
            if self.ended:
                return {"type": "websocket.disconnect", "code": ABNORMAL, "reason": ""}
            self.waiter = self.loop.create_future()
            await self.waiter

    async def send(self, message: dict) -> None:
        kind = message["type"]
        conn = self.conn
        if conn is not None:  # accepted
            if kind == "websocket.send":
                if self.ended:
                    raise ClientDisconnected("the WebSocket is closed")
                text = message.get("text")
                if text is not None:
                    conn.send(text.encode(), False)
                else:
                    conn.send(bytes(message.get("bytes") or b""), True)
                driver = conn.driver
                if driver is not None and driver.write_blocked() and not self.ended:
                    await driver.drained()
                return
            if kind == "websocket.close":
                conn.close(message.get("code") or NORMAL, message.get("reason") or "")
                return
            raise RuntimeError(f"unexpected ASGI message {kind!r} after websocket.accept")
        if self.ended:
            raise ClientDisconnected("the client has gone")
        if kind == "websocket.accept" and self.denial is None:
            self._accept(message)
        elif kind == "websocket.close" and self.denial is None:
            self._deny(Response(403, _REFUSALS[403], b"text/plain"))
        elif kind == "websocket.http.response.start" and self.denial is None:
            self.denial = (message["status"], list(message.get("headers") or ()))
        elif kind == "websocket.http.response.body" and self.denial is not None:
            self.denial_body.append(message.get("body", b""))
            if not message.get("more_body", False):
                status, headers = self.denial
                content_type = b"text/plain"
                extra = []
                for name, value in headers:
                    lname = name.lower()
                    if lname == b"content-type":
                        content_type = value
                    elif lname not in (b"content-length", b"transfer-encoding", b"connection"):
                        extra.append((name, value))
                self._deny(Response(status, b"".join(self.denial_body), content_type, extra))
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} before websocket.accept")

    def _accept(self, message: dict) -> None:
        proto = self.proto
        proto.ctx.asgi_calls.pop(proto, None)
        if proto.state != WAITING:  # gone meanwhile
            self.closed(ABNORMAL)
            return
        extra = []
        subprotocol = message.get("subprotocol")
        if subprotocol:
            extra.append((b"Sec-WebSocket-Protocol", subprotocol.encode()))
        for name, value in message.get("headers") or ():
            if name.lower() not in (b"sec-websocket-protocol", b"upgrade", b"connection", b"sec-websocket-accept",
                                    b"sec-websocket-extensions"):  # the server's
                extra.append((bytes(name), bytes(value)))
        status, key = check_handshake(self.request.method, self.request.headers, ())
        self.accepted = True
        pmd = agree(self.ctx.deflate, self.request.headers)
        conn = self.conn = WebSocketProtocol(self.ctx, self, pmd=pmd)
        proto.switch_to(conn, response_101(key, extra, pmd), self.request)

    def _deny(self, response: Response) -> None:
        self.ended = True
        proto = self.proto
        proto.ctx.asgi_calls.pop(proto, None)
        if proto.state != WAITING:
            return
        self.request.keep_alive = False
        proto.end_wait()
        proto.write_response(self.request, response)
        proto.after_wait()

    # --- the server's side --------------------------------------------------------------

    async def run(self, app) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except Exception:
            path = self.request.path.decode("latin-1")
            if self.conn is not None:
                if not self.ended:
                    log.exception("ASGI WebSocket app for %s failed: closing with 1011", path)
                self.conn.close(INTERNAL, "")
            elif not self.ended:
                log.exception("ASGI WebSocket app for %s failed before accepting", path)
                self._fail()
            return
        if self.conn is not None:
            self.conn.close(NORMAL, "")
        elif not self.ended:
            self._deny(Response(403, _REFUSALS[403], b"text/plain"))  # neither accepted nor refused

    def _fail(self) -> None:
        self.ended = True
        proto = self.proto
        proto.ctx.asgi_calls.pop(proto, None)
        if proto.state == WAITING:
            proto.fail_waited(self.request)


def refuse(proto: Exchange, request: Request, status: int, extra) -> None:
    """An invalid handshake to an ASGI route: answered here, the app never sees it."""
    proto.write_response(request, Response(status, _REFUSALS.get(status, b""), b"text/plain", list(extra)))


def start(app, proto: Exchange, request: Request, ctx: WebSocketContext, loop, scope: dict) -> None:
    """Hand a WebSocket handshake to ``app`` (``AsgiApp.serve`` found it is one);
    an invalid one is refused here."""
    status, extra = check_handshake(request.method, request.headers, ())
    if status != 101:
        refuse(proto, request, status, extra)
        return
    proto.wait()
    scope["type"] = "websocket"
    del scope["method"]
    scope["scheme"] = "wss" if request.scheme == "https" else "ws"
    scope["subprotocols"] = subprotocols(scope["headers"])
    scope["extensions"] = {"websocket.http.response": {}}
    call = WebSocketCall(proto, request, ctx, loop, scope)
    proto.ctx.asgi_calls[proto] = call
    call.task = loop.create_task(call.run(app))


def subprotocols(headers: list) -> list[str]:
    """The subprotocols offered (``headers`` lower-cased)."""
    out = []
    for name, value in headers:
        if name == b"sec-websocket-protocol":
            out += [token.strip().decode("latin-1") for token in value.split(b",") if token.strip()]
    return out
