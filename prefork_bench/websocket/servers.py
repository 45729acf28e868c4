"""The three servers' command lines, the publisher, and the sysctls a large
run may need (set only when asked, put back at the end)."""

from __future__ import annotations

import argparse
import json
import resource
import socket
import sys
import time
from pathlib import Path
from typing import Protocol

from ..net import HOST, Launch
from ..tools import BenchError, REPO_ROOT, repo_env
from .frames import CLOSE, PING, PONG, TEXT, client_frame, close_frame, handshake, handshake_status, parse_frame

SERVERS = ("prefork", "uvicorn", "websockets")
BACKLOG = 4096
CROSSES_WORKERS = {
    "prefork": "through the bus between its workers (the master relays each publish to every worker)",
    "uvicorn": "no: a publish reaches the subscribers of the worker that got it",
    "websockets": "no: a publish reaches the subscribers of the worker that got it",
    "target": "as the server already running does it",
}


class Launcher(Protocol):
    def __call__(self, workdir: Path, port: int, args: argparse.Namespace) -> Launch: ...


def prefork(workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    # every worker may get them all (accepts are not shared evenly), within the fd limit
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    connections = args.clients + 1000 if hard == resource.RLIM_INFINITY else min(args.clients + 1000, hard - 200)
    config = workdir / "prefork.toml"
    config.write_text(
        f'[server]\nworkers = {args.workers}\nbackend = "epoll"\nworker_connections = {connections}\n'
        f'[[listen]]\naddress = "{HOST}:{port}"\nbacklog = {BACKLOG}\n'
        '[[route]]\npath = "/ws/"\nhandler = "pubsub"\n'
        '[[route]]\npath = "/publish/"\nhandler = "publish"\n'
        '[[route]]\npath = "/plaintext"\nhandler = "plaintext"\n'
        f"[log]\nerror_log = {json.dumps(str(workdir / 'error.log'))}\n")
    return Launch([sys.executable, "-m", "prefork.cli", "-c", str(config)], repo_env(), REPO_ROOT, port)


def uvicorn(workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([sys.executable, "-m", "uvicorn", "--factory", "prefork_bench.websocket.apps:make_app",
                   "--host", HOST, "--port", str(port), "--workers", str(args.workers), "--loop", "uvloop",
                   "--http", "httptools", "--ws", "websockets", "--ws-per-message-deflate", "false",
                   "--backlog", str(BACKLOG), "--no-access-log", "--log-level", "warning"],
                  repo_env(), REPO_ROOT, port)


def websockets(workdir: Path, port: int, args: argparse.Namespace) -> Launch:
    return Launch([sys.executable, "-m", "prefork_bench.websocket.apps", "--host", HOST, "--port", str(port),
                   "--workers", str(args.workers)], repo_env(), REPO_ROOT, port)


LAUNCHERS: dict[str, Launcher] = {"prefork": prefork, "uvicorn": uvicorn, "websockets": websockets}


# --- publishing ------------------------------------------------------------------


class Publisher:
    """Publishes the bench's messages: as a WebSocket client of the channel
    (``ws``: its own copies are read and dropped, pings answered) or with
    ``POST /publish/<channel>`` on one keep-alive connection (``post``)."""

    def __init__(self, host: str, port: int, channel: str, how: str, timeout: float = 10.0):
        self.how = how
        self.host = host
        self.channel = channel
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.buf = b""
        if how == "ws":
            self.sock.sendall(handshake(host, f"/ws/{channel}"))
            head = self._head()
            if handshake_status(head) != 101:
                raise BenchError(f"the publisher's handshake was refused: {head[:80]!r}")
            self.sock.setblocking(False)

    def _head(self) -> bytes:
        deadline = time.monotonic() + 10
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk or time.monotonic() > deadline:
                raise BenchError("the server closed the publisher's connection")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        return head

    def publish(self, payload: bytes) -> None:
        if self.how == "ws":
            self.sock.sendall(client_frame(TEXT, payload))
            return
        self.sock.sendall(b"POST /publish/%s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n"
                          % (self.channel.encode(), self.host.encode(), len(payload)) + payload)
        head = self._head()
        status = handshake_status(head)
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(self.buf) < length:
            self.buf += self.sock.recv(65536)
        self.buf = self.buf[length:]
        if status not in (200, 204):
            raise BenchError(f"POST /publish/{self.channel}: status {status}")

    def pump(self) -> None:
        """Read what came to the publishing WebSocket (its own copies), answer pings."""
        if self.how != "ws":
            return
        while True:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                raise BenchError("the server closed the publisher's WebSocket")
            self.buf += chunk
        at = 0
        while (frame := parse_frame(self.buf, at)) is not None:
            opcode, payload, at = frame
            if opcode == PING:
                self.sock.sendall(client_frame(PONG, payload))
            elif opcode == CLOSE:
                raise BenchError("the server closed the publisher's WebSocket")
        self.buf = self.buf[at:]

    def close(self) -> None:
        if self.how == "ws":
            try:
                self.sock.send(close_frame())
            except OSError:
                pass
        self.sock.close()


# --- sysctls ---------------------------------------------------------------------

# what a large run wants (see prefork-server --check-limits): value, and whether
# the current one is already enough
TUNING = {
    "net/ipv4/ip_local_port_range": "1024\t65535",
    "net/core/somaxconn": "65535",
    "net/ipv4/tcp_max_syn_backlog": "65535",
}


class Sysctls:
    """Sets TUNING's sysctls (only those that fall short) and puts the old
    values back on ``restore()``; ``root`` is / (a fake tree in tests)."""

    def __init__(self, root: Path = Path("/")):
        self.root = root
        self.saved: dict[str, str] = {}

    def _path(self, key: str) -> Path:
        return self.root / "proc" / "sys" / key

    @staticmethod
    def enough(key: str, have: str, want: str) -> bool:
        h, w = [int(x) for x in have.split()], [int(x) for x in want.split()]
        if key.endswith("ip_local_port_range"):
            return h[0] <= w[0] and h[1] >= w[1]
        return h[0] >= w[0]

    def apply(self) -> list[str]:
        """The changes made, "key: old -> new"."""
        done = []
        for key, want in TUNING.items():
            path = self._path(key)
            have = path.read_text().strip()
            if self.enough(key, have, want):
                continue
            path.write_text(want + "\n")
            self.saved[key] = have
            done.append(f"{key.replace('/', '.')}: {' '.join(have.split())} -> {' '.join(want.split())}")
        return done

    def restore(self) -> None:
        for key, old in self.saved.items():
            self._path(key).write_text(old + "\n")
        self.saved.clear()
