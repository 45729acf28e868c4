"""What applications and drivers share: requests, responses, file bodies.

A handler takes a ``Request`` and returns a ``Response`` -- or an ``Offload``
to have its work run in the worker's thread pool. A ``Response`` may carry a
``FileChunk``, which the driver sends with sendfile. This module imports
nothing else of prefork: apps, the dispatcher, the HTTP protocol and the
drivers all build on it.
"""

from __future__ import annotations

import os
import socket
from typing import Callable


def pack_peer(addr):
    """An IPv4 peer address (host, port) as one int, ``ip << 16 | port``: an
    idle connection keeps 32 bytes for it instead of a tuple, a string and an
    int (about 180). Any other address is kept as it is."""
    if type(addr) is tuple and len(addr) == 2:
        try:
            return int.from_bytes(socket.inet_aton(addr[0]), "big") << 16 | addr[1]
        except (OSError, TypeError):
            pass
    return addr


def unpack_peer(peer):
    """The (host, port) that ``pack_peer`` packed (the dotted quad formatted
    here: compiled, C integers; ``socket.inet_ntoa`` took a third of a
    microsecond per request)."""
    if type(peer) is int:
        ip = peer >> 16
        return f"{ip >> 24}.{(ip >> 16) & 255}.{(ip >> 8) & 255}.{ip & 255}", peer & 0xFFFF
    return peer


class Request:
    """One parsed request, as handlers see it. ``headers``: (name, value)
    pairs in the order received, duplicates kept, the names lower-cased."""

    __slots__ = ("method", "target", "path", "query", "version", "headers", "body", "keep_alive", "_peer",
                 "trailers", "scheme")

    def __init__(self, method: bytes, target: bytes, path: bytes, query: bytes, version: str,
                 headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool, peer=None,
                 trailers: "list[tuple[bytes, bytes]] | tuple" = ()):
        self._fill(method, target, path, query, version, headers, body, keep_alive, peer, trailers)

    def _fill(self, method: bytes, target: bytes, path: bytes, query: bytes, version: str,
              headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool, peer,
              trailers: "list[tuple[bytes, bytes]] | tuple") -> None:
        self.method = method
        self.target = target
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive
        self._peer = peer  # packed (pack_peer) or as given
        self.trailers = trailers  # a chunked body's trailer fields, apart from the headers
        self.scheme = "http"  # or what a trusted proxy says ([http] forwarded_allow)

    @property
    def peer(self):
        """The client's address, (host, port) for TCP; behind a trusted proxy,
        the one it forwarded (``prefork.forwarded``)."""
        return unpack_peer(self._peer)

    @peer.setter
    def peer(self, address) -> None:
        self._peer = address

    def header(self, name: bytes, default: bytes | None = None) -> bytes | None:
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return default


def new_request(method: bytes, target: bytes, path: bytes, query: bytes, version: str,
                headers: list[tuple[bytes, bytes]], body: bytes, keep_alive: bool, peer,
                trailers: "list[tuple[bytes, bytes]] | tuple") -> Request:
    """``Request(...)`` for the hot path: compiled, a C call (no type call,
    no parsing of ten arguments by ``__init__``)."""
    request = Request.__new__(Request)
    request._fill(method, target, path, query, version, headers, body, keep_alive, peer, trailers)
    return request


class FileChunk:
    """``count`` bytes of the open file ``fd`` from ``offset``: the driver sends
    them with sendfile and closes ``fd`` when done (or when the connection goes)."""

    __slots__ = ("fd", "offset", "count")

    def __init__(self, fd: int, offset: int, count: int):
        self.fd = fd
        self.offset = offset
        self.count = count

    def close(self) -> None:
        if self.fd >= 0:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1


def close_files(parts) -> None:
    """Close the file bodies among output ``parts`` (a list or deque of bytes
    and ``FileChunk``s; plain bytes hold none) that will not be sent."""
    if type(parts) not in (bytes, bytearray, memoryview):
        for part in parts:
            if type(part) is FileChunk:
                part.close()


def no_content(status: int) -> bool:
    """A 1xx, 204 or 304 response has no content (RFC 9110 6.4.1)."""
    return status < 200 or status == 204 or status == 304

class Response:
    """What a handler returns. ``file``, when set, is sent after ``body``
    (which is then empty) and its length is ``length``. A 1xx, 204 or 304
    response has no content (RFC 9110 6.4.1): its body is dropped."""

    __slots__ = ("status", "body", "content_type", "headers", "file", "length")

    def __init__(self, status: int = 200, body: bytes = b"", content_type: bytes = b"text/plain",
                 headers: list[tuple[bytes, bytes]] | None = None, file: FileChunk | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or ()
        if status != 200 and no_content(status):
            self.body = b""
            if file is not None:
                file.close()
                file = None
            self.file = None
            self.length = 0
            return
        self.file = file
        self.length = file.count if file is not None else len(body)


class Offload:
    """Returned by a handler: run ``fn(request)`` in the thread pool and send
    the ``Response`` it returns."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[["Request"], Response]):
        self.fn = fn


Handler = Callable[[Request], "Response | Offload"]


def constant(response: "Response") -> Handler:
    """A handler that always answers ``response`` (as nginx's ``return``): the
    router knows, and answers it without building a Request for it."""
    def handler(request: Request) -> Response:
        return response
    handler.constant = response
    return handler

