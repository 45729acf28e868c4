"""ASGI apps used as test fixtures (named by routes as "tests.asgi_apps:..."):
a Starlette app, a FastAPI app, and raw ASGI apps for the spec tests."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route


# --- Starlette -------------------------------------------------------------------------


async def _hello(request: Request):
    return JSONResponse({"hello": "starlette", "root_path": request.scope["root_path"],
                         "path": request.url.path, "server": request.scope["server"]})


async def _item(request: Request):
    return JSONResponse({"id": int(request.path_params["item_id"]), "q": request.query_params.get("q")})


async def _echo(request: Request):
    data = await request.json()
    return JSONResponse({"got": data}, status_code=201)


async def _numbers():
    for i in range(5):
        yield f"line {i}\n".encode()
        await asyncio.sleep(0)


async def _stream(request: Request):
    return StreamingResponse(_numbers(), media_type="text/plain")


async def _slow(request: Request):
    await asyncio.sleep(float(request.query_params.get("s", "0.2")))
    return PlainTextResponse("slow " + request.query_params.get("n", ""))


starlette_app = Starlette(routes=[
    Route("/", _hello), Route("/items/{item_id:int}", _item), Route("/echo", _echo, methods=["POST"]),
    Route("/stream", _stream), Route("/slow", _slow),
])


# --- FastAPI ---------------------------------------------------------------------------

fastapi_app = FastAPI()


class Item(BaseModel):
    name: str
    price: float


@fastapi_app.get("/users/{user_id}")
async def get_user(user_id: int, verbose: bool = False):
    return {"user_id": user_id, "verbose": verbose}


@fastapi_app.post("/items")
async def create_item(item: Item):
    return {"name": item.name, "price": item.price, "total": item.price * 2}


@fastapi_app.get("/stream")
async def fastapi_stream():
    return StreamingResponse(_numbers(), media_type="text/plain")


# --- raw ASGI --------------------------------------------------------------------------


def make_app():
    """asgi_factory = true: called with no arguments, returns the app."""
    return raw_app


async def raw_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"raw " + scope["path"].encode()})


not_an_app = 42


BIG_CHUNK = 256 * 1024
BIG_CHUNKS = 256  # 64 MiB


async def big_stream(scope, receive, send):
    """64 MiB streamed in 256 KiB pieces; after each send() returns, the count
    goes into the file named by PREFORK_TEST_PROGRESS (the slow-reader test)."""
    import os

    progress = os.environ.get("PREFORK_TEST_PROGRESS")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream")]})
    chunk = b"x" * BIG_CHUNK
    for i in range(BIG_CHUNKS):
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(i + 1))
            os.replace(progress + ".tmp", progress)
    await send({"type": "http.response.body", "body": b""})


async def long_poll(scope, receive, send):
    """Waits in receive() until the client goes, then notes what it got in the
    file named by PREFORK_TEST_PROGRESS, and tries to send (which must raise)."""
    import os

    await receive()
    message = await receive()
    try:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        outcome = "sent"
    except OSError as exc:
        outcome = type(exc).__name__
    with open(os.environ["PREFORK_TEST_PROGRESS"], "w") as f:
        f.write(f"{message['type']} {outcome}")
