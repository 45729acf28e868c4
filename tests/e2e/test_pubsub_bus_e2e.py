"""The pubsub WebSocket routes over the real buses: clients spread over the
workers of one server (the master's relay), and over two servers on one
Redis; every client gets each message once, a publisher's messages in order.
Clients: the ``websockets`` library."""
from __future__ import annotations

import uuid
from collections import Counter
from contextlib import ExitStack

import pytest
from websockets.sync.client import connect

from bus_helpers import RedisServer, need_redis
from conftest import Server, free_port, make_config

ROUTES = """
[[route]]
path = "/ws/"
handler = "pubsub"

[[route]]
path = "/publish/"
handler = "publish"
"""


def _server(tmp_path, name: str, workers: int, backend: str, pubsub: str = "") -> Server:
    path = tmp_path / name
    path.mkdir()
    ports = {"http": free_port()}
    return Server(path, make_config(ports, f'workers = {workers}\nbackend = "{backend}"') + ROUTES + pubsub,
                  ports).start()


def _clients(stack: ExitStack, srv: Server, channel: str, n: int) -> list:
    return [stack.enter_context(connect(f"ws://127.0.0.1:{srv.port}/ws/{channel}", open_timeout=10,
                                        close_timeout=2, max_size=None)) for _ in range(n)]


def _post(srv: Server, channel: str, bodies: list[str]) -> None:
    """POST each body to /publish/<channel>, pipelined on one connection: one worker publishes them, in order."""
    sock = srv.connect(timeout=10)
    sock.sendall(b"".join(b"POST /publish/%s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                          % (channel.encode(), len(body.encode()), body.encode()) for body in bodies))
    answers = b""
    while answers.count(b"HTTP/1.1 ") < len(bodies):
        chunk = sock.recv(65536)
        assert chunk, answers
        answers += chunk
    sock.close()
    assert answers.count(b"HTTP/1.1 204") == len(bodies), answers


def _receive(ws, expected: int, skip: str = "sync-") -> list[str]:
    got = []
    while len(got) < expected:
        message = ws.recv(timeout=15)
        if not message.startswith(skip):
            got.append(message)
    return got


def _sync(servers: list[Server], clients: list, channel: str) -> None:
    """Publish sync-k until every client got one: every worker is on the bus (subscribed to Redis)."""
    for k in range(100):
        _post(servers[k % len(servers)], channel, [f"sync-{k}"])
        if all(_saw(ws, f"sync-{k}") for ws in clients):
            return
    raise TimeoutError("the clients never all got a sync message")


def _saw(ws, marker: str) -> bool:
    try:
        while ws.recv(timeout=0.5) != marker:
            pass
        return True
    except TimeoutError:
        return False


def _check(clients: list, batches: dict[str, list[str]], sentinel_from: Server, channel: str) -> None:
    """Each client got every message of every batch once, each batch in its order, then nothing more."""
    everything = [m for batch in batches.values() for m in batch]
    for ws in clients:
        got = _receive(ws, len(everything))
        assert Counter(got) == Counter(everything)
        for batch in batches.values():
            assert [m for m in got if m in set(batch)] == batch
    _post(sentinel_from, channel, ["sentinel"])
    for ws in clients:  # no late duplicate before it
        assert _receive(ws, 1) == ["sentinel"]


@pytest.mark.parametrize("backend", ["epoll", "uvloop"])
def test_websocket_clients_on_every_worker_get_each_message_once(tmp_path, backend):
    srv = _server(tmp_path, "a", 4, backend)
    try:
        srv.wait_workers(4)
        with ExitStack() as stack:
            clients = _clients(stack, srv, "news", 12)  # spread over the 4 workers by the kernel (one: 4 in 4^12)
            batches = {f"post{k}": [f"post{k}-{i}" for i in range(25)] for k in range(3)}
            for k in range(3):
                _post(srv, "news", batches[f"post{k}"])
            batches["ws"] = [f"ws-{i}" for i in range(10)]
            for message in batches["ws"]:
                clients[0].send(message)  # a client is a publisher too (its worker's hub)
            _check(clients, batches, srv, "news")
    finally:
        srv.stop()


def test_websocket_clients_of_two_servers_on_one_redis(tmp_path):
    need_redis()
    redis = RedisServer(tmp_path).start()
    pubsub = f'\n[pubsub]\nurl = "{redis.url}"\nprefix = "t{uuid.uuid4().hex[:8]}:"\n'
    a = b = None
    try:
        a = _server(tmp_path, "a", 2, "epoll", pubsub)
        b = _server(tmp_path, "b", 2, "uvloop", pubsub)
        a.wait_workers(2)
        b.wait_workers(2)
        with ExitStack() as stack:
            clients = _clients(stack, a, "room", 6) + _clients(stack, b, "room", 6)
            _sync([a, b], clients, "room")
            batches = {"a": [f"a-{i}" for i in range(30)], "b": [f"b-{i}" for i in range(30)]}
            _post(a, "room", batches["a"])
            _post(b, "room", batches["b"])
            _check(clients, batches, a, "room")
    finally:
        for srv in (a, b):
            if srv is not None:
                srv.stop()
        redis.stop()
