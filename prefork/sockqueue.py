"""A non-blocking socket's output queue, for the bus's connections (a worker's
link to the master, the master's links to the workers, the connections to
Redis): send at once what nothing waits before (``send_or_queue``), queue the
rest, send the queue as the socket takes it (``send_queued``). Imports nothing
of prefork."""

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


def send_or_queue(sock, out: deque, data) -> tuple[int, bool, str | None]:
    """Send ``data`` now if nothing waits in ``out``, else queue it behind; what
    the socket does not take is queued. Returns (bytes queued, whether ``out``
    has just begun to hold something: the caller waits for the socket to be
    writable, None) -- or (0, False, the error) when the socket failed."""
    if out:
        out.append(memoryview(data))
        return len(data), False, None
    try:
        sent = sock.send(data)
    except (BlockingIOError, InterruptedError):
        sent = 0
    except OSError as exc:
        return 0, False, str(exc)
    if sent < len(data):
        out.append(memoryview(data)[sent:])
        return len(data) - sent, True, None
    return 0, False, None
