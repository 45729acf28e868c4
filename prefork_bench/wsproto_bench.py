"""WebSocket framing compared: CPU per message and bytes per idle connection.

The candidates for ``prefork/protocols/websocket.py`` (issue 17, point 1):

* ``wsproto``: the sans-IO ``wsproto.Connection`` (pure Python masking);
* ``websockets``: the sans-IO core of the ``websockets`` library
  (``websockets.protocol.Protocol``, the frames after
  ``ServerProtocol``'s handshake; C-accelerated masking);
* ``own``: our own framing over ``websockets.speedups.apply_mask`` (the C
  masking): the header parsed with ``int.from_bytes``, frames built by hand;
  ``prefork``: the server's ``WebSocketProtocol`` itself, once it exists.

Each case feeds masked client frames (a small text, a 1 KiB binary) to one
server-side connection, takes the messages out and builds the echo frame:
microseconds per message, best of ``--rounds``. Memory: ``tracemalloc`` over
``--idle`` connection objects in the OPEN state with nothing in flight.

    prefork-bench wsframing [--messages 100000] [--rounds 5] [--idle 2000]
    python -m prefork_bench.wsproto_bench ...
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import time
import tracemalloc

from websockets.frames import Opcode
from websockets.protocol import SERVER, Protocol as WebsocketsProtocol
from websockets.speedups import apply_mask
from wsproto import ConnectionType
from wsproto.connection import Connection as WsprotoConnection
from wsproto.events import BytesMessage, TextMessage

SMALL = b"hello, world"          # a small text message
KIB = os.urandom(1024)           # a 1 KiB binary message


def client_frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """A masked client frame (RFC 6455 5.2)."""
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + mask + apply_mask(payload, mask)


# --- the candidates: each a (make, echo) pair ----------------------------------------
# make() -> an OPEN server-side connection; echo(conn, data) -> the bytes to send back


def _wsproto_make():
    return WsprotoConnection(ConnectionType.SERVER)


def _wsproto_echo(conn, data: bytes) -> bytes:
    conn.receive_data(data)
    out = b""
    for event in conn.events():
        if type(event) is TextMessage:
            out += conn.send(TextMessage(event.data))
        elif type(event) is BytesMessage:
            out += conn.send(BytesMessage(event.data))
    return out


def _websockets_make():
    return WebsocketsProtocol(SERVER)  # OPEN: past the handshake (ServerProtocol's part)


def _websockets_echo(conn, data: bytes) -> bytes:
    conn.receive_data(data)
    for frame in conn.events_received():
        if frame.opcode is Opcode.TEXT:
            conn.send_text(frame.data)
        else:
            conn.send_binary(frame.data)
    return b"".join(conn.data_to_send())


class _Own:
    """The smallest own framing: one slot for a partial frame, none when idle."""

    __slots__ = ("buf",)

    def __init__(self):
        self.buf = None


def _own_make():
    return _Own()


def _own_echo(conn: _Own, data: bytes) -> bytes:
    if conn.buf:
        data = conn.buf + data
        conn.buf = None
    out = []
    pos, end = 0, len(data)
    while end - pos >= 6:
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        start = pos + 6
        if n == 126:
            n = int.from_bytes(data[pos + 2:pos + 4], "big")
            start = pos + 8
        elif n == 127:
            n = int.from_bytes(data[pos + 2:pos + 10], "big")
            start = pos + 14
        if end < start + n:
            break
        payload = apply_mask(data[start:start + n], data[start - 4:start])
        opcode = b0 & 0x0F
        if opcode == 1:
            payload.decode()  # the UTF-8 check of a text message
        if n < 126:
            out.append(bytes((0x80 | opcode, n)) + payload)
        elif n < 65536:
            out.append(bytes((0x80 | opcode, 126)) + n.to_bytes(2, "big") + payload)
        else:
            out.append(bytes((0x80 | opcode, 127)) + n.to_bytes(8, "big") + payload)
        pos = start + n
    if pos < end:
        conn.buf = data[pos:]
    return b"".join(out)


class _Echo:
    """The handler of the ``prefork`` case: every message back."""

    def opened(self, conn) -> None:
        pass

    def message(self, conn, payload: bytes, binary: bool) -> None:
        conn.send(payload, binary)

    def closed(self, conn, code: int, reason: str) -> None:
        pass


@functools.lru_cache(maxsize=1)
def _prefork_ctx():
    """One context for every connection, as a worker has per route."""
    from prefork.config import WebSocketConfig
    from prefork.protocols.websocket import WebSocketContext

    return WebSocketContext(WebSocketConfig(ping_interval=0), _Echo())


def _prefork_make():
    from prefork.protocols.websocket import WebSocketProtocol

    return WebSocketProtocol(_prefork_ctx())


def _prefork_echo(conn, data: bytes) -> bytes:
    return conn.data_received(data)


CANDIDATES = {
    "wsproto": (_wsproto_make, _wsproto_echo),
    "websockets": (_websockets_make, _websockets_echo),
    "own": (_own_make, _own_echo),
    "prefork": (_prefork_make, _prefork_echo),
}


def available() -> list[str]:
    import importlib.util

    names = list(CANDIDATES)
    if importlib.util.find_spec("prefork.protocols.websocket") is None:
        names.remove("prefork")
    return names


def cpu_per_message(name: str, payload: bytes, opcode: int, messages: int) -> float:
    """Seconds per message: parse a masked client frame, build the echo frame."""
    make, echo = CANDIDATES[name]
    conn = make()
    frame = client_frame(opcode, payload)
    out = echo(conn, frame)  # warm up (and check it echoes)
    assert out.endswith(payload), (name, out[:20])
    gc.disable()
    try:
        start = time.process_time()
        for _ in range(messages):
            echo(conn, frame)
        elapsed = time.process_time() - start
    finally:
        gc.enable()
    return elapsed / messages


def bytes_per_idle(name: str, count: int) -> float:
    """tracemalloc's bytes per OPEN connection object with nothing in flight
    (after one message in and out, so lazily made state is counted)."""
    make, echo = CANDIDATES[name]
    frame = client_frame(1, SMALL)
    make()  # imports and per-process state, not counted
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        conns = []
        for _ in range(count):
            conn = make()
            echo(conn, frame)
            conns.append(conn)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    return (grown - 8 * count) / count  # less the list's own pointer per connection


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="prefork-bench wsframing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--idle", type=int, default=2000, help="connections held for the memory column")
    parser.add_argument("--case", action="append", choices=list(CANDIDATES), help="default: all available")
    args = parser.parse_args(argv)
    names = args.case or available()
    print(f"{'candidate':12s} {'small text us/msg':>18s} {'1 KiB binary us/msg':>20s} {'idle bytes/conn':>16s}")
    for name in names:
        small = min(cpu_per_message(name, SMALL, 1, args.messages) for _ in range(args.rounds))
        kib = min(cpu_per_message(name, KIB, 2, args.messages) for _ in range(args.rounds))
        idle = bytes_per_idle(name, args.idle)
        print(f"{name:12s} {small * 1e6:18.2f} {kib * 1e6:20.2f} {idle:16.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
