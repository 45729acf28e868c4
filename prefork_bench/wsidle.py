"""Memory per idle WebSocket connection on the epoll backend (issue 17, point 5).

Starts one prefork worker (epoll) with a ``pubsub`` route, opens ``--count``
WebSocket connections to ``/ws/idle`` from this process (a client process
apart from the server's), lets the worker's memory settle, and reports the
RSS and PSS growth of the worker per connection (after a warm-up of
``--warm`` connections opened and closed, so the first-use allocations are
not counted). Then one POST /publish/idle checks that every connection is
alive and subscribed: each must receive the message.

    prefork-bench wsidle [--count 10000] [--ping-interval 20] [--json FILE]
"""

from __future__ import annotations

import argparse
import base64
import json
import selectors
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .net import free_port, http_ok
from .procs import descendants, proc_memory, raise_nofile
from .tools import REPO_ROOT, repo_env

HANDSHAKE = ("GET /ws/idle HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: " + base64.b64encode(b"0123456789abcdef").decode()
             + "\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
SETTLE_TIMEOUT = 20.0


def config(port: int, count: int, ping_interval: float, error_log: Path) -> str:
    return (f'[server]\nworkers = 1\nbackend = "epoll"\nworker_connections = {count + 1000}\nthreads = 0\n'
            f'[[listen]]\naddress = "127.0.0.1:{port}"\nbacklog = 4096\n'
            '[[route]]\npath = "/ws/"\nhandler = "pubsub"\n'
            '[[route]]\npath = "/publish/"\nhandler = "publish"\n'
            '[[route]]\npath = "/plaintext"\nhandler = "plaintext"\n'
            f'[websocket]\nping_interval = {ping_interval}\n'
            f'[log]\nerror_log = "{error_log}"\n')


def open_websockets(port: int, n: int, batch: int = 500) -> list[socket.socket]:
    """``n`` WebSocket connections, ``batch`` handshakes in flight at a time."""
    done: list[socket.socket] = []
    sel = selectors.DefaultSelector()
    pending: dict[socket.socket, bytes] = {}
    started = 0
    deadline = time.monotonic() + 60 + n / 500
    while len(done) < n:
        while started < n and len(pending) < batch:
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(HANDSHAKE)
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


def all_receive(socks: list[socket.socket], port: int, payload: bytes = b"ping-all") -> int:
    """POST a message to the channel; how many connections got it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as post:
        post.sendall(b"POST /publish/idle HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload)
        post.recv(4096)
    frame = bytes((0x81, len(payload))) + payload
    got = 0
    for sock in socks:
        sock.setblocking(True)
        sock.settimeout(10)
        data = b""
        while len(data) < len(frame):
            chunk = sock.recv(len(frame) - len(data))
            if not chunk:
                break
            data += chunk
        got += data == frame
    return got


def measure(count: int, warm: int, ping_interval: float) -> dict:
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="wsidle-"))
    port = free_port()
    path = workdir / "prefork.toml"
    path.write_text(config(port, count, ping_interval, workdir / "error.log"))
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
        for sock in open_websockets(port, warm):
            sock.close()
        time.sleep(0.5)
        before = settled_memory(worker)
        started = time.monotonic()
        socks = open_websockets(port, count)
        opened = time.monotonic() - started
        after = settled_memory(worker)
        received = all_receive(socks, port)
        for sock in socks:
            sock.close()
        return {"connections": count, "ping_interval": ping_interval, "open_seconds": round(opened, 2),
                "rss_bytes_per_connection": round((after[0] - before[0]) / count),
                "pss_bytes_per_connection": round((after[1] - before[1]) / count),
                "worker_rss_mib": round(after[0] / 2**20, 1), "received": received}
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
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)
    results = [measure(args.count, args.warm, ping) for ping in (args.ping_interval or [0.0, 20.0])]
    print(f"{'connections':>11s} {'ping_interval':>13s} {'RSS B/conn':>10s} {'PSS B/conn':>10s} "
          f"{'open s':>7s} {'received':>8s}")
    for r in results:
        print(f"{r['connections']:11d} {r['ping_interval']:13g} {r['rss_bytes_per_connection']:10d} "
              f"{r['pss_bytes_per_connection']:10d} {r['open_seconds']:7.2f} {r['received']:8d}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["received"] == r["connections"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
