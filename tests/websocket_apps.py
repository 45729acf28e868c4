"""WebSocket ASGI apps used as test fixtures ("tests.websocket_apps:..."):
FastAPI and Starlette WebSocket endpoints as their users write them, and a
raw ASGI app for the parts of the spec the frameworks hide (the denial
response, close before accept, subprotocols and headers)."""

from __future__ import annotations

from fastapi import FastAPI, WebSocket as FastAPIWebSocket, WebSocketDisconnect
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

# --- FastAPI ----------------------------------------------------------------------------

fastapi_app = FastAPI()


@fastapi_app.websocket("/ws/{room}")
async def fastapi_room(websocket: FastAPIWebSocket, room: str):
    await websocket.accept()
    try:
        while True:
            text = await websocket.receive_text()
            await websocket.send_json({"room": room, "text": text, "query": websocket.query_params.get("q")})
    except WebSocketDisconnect:
        return  # the client went: what FastAPI users write


@fastapi_app.get("/plain")
async def fastapi_plain():
    return {"ok": True}


# --- Starlette ----------------------------------------------------------------------------


async def starlette_echo(websocket: WebSocket):
    await websocket.accept(subprotocol="chat" if "chat" in websocket.scope["subprotocols"] else None)
    async for message in websocket.iter_bytes():
        await websocket.send_bytes(message[::-1])


async def starlette_close(websocket: WebSocket):
    await websocket.accept()
    await websocket.close(code=4001, reason="bye now")


async def starlette_deny(websocket: WebSocket):
    await websocket.send_denial_response(PlainTextResponse("go away", status_code=401))


async def starlette_refuse(websocket: WebSocket):
    await websocket.close()  # before accepting: 403


starlette_app = Starlette(routes=[WebSocketRoute("/echo", starlette_echo), WebSocketRoute("/close", starlette_close),
                                  WebSocketRoute("/deny", starlette_deny), WebSocketRoute("/refuse", starlette_refuse)])


# --- raw ASGI -------------------------------------------------------------------------------


async def raw_app(scope, receive, send):
    """/headers: accept with a header and report the scope; /fail: raise after accepting."""
    assert scope["type"] == "websocket"
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "headers": [(b"x-hello", b"world")]})
    if scope["path"].endswith("/fail"):
        raise RuntimeError("deliberate")
    await send({"type": "websocket.send", "text": f"{scope['scheme']} {scope['path']} {scope['query_string'].decode()}"})
    event = await receive()
    await send({"type": "websocket.send", "text": event["type"] + ":" + event.get("text", "")})
    event = await receive()
    assert event["type"] == "websocket.disconnect"


class DisconnectRecorder:
    """/ws: accept, echo until the disconnect, and keep its code and reason;
    GET (http): the disconnects kept so far, one "code reason" a line."""

    def __init__(self):
        self.seen: list[str] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            body = "".join(f"{line}\n" for line in self.seen).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": body})
            return
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            event = await receive()
            if event["type"] == "websocket.disconnect":
                self.seen.append(f"{event['code']} {event['reason']}")
                return
            await send({"type": "websocket.send", "text": event.get("text") or ""})


recorder_app = DisconnectRecorder()
