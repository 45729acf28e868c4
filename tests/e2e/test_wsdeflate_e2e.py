"""permessage-deflate over real sockets, on every backend: the websockets
client (which offers it by default) on echo and pubsub with ``[websocket]
compression = "deflate"`` and without it (the offer declined), raw sockets
for what a client library would not send: a deflate bomb (1009), RSV1 on a
control frame (1002), a fragmented compressed message."""

from __future__ import annotations

import os
import zlib

import pytest
from test_websocket_e2e import client, close_code, handshake, read_frames, start
from testkit import client_frame as masked
from websockets.extensions.permessage_deflate import PerMessageDeflate

DEFLATE = 'compression = "deflate"\nping_interval = 0'
OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
RSV1 = 0x40
TAIL = b"\x00\x00\xff\xff"


def deflate(*parts: bytes) -> list[bytes]:
    """A client's compressed message, in fragments."""
    z = zlib.compressobj(6, zlib.DEFLATED, -15)
    out = [z.compress(p) + z.flush(zlib.Z_SYNC_FLUSH) for p in parts]
    out[-1] = out[-1][:-4]
    return out


def inflate(payload: bytes) -> bytes:
    """A compressed message from the server (no context takeover: a new inflater each)."""
    return zlib.decompressobj(-15).decompress(payload + TAIL)


def raw_frames(sock, data: bytes, count: int):
    """(first byte, payload) of ``count`` server frames (read_frames drops the RSV bits)."""
    out = []
    while len(out) < count:
        n, pos = (data[1] & 0x7F, 2) if len(data) >= 2 else (0, 2)
        if n == 126:
            n, pos = (int.from_bytes(data[2:4], "big"), 4) if len(data) >= 4 else (0, 4)
        if len(data) < pos or len(data) < pos + n:
            chunk = sock.recv(65536)  # the socket's timeout bounds the wait
            assert chunk, out
            data += chunk
            continue
        out.append((data[0], data[pos:pos + n]))
        data = data[pos + n:]
    return out


def test_echo_and_pubsub_compressed_with_the_websockets_client(start_server):
    srv = start(start_server, DEFLATE)
    with client(srv, "/echo") as ws:
        assert ws.response.headers["Sec-WebSocket-Extensions"] == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12")
        assert isinstance(ws.protocol.extensions[0], PerMessageDeflate)
        for payload in (b"", b"x", b"abc" * 50_000, os.urandom(70_000), b"z" * (1 << 20)):
            ws.send(payload)
            assert ws.recv(timeout=5) == payload
        ws.send("é" * 1000)
        assert ws.recv(timeout=5) == "é" * 1000
        ws.send([b"frag" * 100, b"mented" * 100, b""])  # compressed fragments
        assert ws.recv(timeout=5) == b"frag" * 100 + b"mented" * 100
    with client(srv, "/ws/room") as a, client(srv, "/ws/room", compression=None) as plain:
        assert not plain.protocol.extensions and a.protocol.extensions
        a.send("news, " * 100)
        assert a.recv(timeout=5) == "news, " * 100 and plain.recv(timeout=5) == "news, " * 100
        plain.send(b"\x00" * 5000)
        assert a.recv(timeout=5) == b"\x00" * 5000 and plain.recv(timeout=5) == b"\x00" * 5000


def test_compression_off_declines_the_offer(start_server):
    srv = start(start_server)
    with client(srv, "/echo") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response.headers and not ws.protocol.extensions
        ws.send("hello " * 100)
        assert ws.recv(timeout=5) == "hello " * 100
    sock, data = handshake(srv, headers=OFFER)
    assert data.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in data.lower()
    sock.sendall(masked(1, deflate(b"hello")[0], rsv=RSV1))  # RSV1 without the extension
    assert close_code(read_frames(sock, data.partition(b"\r\n\r\n")[2])) == 1002


def test_raw_compressed_frames_and_fragments(start_server):
    srv = start(start_server, DEFLATE)
    sock, data = handshake(srv, headers="Sec-WebSocket-Extensions: x-unknown, permessage-deflate; "
                                        "server_max_window_bits=10\r\n")
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert (b"\r\nSec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; "
            b"client_no_context_takeover; server_max_window_bits=10") in head
    text = "compressed and fragmented, " * 40
    parts = deflate(text[:300].encode(), text[300:].encode())
    sock.sendall(masked(1, deflate(b"a" * 1000)[0], rsv=RSV1) + masked(1, parts[0], fin=False, rsv=RSV1)
                 + masked(9, b"between") + masked(0, parts[1]))
    frames = raw_frames(sock, rest, 3)
    assert frames[0][0] == 0xC1 and inflate(frames[0][1]) == b"a" * 1000
    assert frames[1] == (0x8A, b"between")
    assert frames[2][0] == 0xC1 and inflate(frames[2][1]) == text.encode()


@pytest.mark.parametrize("frame, code", [
    (masked(2, deflate(b"\0" * 20_000_000)[0], rsv=RSV1), 1009),  # 20 KB inflating to 20 MB
    (masked(9, b"", rsv=RSV1), 1002),
    (masked(1, b"\xff\xff\xff\xff", rsv=RSV1), 1007),
], ids=["deflate-bomb", "rsv1-on-ping", "bad-deflate"])
def test_compressed_failures_close_with_their_code(start_server, frame, code):
    srv = start(start_server, DEFLATE + "\nmax_message = 100000")
    sock, data = handshake(srv, headers=OFFER)
    assert b"permessage-deflate" in data
    sock.sendall(masked(1, b"ok") + frame)
    frames = read_frames(sock, data.partition(b"\r\n\r\n")[2])
    assert frames[0] == (1, b"ok") and close_code(frames) == code
    assert sock.recv(10) == b""
