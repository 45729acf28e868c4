"""ASGI apps for the lifespan and stop tests (tests/e2e/test_lifespan_e2e.py),
named by routes as "tests.asgi_lifespan_apps:...".

They leave marker files in the directory named by $PREFORK_TEST_MARKERS
(``<what>-<worker pid>``), so a test sees what ran in which worker; a file
``fail-startup`` there makes ``marker_app``'s startup fail."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def mark(what: str, text: str = "") -> None:
    root = os.environ.get("PREFORK_TEST_MARKERS")
    if root:
        Path(root, f"{what}-{os.getpid()}").write_text(text)


def failing() -> bool:
    root = os.environ.get("PREFORK_TEST_MARKERS")
    return bool(root) and Path(root, "fail-startup").exists()


async def _respond(send, body: bytes, status: int = 200, content_type: bytes = b"application/json") -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", content_type)]})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(scope, receive, send) -> None:
    message = await receive()
    assert message["type"] == "lifespan.startup"
    if failing():
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await asyncio.sleep(0.2)  # a startup that takes a moment: requests must wait for it
    scope["state"]["pid"] = os.getpid()
    scope["state"]["resource"] = "ready"
    mark("startup")
    await send({"type": "lifespan.startup.complete"})
    message = await receive()
    assert message["type"] == "lifespan.shutdown"
    mark("shutdown")
    await send({"type": "lifespan.shutdown.complete"})


async def _sse(receive, send) -> None:
    """Events every 50 ms until the client (or the server) goes; a listener
    in receive() notes the http.disconnect."""
    await receive()  # the (empty) request body

    async def listen():
        message = await receive()
        mark("disconnect", message["type"])

    listener = asyncio.ensure_future(listen())
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    n = 0
    try:
        while True:
            await send({"type": "http.response.body", "body": b"data: %d\n\n" % n, "more_body": True})
            n += 1
            await asyncio.sleep(0.05)
    finally:
        mark("stream-ended", str(n))
        await asyncio.wait([listener], timeout=1)


async def _sleep(scope, send) -> None:
    mark("sleeping")
    seconds = float(scope["query_string"].decode().partition("s=")[2] or 60)
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        mark("cancelled")
        raise
    await _respond(send, b"woke")


async def marker_app(scope, receive, send) -> None:
    """A raw ASGI app with a lifespan: startup sets the state and marks,
    shutdown marks; GET /state answers the request scope's state."""
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    path = scope["path"]
    if path == "/sse":
        await _sse(receive, send)
    elif path == "/sleep":
        await _sleep(scope, send)
    elif path == "/background":  # the response first, then more work in the same call (Starlette's BackgroundTask)
        await _respond(send, b"accepted", status=202)
        await asyncio.sleep(1.0)
        mark("background-done")
    else:
        state = scope["state"]
        body = json.dumps(dict(state)).encode()
        state["touched"] = True  # a request's copy: the next request must not see it
        await _respond(send, body)


async def spawning_app(scope, receive, send) -> None:
    """Its startup starts a task of its own that runs forever (a refresher,
    say) and its shutdown leaves it alone: a stop must not wait for it."""
    if scope["type"] == "lifespan":
        await receive()

        async def refresh():
            while True:
                await asyncio.sleep(0.1)

        scope["state"]["refresher"] = asyncio.ensure_future(refresh())
        await send({"type": "lifespan.startup.complete"})
        await receive()
        mark("shutdown")
        await send({"type": "lifespan.shutdown.complete"})
        return
    await _respond(send, b"ok", content_type=b"text/plain")


async def failing_startup_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no database"})
        return
    await _respond(send, b"never served")


async def raising_startup_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        raise RuntimeError("cannot reach the database")
    await _respond(send, b"served without a lifespan")


async def no_lifespan_app(scope, receive, send) -> None:
    """An app that knows nothing of lifespan (as many raw apps)."""
    assert scope["type"] == "http", "only http is supported"
    await _respond(send, b"no lifespan here", content_type=b"text/plain")


async def hanging_shutdown_app(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        mark("shutdown-begun")
        await asyncio.Event().wait()  # never completes
    await _respond(send, b"ok", content_type=b"text/plain")


async def stop_during_startup_app(scope, receive, send) -> None:
    """A startup that asks the master to stop (QUIT) and goes on for a second
    (a slow database connect); with a file ``hang-startup`` in the markers
    directory it never completes."""
    if scope["type"] == "lifespan":
        await receive()
        mark("begun")
        os.kill(os.getppid(), signal.SIGQUIT)  # the master stops: its QUIT reaches this worker now
        await asyncio.sleep(1.0)
        root = os.environ.get("PREFORK_TEST_MARKERS")
        if root and Path(root, "hang-startup").exists():
            await asyncio.Event().wait()
        mark("startup")
        await send({"type": "lifespan.startup.complete"})
        await receive()
        mark("shutdown")
        await send({"type": "lifespan.shutdown.complete"})
        return
    mark("served")
    await _respond(send, b"ok", content_type=b"text/plain")


# --- FastAPI with a lifespan-created resource ---------------------------------------------


@asynccontextmanager
async def _db_lifespan(app: FastAPI):
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)")
    db.executemany("INSERT INTO item VALUES (?, ?)", [(1, "pen"), (2, "ink")])
    app.state.db = db
    mark("fastapi-startup")
    yield {"worker_pid": os.getpid()}  # lifespan state: request.state.worker_pid
    db.close()
    mark("fastapi-shutdown")


fastapi_lifespan_app = FastAPI(lifespan=_db_lifespan)


@fastapi_lifespan_app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request):
    row = request.app.state.db.execute("SELECT name FROM item WHERE id = ?", (item_id,)).fetchone()
    return {"id": item_id, "name": row[0] if row else None, "worker_pid": request.state.worker_pid}


# --- Starlette whose shutdown hangs: cancelled at the bound, it sends lifespan.shutdown.failed ---


@asynccontextmanager
async def _stuck_lifespan(app):
    yield
    mark("starlette-shutdown-begun")
    await asyncio.Event().wait()  # a pool that never drains


starlette_stuck_shutdown_app = Starlette(lifespan=_stuck_lifespan, routes=[
    Route("/", lambda request: PlainTextResponse("ok"))])
