"""Memory per idle WebSocket connection on the epoll backend (issue 17, point 5).

Starts one prefork worker (epoll) with a ``pubsub`` route, opens ``--count``
WebSocket connections to ``/ws/idle`` from this process (a client process
apart from the server's), lets the worker's memory settle, and reports the
RSS and PSS growth of the worker per connection (after a warm-up of
``--warm`` connections opened and closed, so the first-use allocations are
not counted). Then one POST /publish/idle checks that every connection is
alive and subscribed: each must receive the message. ``--broadcasts N``
more publishes measure the worker's CPU per delivery (its CPU time over
the messages times the connections, every message read by every client).

``--compression deflate`` sets ``[websocket] compression = "deflate"`` and
has every client offer permessage-deflate (as the websockets client and the
browsers do): what compression costs an idle connection, and a broadcast
(the messages are JSON-like text, about 1 KiB, that deflate shrinks).

    prefork-bench wsidle [--count 10000] [--ping-interval 20] [--compression off --compression deflate]
                         [--broadcasts 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import selectors
import random
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

from .net import free_port, http_ok
from .procs import descendants, proc_cpu_ticks, proc_memory, raise_nofile
from .tools import REPO_ROOT, repo_env

HANDSHAKE = ("GET /ws/idle HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef").decode()
             + "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
OFFER = b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
SETTLE_TIMEOUT = 20.0
TICK = 1 / 100  # what proc_cpu_ticks counts (USER_HZ)


def message(seed: int = 0) -> bytes:
    """About 1 KiB of JSON-like text (price updates): what a push server sends."""
    rnd = random.Random(seed)
    return json.dumps([{"symbol": f"SYM{rnd.randrange(1000):03d}", "price": round(rnd.uniform(10, 500), 2),
                        "volume": rnd.randrange(10**6), "time": 1700000000 + i} for i in range(14)]).encode()


def config(port: int, count: int, ping_interval: float, error_log: Path, compression: str = "off") -> str:
    return (f'[server]\nworkers = 1\nbackend = "epoll"\nworker_connections = {count + 1000}\nthreads = 0\n'
            f'[[listen]]\naddress = "127.0.0.1:{port}"\nbacklog = 4096\n'
            '[[route]]\npath = "/ws/"\nhandler = "pubsub"\n'
            '[[route]]\npath = "/publish/"\nhandler = "publish"\n'
            '[[route]]\npath = "/plaintext"\nhandler = "plaintext"\n'
            f'[websocket]\nping_interval = {ping_interval}\ncompression = "{compression}"\n'
            f'[log]\nerror_log = "{error_log}"\n')


def open_websockets(port: int, n: int, batch: int = 500, offer: bool = False) -> list[socket.socket]:
    """``n`` WebSocket connections, ``batch`` handshakes in flight at a time
    (``offer``: offering permessage-deflate, which the server must accept)."""
    handshake = HANDSHAKE[:-2] + OFFER if offer else HANDSHAKE
    done: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    started = 0
    deadline = time.monotonic() + 60 + n / 500
    while len(done) < n:
        while started < n and len(pending) < batch:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(handshake)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
            started += 1
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(done)} of {n} handshakes done")
        for key, _ in sel.select(1.0):
            sock = key.fileobj
            data = pending[sock] + sock.recv(4096)
            if b"\r\n\r\n" not in data:
                if not data:
                    raise RuntimeError("the server closed a connection during its handshake")
                pending[sock] = data
                continue
            if not data.startswith(b"HTTP/1.1 101"):
                raise RuntimeError(f"handshake refused: {data[:60]!r}")
            if offer and b"permessage-deflate" not in data:
                raise RuntimeError("the server declined permessage-deflate")
            sel.unregister(sock)
            del pending[sock]
            done.append(sock)
    sel.close()
    return done


def settled_memory(pid: int, quiet: float = 1.0) -> tuple[int, int]:
    """(RSS, PSS) once two readings ``quiet`` seconds apart agree within 64 KiB."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    last = proc_memory(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = proc_memory(pid)
        if abs(now[0] - last[0]) <= 65536:
            return now
        last = now
    return last


def read_message(sock: socket.socket) -> tuple[bytes, int]:
    """One server message (inflated if compressed) and its frame's size on the wire."""
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    head = exactly(2)
    n, size = head[1] & 0x7F, 2
    if n == 126:
        n, size = int.from_bytes(exactly(2), "big"), 4
    payload = exactly(n)
    if head[0] & 0x40:  # RSV1: permessage-deflate, without context takeover
        payload = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
    return payload, size + n


