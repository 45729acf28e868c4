"""Real framework apps as test fixtures (routes name them
"tests.framework_apps:..."): a Starlette app and a FastAPI app with JSON, path
and query parameters, urlencoded and multipart forms, JSON bodies, a streamed
response, a background task (it records into the app's state, which a later
request reads back: one worker, one state) and who the client is (the scope's
``client`` and ``scheme``); and a raw ASGI app streaming 100 MB for the
slow-reader test. The Django project is tests/django_project/."""

from __future__ import annotations

import asyncio
import hashlib
import os

from fastapi import BackgroundTasks, FastAPI, Form, Query, UploadFile
from fastapi import Request as FastApiRequest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


async def _lines(n: int):
    for i in range(n):
        yield f"line {i}\n".encode()
        await asyncio.sleep(0)


def _who(scope) -> dict:
    client = scope.get("client")
    return {"client": list(client) if client else None, "scheme": scope["scheme"]}


# --- Starlette -------------------------------------------------------------------------


async def _st_who(request: Request):
    return JSONResponse(_who(request.scope))


async def _st_item(request: Request):
    return JSONResponse({"id": request.path_params["item_id"], "q": request.query_params.get("q"),
                         "tags": request.query_params.getlist("tag")})


async def _st_json(request: Request):
    return JSONResponse({"got": await request.json()}, status_code=201)


async def _st_form(request: Request):
    async with request.form() as form:
        out = {}
        for name, value in form.multi_items():
            if isinstance(value, str):
                out[name] = value
            else:  # an UploadFile
                data = await value.read()
                out[name] = {"filename": value.filename, "size": len(data),
                             "sha256": hashlib.sha256(data).hexdigest()}
    return JSONResponse(out)


async def _st_stream(request: Request):
    return StreamingResponse(_lines(int(request.query_params.get("n", "5"))), media_type="text/plain")


async def _record(state, name: str) -> None:
    # async: it runs on the loop, so two requests' tasks cannot interleave (a
    # sync one runs in a thread, where two could lose an update)
    state.done = [*getattr(state, "done", []), name]


async def _st_task(request: Request):
    # the task runs after the response is sent; a later GET /tasks sees it
    return JSONResponse({"queued": request.path_params["name"]},
                        background=BackgroundTask(_record, request.app.state, request.path_params["name"]))


async def _st_tasks(request: Request):
    return JSONResponse(getattr(request.app.state, "done", []))


starlette_app = Starlette(routes=[
    Route("/who", _st_who),
    Route("/items/{item_id:int}", _st_item),
    Route("/json", _st_json, methods=["POST"]),
    Route("/form", _st_form, methods=["POST"]),
    Route("/stream", _st_stream),
    Route("/tasks/{name}", _st_task, methods=["POST"]),
    Route("/tasks", _st_tasks),
])


# --- FastAPI ---------------------------------------------------------------------------

fastapi_app = FastAPI()


class Order(BaseModel):
    item: str
    quantity: int
    price: float


@fastapi_app.get("/who")
async def fa_who(request: FastApiRequest):
    return {**_who(request.scope), "host": request.client.host if request.client else None,
            "url_scheme": request.url.scheme}


@fastapi_app.get("/users/{user_id}")
async def fa_user(user_id: int, verbose: bool = False, tag: list[str] = Query([])):
    return {"user_id": user_id, "verbose": verbose, "tags": tag}


@fastapi_app.post("/orders", status_code=201)
async def fa_order(order: Order):
    return {**order.model_dump(), "total": order.quantity * order.price}


@fastapi_app.post("/form")
async def fa_form(name: str = Form(), age: int = Form()):
    return {"name": name, "age": age}


@fastapi_app.post("/upload")
async def fa_upload(file: UploadFile, note: str = Form("")):
    data = await file.read()
    return {"filename": file.filename, "content_type": file.content_type, "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "note": note}


@fastapi_app.get("/stream")
async def fa_stream(n: int = 5):
    return StreamingResponse(_lines(n), media_type="text/plain")


@fastapi_app.post("/tasks/{name}")
async def fa_task(name: str, request: FastApiRequest, tasks: BackgroundTasks):
    tasks.add_task(_record, request.app.state, name)
    return {"queued": name}


@fastapi_app.get("/tasks")
async def fa_tasks(request: FastApiRequest):
    return getattr(request.app.state, "done", [])


@fastapi_app.get("/ping")
async def fa_ping():
    return {"pong": True}


# --- raw ASGI: 100 MB to a slow reader -------------------------------------------------

HUNDRED_CHUNK = 1 << 20
HUNDRED_CHUNKS = 100


async def hundred_mb(scope, receive, send):
    """100 MB in 1 MiB pieces with a Content-Length; after each send()
    returns, the count goes into the file named by PREFORK_TEST_PROGRESS."""
    progress = os.environ.get("PREFORK_TEST_PROGRESS")
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/octet-stream"),
                            (b"content-length", b"%d" % (HUNDRED_CHUNK * HUNDRED_CHUNKS))]})
    for i in range(HUNDRED_CHUNKS):
        # a fresh buffer each time, as an app reading a file would have
        await send({"type": "http.response.body", "body": bytes([65 + i % 26]) * HUNDRED_CHUNK,
                    "more_body": i + 1 < HUNDRED_CHUNKS})
        if progress:
            with open(progress + ".tmp", "w") as f:
                f.write(str(i + 1))
            os.replace(progress + ".tmp", progress)
