"""Slowloris clients for scenario d of ``bench/wsgi.py``: N connections that each
send a partial request head and then one more byte every few seconds, held by one
thread of the bench while wrk measures, bounded in time, all closed at the end."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from ..net import HOST

HEAD = b"GET / HTTP/1.1\r\nHost: bench\r\nX-Slow: "   # never finished
TRICKLE_SECONDS = 3.0        # each connection sends one byte this often
CONNECT_TIMEOUT = 5.0
TICK = 0.1                   # the thread wakes this often and serves a slice of the connections


@dataclass
class Held:
    """What the slow clients saw: how many connected, and how many were still
    open (the server had not closed them) when they were closed."""

    opened: int = 0
    failed: int = 0
    open_at_end: int = 0


def _trickle(socks: list[socket.socket], stop: threading.Event, deadline: float) -> None:
    per_tick = max(1, int(len(socks) * TICK / TRICKLE_SECONDS))
    index = 0
    while not stop.wait(TICK) and time.monotonic() < deadline:
        for _ in range(min(per_tick, len(socks))):
            sock = socks[index % len(socks)]
            index += 1
            if sock.fileno() < 0:
                continue
            try:
                sock.send(b"a")
            except (BlockingIOError, InterruptedError):
                pass            # the server reads nothing: its buffer is full
            except OSError:
                sock.close()    # the server closed it


def _still_open(sock: socket.socket) -> bool:
    if sock.fileno() < 0:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""  # data: an answer
    except (BlockingIOError, InterruptedError):
        return True
    except OSError:
        return False


@contextlib.contextmanager
def slowloris(port: int, count: int, limit: float) -> Iterator[Held]:
    """Open ``count`` slow connections to 127.0.0.1:port and trickle them until the
    block ends or ``limit`` seconds have passed; close every one."""
    held = Held()
    socks: list[socket.socket] = []
    stop = threading.Event()
    thread = None
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.settimeout(CONNECT_TIMEOUT)
                sock.connect((HOST, port))
                sock.setblocking(False)
                sock.send(HEAD)
            except OSError:
                sock.close()
                held.failed += 1
                continue
            socks.append(sock)
        held.opened = len(socks)
        if socks:
            thread = threading.Thread(target=_trickle, name="slowloris", daemon=True,
                                      args=(socks, stop, time.monotonic() + limit))
            thread.start()
        yield held
    finally:
        stop.set()
        if thread is not None:
            thread.join()
        held.open_at_end = sum(map(_still_open, socks))
        for sock in socks:
            sock.close()