def all_receive(socks: list[socket.socket], port: int, payload: bytes,
                post: socket.socket | None = None) -> tuple[int, int]:
    """POST a message to the channel: how many connections got it, and its frame's size."""
    own = post is None
    if own:
        post = socket.create_connection(("127.0.0.1", port), timeout=10)
    post.sendall(b"POST /publish/idle HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
    if not post.recv(4096).startswith(b"HTTP/1.1 204"):
        raise RuntimeError("the publish failed")
    if own:
        post.close()
    got = size = 0
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(10)
        try:
            data, size = read_message(sock)
        except (ConnectionError, OSError):
            continue
        got += data == payload
    return got, size


def broadcast_cpu(socks: list[socket.socket], port: int, worker: int, rounds: int) -> float:
    """The worker's CPU µs per delivery over ``rounds`` publishes, each read by every client."""
    post = socket.create_connection(("127.0.0.1", port), timeout=10)
    before = proc_cpu_ticks(worker) or 0
    for i in range(rounds):
        got, _ = all_receive(socks, port, message(i + 1), post)
        if got != len(socks):
            raise RuntimeError(f"broadcast {i}: {got} of {len(socks)} received")
    used = ((proc_cpu_ticks(worker) or 0) - before) * TICK
    post.close()
    return used / (rounds * len(socks)) * 1e6


def measure(count: int, warm: int, ping_interval: float, compression: str = "off", broadcasts: int = 0) -> dict:
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="wsidle-"))
    port = free_port()
    path = workdir / "prefork.toml"
    path.write_text(config(port, count, ping_interval, workdir / "error.log", compression))
    proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=REPO_ROOT, env=repo_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while not http_ok(port, 1.0):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the server did not start (see {workdir / 'error.log'})")
            time.sleep(0.05)
        workers = descendants(proc.pid)[1:]  # (the first is the master)
        if len(workers) != 1:
            raise RuntimeError(f"expected one worker, found {workers}")
        worker = workers[0]
        offer = compression != "off"
        for sock in open_websockets(port, warm, offer=offer):
            sock.close()
        time.sleep(0.5)
        before = settled_memory(worker)
        started = time.monotonic()
        socks = open_websockets(port, count, offer=offer)
        opened = time.monotonic() - started
        after = settled_memory(worker)
        received, frame_bytes = all_receive(socks, port, message())
        cpu = broadcast_cpu(socks, port, worker, broadcasts) if broadcasts else None
        later = settled_memory(worker)
        for sock in socks:
            sock.close()
        return {"connections": count, "ping_interval": ping_interval, "compression": compression,
                "open_seconds": round(opened, 2),
                "rss_bytes_per_connection": round((after[0] - before[0]) / count),
                "pss_bytes_per_connection": round((after[1] - before[1]) / count),
                "rss_bytes_per_connection_after_broadcasts": round((later[0] - before[0]) / count),
                "worker_rss_mib": round(after[0] / 2**20, 1), "received": received,
                "message_bytes": len(message()), "frame_bytes": frame_bytes, "broadcasts": broadcasts,
                "cpu_us_per_delivery": None if cpu is None else round(cpu, 2)}
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prefork-bench wsidle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--warm", type=int, default=1000, help="connections opened and closed before the baseline")
    parser.add_argument("--ping-interval", type=float, action="append",
                        help="[websocket] ping_interval (repeatable; default: 0 and 20)")
    parser.add_argument("--compression", choices=("off", "deflate"), action="append",
                        help="[websocket] compression, offered by every client when deflate (repeatable; default: off)")
    parser.add_argument("--broadcasts", type=int, default=0,
                        help="publishes to time for the worker's CPU per delivery (default: 0, none)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    results = [measure(args.count, args.warm, ping, compression, args.broadcasts)
               for compression in (args.compression or ["off"]) for ping in (args.ping_interval or [0.0, 20.0])]
    print(f"{'connections':>11s} {'ping_interval':>13s} {'compression':>11s} {'RSS B/conn':>10s} {'PSS B/conn':>10s} "
          f"{'after bc':>8s} {'open s':>7s} {'received':>8s} {'frame B':>7s} {'CPU us/delivery':>15s}")
    for r in results:
        cpu = "-" if r["cpu_us_per_delivery"] is None else f"{r['cpu_us_per_delivery']:.2f}"
        print(f"{r['connections']:11d} {r['ping_interval']:13g} {r['compression']:>11s} "
              f"{r['rss_bytes_per_connection']:10d} {r['pss_bytes_per_connection']:10d} "
              f"{r['rss_bytes_per_connection_after_broadcasts']:8d} {r['open_seconds']:7.2f} {r['received']:8d} "
              f"{r['frame_bytes']:7d} {cpu:>15s}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["received"] == r["connections"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
