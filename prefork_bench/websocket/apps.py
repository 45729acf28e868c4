"""The broadcast app of the comparison, as the other servers run it.

The same behaviour as prefork's ``pubsub`` and ``publish`` routes: a client
of ``/ws/<channel>`` subscribes to ``<channel>``; each message it sends goes
to every subscriber of the channel in this process, the sender included;
``POST /publish/<channel>`` (uvicorn only: the ``websockets`` server speaks
no HTTP but GET) publishes its body; ``GET /plaintext`` answers 200 (the
readiness check). Neither crosses processes: with several workers a message
reaches only the subscribers of the worker that got it.

- ``make_app()``: the ASGI app, for ``uvicorn --factory`` (a loop of
  ``await send()`` per subscriber, as the FastAPI docs' ConnectionManager does).
- ``python -m prefork_bench.websocket.apps --port P [--workers N]``: the
  ``websockets`` library's own server (``websockets.asyncio.server.serve``,
  its ``broadcast()``), on uvloop; N processes on SO_REUSEPORT sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

WS_PREFIX = "/ws/"
PUBLISH_PREFIX = "/publish/"


class Broadcast:
    """The ASGI app: channel -> the ``send`` callables of its subscribers."""

    def __init__(self) -> None:
        self.channels: dict[str, set] = {}

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "websocket":
            await self.websocket(scope, receive, send)
        elif kind == "http":
            await self.http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                event = await receive()
                if event["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif event["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def publish(self, channel: str, event: dict) -> None:
        for subscriber in tuple(self.channels.get(channel, ())):
            try:
                await subscriber(event)
            except Exception:  # a subscriber that has gone: its own call removes it
                pass

    async def websocket(self, scope, receive, send) -> None:
        await receive()  # websocket.connect
        channel = scope["path"][len(WS_PREFIX):]
        if not scope["path"].startswith(WS_PREFIX) or not channel:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        subscribers = self.channels.setdefault(channel, set())
        subscribers.add(send)
        try:
            while True:
                event = await receive()
                if event["type"] == "websocket.disconnect":
                    return
                if event.get("text") is not None:
                    await self.publish(channel, {"type": "websocket.send", "text": event["text"]})
                else:
                    await self.publish(channel, {"type": "websocket.send", "bytes": event.get("bytes") or b""})
        finally:
            subscribers.discard(send)

    async def http(self, scope, receive, send) -> None:
        path, method = scope["path"], scope["method"]
        body = b""
        while True:
            event = await receive()
            body += event.get("body", b"")
            if not event.get("more_body"):
                break
        status, answer = 404, b"not found\n"
        if path == "/plaintext":
            status, answer = 200, b"ok\n"
        elif path.startswith(PUBLISH_PREFIX) and len(path) > len(PUBLISH_PREFIX) and method == "POST":
            binary = any(k == b"content-type" and v.startswith(b"application/octet-stream")
                         for k, v in scope["headers"])
            event = {"type": "websocket.send", "bytes": body} if binary else \
                {"type": "websocket.send", "text": body.decode()}
            await self.publish(path[len(PUBLISH_PREFIX):], event)
            status, answer = 204, b""
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(answer)).encode())]})
        await send({"type": "http.response.body", "body": answer})


def make_app() -> Broadcast:
    return Broadcast()


async def serve_websockets(host: str, port: int, reuse_port: bool) -> None:
    """The ``websockets`` server until SIGTERM or SIGINT."""
    from websockets.asyncio.server import broadcast, serve
    from websockets.datastructures import Headers
    from websockets.http11 import Response

    channels: dict[str, set] = {}

    def process_request(connection, request):
        if request.path == "/plaintext":
            return Response(200, "OK", Headers([("Content-Length", "3")]), b"ok\n")
        if not request.path.startswith(WS_PREFIX) or len(request.path) == len(WS_PREFIX):
            return connection.respond(404, "not found\n")
        return None

    async def handler(connection) -> None:
        channel = connection.request.path[len(WS_PREFIX):]
        subscribers = channels.setdefault(channel, set())
        subscribers.add(connection)
        try:
            async for message in connection:
                broadcast(subscribers, message)
        finally:
            subscribers.discard(connection)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.set_result, None)
    async with serve(handler, host, port, process_request=process_request, compression=None,
                     reuse_port=reuse_port, backlog=4096):
        await stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prefork_bench.websocket.apps",
                                     description="the broadcast app on the websockets library's own server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    import uvloop

    from ..procs import die_with_parent
    children = []
    for _ in range(args.workers - 1):
        pid = os.fork()
        if pid == 0:
            die_with_parent()
            uvloop.run(serve_websockets(args.host, args.port, True))
            os._exit(0)
        children.append(pid)
    try:
        uvloop.run(serve_websockets(args.host, args.port, args.workers > 1))
    finally:
        for pid in children:  # our own children, by PID
            try:
                os.kill(pid, signal.SIGTERM)
                os.waitpid(pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
