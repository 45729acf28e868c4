"""The ASGI websocket scope over real sockets (uvloop and asyncio):
FastAPI and Starlette WebSocket endpoints unchanged, driven by the
websockets client; the denial response, close before accept, subprotocols,
headers and an app failing after the accept; the client's close code and
reason in websocket.disconnect; permessage-deflate on the ASGI path."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from conftest import http_get, wait_until

ROUTES = """
[[route]]
path = "/fa/"
asgi = "tests.websocket_apps:fastapi_app"
root_path = ""

[[route]]
path = "/st/"
asgi = "tests.websocket_apps:starlette_app"

[[route]]
path = "/raw/"
asgi = "tests.websocket_apps:raw_app"
lifespan = "off"

[[route]]
path = "/rec/"
asgi = "tests.websocket_apps:recorder_app"
lifespan = "off"
"""


@pytest.fixture(params=["uvloop", "asyncio"])
def backend(request):
    """ASGI apps run on the asyncio backends only (this overrides conftest's)."""
    return request.param


@pytest.fixture
def srv(start_server):
    return start_server(names=("http",), extra=ROUTES)


def url(srv, path: str) -> str:
    return f"ws://127.0.0.1:{srv.port}{path}"


def test_fastapi_websocket_endpoint(srv):
    with connect(url(srv, "/fa/ws/lobby?q=1"), open_timeout=5) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == '{"room":"lobby","text":"hello","query":"1"}'
        ws.send("again")
        assert '"again"' in ws.recv(timeout=5)
    assert http_get(srv.port, "/fa/plain")[0] == 200


def test_starlette_echo_with_subprotocol(srv):
    with connect(url(srv, "/st/echo"), open_timeout=5, subprotocols=["chat"]) as ws:
        assert ws.subprotocol == "chat"
        for size in (0, 125, 126, 65536):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            ws.send(payload)
            assert ws.recv(timeout=5) == payload[::-1]


def test_starlette_close_with_code_and_reason(srv):
    with connect(url(srv, "/st/close"), open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4001, "bye now")


def test_denial_response_and_close_before_accept(srv):
    with pytest.raises(InvalidStatus) as denied:
        connect(url(srv, "/st/deny"), open_timeout=5)
    assert denied.value.response.status_code == 401 and denied.value.response.body == b"go away"
    with pytest.raises(InvalidStatus) as refused:
        connect(url(srv, "/st/refuse"), open_timeout=5)
    assert refused.value.response.status_code == 403


def test_raw_scope_headers_receive_and_disconnect(srv):
    with connect(url(srv, "/raw/headers?a=b"), open_timeout=5) as ws:
        assert ws.response.headers["x-hello"] == "world"
        assert ws.recv(timeout=5) == "ws /raw/headers a=b"
        ws.send("ping")
        assert ws.recv(timeout=5) == "websocket.receive:ping"


def test_app_failing_after_accept_closes_1011(srv):
    with connect(url(srv, "/raw/fail"), open_timeout=5) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
        assert closed.value.rcvd.code == 1011
    assert "deliberate" in srv.log()


def test_disconnect_carries_the_clients_code_and_reason(srv):
    with connect(url(srv, "/rec/ws"), open_timeout=5) as ws:
        ws.send("x")
        assert ws.recv(timeout=5) == "x"
        ws.close(4321, "done here, é")
    wait_until(lambda: "4321 done here, é" in http_get(srv.port, "/rec/seen")[2].decode(), timeout=10,
               what="the disconnect recorded")


def test_fastapi_and_starlette_with_compression(start_server):
    srv = start_server(names=("http",), extra=ROUTES + '\n[websocket]\ncompression = "deflate"\n')
    with connect(url(srv, "/fa/ws/lobby"), open_timeout=5) as ws:
        assert "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        ws.send("hello " * 200)
        assert ws.recv(timeout=5) == '{"room":"lobby","text":"%s","query":null}' % ("hello " * 200)
    with connect(url(srv, "/st/echo"), open_timeout=5) as ws:
        assert ws.protocol.extensions
        for payload in (b"", b"ab" * 40000, bytes(range(256)) * 300):
            ws.send(payload)
            assert ws.recv(timeout=5) == payload[::-1]
    with connect(url(srv, "/st/echo"), open_timeout=5, compression=None) as ws:  # a client without it
        assert not ws.protocol.extensions
        ws.send(b"plain")
        assert ws.recv(timeout=5) == b"nialp"
