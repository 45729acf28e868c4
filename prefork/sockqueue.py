"""Sending what waits in a non-blocking socket's output queue, for the bus's
connections (the link to the master, the connections to Redis). Imports
nothing of prefork."""

from __future__ import annotations

from collections import deque


def send_queued(sock, out: deque) -> tuple[int, str | None]:
    """Send from the front of ``out`` (bytes or memoryviews) until it is empty
    or the socket is full: (bytes sent, None); (bytes sent, the error) when the
    socket failed. A part sent in part is replaced by its rest."""
    total = 0
    while out:
        part = out[0]
        try:
            sent = sock.send(part)
        except (BlockingIOError, InterruptedError):
            return total, None
        except OSError as exc:
            return total, str(exc)
        total += sent
        if sent < len(part):
            out[0] = memoryview(part)[sent:]
            return total, None
        out.popleft()
    return total, None
