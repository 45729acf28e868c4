"""send_queued: a non-blocking socket's output queue, sent as far as the socket takes it."""

import socket
from collections import deque

from prefork.sockqueue import send_or_queue, send_queued


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


def test_send_or_queue_sends_at_once_when_nothing_waits():
    a, b = _pair()
    with a, b:
        out = deque()
        assert send_or_queue(a, out, b"hello") == (0, False, None) and not out
        assert b.recv(100) == b"hello"


def test_send_or_queue_queues_behind_what_waits_and_the_rest_of_a_partial_send():
    a, b = _pair()
    with a, b:
        big = bytes(range(256)) * 4096
        out = deque()
        queued, waiting, error = send_or_queue(a, out, big)
        assert error is None and waiting and 0 < queued < len(big) and bytes(out[0]) == big[-queued:]
        # something waits: the next data goes behind it, not to the socket, and nothing new to wait for
        assert send_or_queue(a, out, b"tail") == (4, False, None) and bytes(out[1]) == b"tail"


def test_send_or_queue_says_why_a_socket_failed():
    a, b = _pair()
    b.close()
    with a:
        out = deque()
        queued, waiting, error = send_or_queue(a, out, b"x" * 100)
        assert (queued, waiting) == (0, False) and error and not out
