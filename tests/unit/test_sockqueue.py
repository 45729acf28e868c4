"""send_queued: a non-blocking socket's output queue, sent as far as the socket takes it."""

import socket
from collections import deque

from prefork.sockqueue import send_queued


def _pair():
    a, b = socket.socketpair()
    a.setblocking(False)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return a, b


def test_everything_goes_when_the_socket_takes_it():
    a, b = _pair()
    with a, b:
        out = deque([b"abc", memoryview(b"defg")])
        assert send_queued(a, out) == (7, None) and not out
        assert b.recv(100) == b"abcdefg"


def test_a_full_socket_keeps_the_rest_in_order():
    a, b = _pair()
    with a, b:
        big = bytes(range(256)) * 4096  # 1 MiB: more than the socket's buffers
        out = deque([big, b"tail"])
        sent, error = send_queued(a, out)
        assert error is None and 0 < sent < len(big) and len(out) == 2
        assert bytes(out[0]) == big[sent:] and out[1] == b"tail"
        got = bytearray()
        b.setblocking(False)
        while len(got) < len(big) + 4:
            try:
                got += b.recv(1 << 20)
            except BlockingIOError:
                more, error = send_queued(a, out)
                assert error is None
        assert bytes(got) == big + b"tail" and not out


def test_a_failed_socket_says_why():
    a, b = _pair()
    b.close()
    with a:
        out = deque([b"x" * 100])
        sent, error = send_queued(a, out)
        assert sent == 0 and error and out  # EPIPE: nothing taken, the part kept
