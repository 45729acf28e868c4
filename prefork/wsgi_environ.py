"""The pure parts of the WSGI adapter (``wsgi.py``, above it): the PEP 3333
``environ`` of a request whose body is all here (``build_environ``), the
``wsgi.errors`` stream (the error log, a line at a time), and the checks of
what an app gives ``start_response`` (``check_status``, ``check_headers``).
Imports nothing of prefork but ``messages``."""

from __future__ import annotations

import io
import logging
from typing import Any
from wsgiref import util

from .messages import Request

log = logging.getLogger("prefork.worker")


class EmptyInput:
    """``wsgi.input`` of a request without a body: reads nothing, has no state,
    so every such request shares one (``EMPTY``)."""

    __slots__ = ()

    def read(self, size: int = -1) -> bytes:
        return b""

    def readline(self, size: int = -1) -> bytes:
        return b""

    def readlines(self, hint: int = -1) -> list:
        return []

    def __iter__(self):
        return iter(())

    def close(self) -> None:
        pass


EMPTY = EmptyInput()


class FileWrapper(util.FileWrapper):
    """``wsgi.file_wrapper``: wsgiref's (it iterates the file in blocks), of
    its own type so that the adapter knows it when the app returns it, and
    sends a regular file with sendfile (epoll) instead of reading it."""


class ErrorStream:
    """``wsgi.errors``: what the app writes goes to the error log, a line at a
    time. A mount's requests share one (``Mount.errors``): lines that two
    threads write at once may interleave, as in one log file."""

    __slots__ = ("_log", "_buf")

    def __init__(self, logger: logging.Logger = log):
        self._log = logger
        self._buf = ""

    def write(self, text: str) -> None:
        lines = (self._buf + text).split("\n")
        self._buf = lines.pop()
        for line in lines:
            self._log.error("wsgi.errors: %s", line)

    def writelines(self, seq) -> None:
        for text in seq:
            self.write(text)

    def flush(self) -> None:
        if self._buf:
            self._log.error("wsgi.errors: %s", self._buf)
            self._buf = ""


# the most entries each of a Mount's caches keeps (then it starts again, empty)
NAMES_MAX = 1024


class Mount:
    """Where a WSGI app is mounted (``wsgi.WsgiApp`` is one), and what its
    environs repeat from request to request: SERVER_NAME and SERVER_PORT of
    each Host value, REMOTE_ADDR and REMOTE_PORT of each client address (a
    connection's requests all give the same). Each cache is a dict of at most
    ``NAMES_MAX`` entries, emptied when full; the pool's threads share it
    (one dict operation at a time, under the GIL)."""

    def __init__(self, mount: str = "/", prefix: str = ""):
        # a prefix route's mount point without its trailing slash ("" for "/"
        # and exact routes), taken off the path for PATH_INFO; SCRIPT_NAME is
        # what a proxy strips (root_path) plus it
        self.mount = mount[:-1] if mount.endswith("/") else ""
        self.script_name = prefix + self.mount
        self.hosts: dict = {}   # Host value -> (SERVER_NAME, SERVER_PORT), per scheme
        self.peers: dict = {}   # a packed IPv4 peer (messages.pack_peer) -> (REMOTE_ADDR, REMOTE_PORT)
        # wsgi.errors of the app's requests: one stream, as gunicorn gives its
        # error log to every request (a line is logged when it ends)
        self.errors = ErrorStream()


def _server_name(host: bytes | None, sockname, scheme: str) -> tuple[str, str]:
    if host:
        text = host.decode("latin-1")
        if text.startswith("["):  # [v6]:port
            name, _, port = text.partition("]")
            return name + "]", port[1:] or ("443" if scheme == "https" else "80")
        name, _, port = text.partition(":")
        return name, port or ("443" if scheme == "https" else "80")
    if sockname and sockname[1] is not None:
        return str(sockname[0]), str(sockname[1])
    return "localhost", "80"


# RFC 2616's hop-by-hop headers (wsgiref.util.is_hop_by_hop's): the server's, never the app's
_HOP_BY_HOP = frozenset(("connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
                         "trailers", "transfer-encoding", "upgrade"))
# the lengths of the header names check_headers looks at (hop-by-hop ones,
# Content-Length, Server, Date): a name of any other length is none of them
_LOOKED_AT = frozenset(len(name) for name in _HOP_BY_HOP | {"content-length", "server", "date"})
# what every environ has: the keys every request sets (so that the copy is
# made at its final size, with no resize as they go in) and the values that
# are the same for all (copied, never changed)
_CONSTANT: dict[str, Any] = {
    "REQUEST_METHOD": "", "SCRIPT_NAME": "", "PATH_INFO": "", "QUERY_STRING": "", "SERVER_PROTOCOL": "",
    "SERVER_NAME": "", "SERVER_PORT": "", "REMOTE_ADDR": "", "REMOTE_PORT": "",
    "wsgi.version": (1, 0),
    "wsgi.url_scheme": "http",
    "wsgi.input": EMPTY,
    "wsgi.errors": None,
    "wsgi.multithread": True,
    "wsgi.multiprocess": True,
    "wsgi.run_once": False,
    "wsgi.input_terminated": True,
    "wsgi.file_wrapper": FileWrapper,
}
_COMMON = ("Host", "User-Agent", "Accept", "Accept-Encoding", "Accept-Language", "Connection", "Cookie", "Referer",
           "Origin", "Authorization", "Cache-Control", "Pragma", "Upgrade", "If-None-Match", "If-Modified-Since",
           "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Real-IP", "X-Requested-With",
           "Forwarded", "TE", "Expect", "DNT", "Range", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Sec-Fetch-Dest",
           "Upgrade-Insecure-Requests", "Keep-Alive")
# the environ keys of common request headers, by lower-cased name (as
# Request.headers has them; others are made per request)
_KEYS: dict[bytes, str] = {name.lower().encode("latin-1"): "HTTP_" + name.upper().replace("-", "_") for name in _COMMON}


def build_environ(app: Mount, request: Request, sockname=None, errors: Any = None, body: Any = None) -> dict:
    """The environ of PEP 3333 for ``request``: ``wsgi.input`` is ``body`` (a
    streamed body's reader) or else the request's body (whole)."""
    mount = app.mount
    raw = request.path  # (typed bytes for the compiler: a C call to decode)
    path = raw.decode("latin-1")
    if mount and path.startswith(mount):
        path = path[len(mount):]
    environ = _CONSTANT  # (typed, for the compiler's PyDict_Copy)
    environ = environ.copy()
    raw = request.method
    environ["REQUEST_METHOD"] = raw.decode("latin-1")
    environ["SCRIPT_NAME"] = app.script_name
    environ["PATH_INFO"] = path
    raw = request.query
    environ["QUERY_STRING"] = raw.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/1.1" if request.version == "1.1" else "HTTP/" + request.version
    host = None
    keys = _KEYS
    for name, value in request.headers:
        key = keys.get(name)  # (the parser has lower-cased the names)
        if key is None:
            if name == b"content-type":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
                continue
            if name == b"content-length":
                environ["CONTENT_LENGTH"] = value.decode("latin-1")
                continue
            if b"_" in name:
                continue  # X_Forwarded_For would pass for X-Forwarded-For: dropped (as nginx and gunicorn do)
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
        if host is None and key == "HTTP_HOST":
            host = value
        text = value.decode("latin-1")
        old = environ.setdefault(key, text)  # one lookup: in, or the value there already
        if old is not text:  # a repeated header: joined
            environ[key] = old + ("; " if key == "HTTP_COOKIE" else ", ") + text
    whole = request.body
    if whole and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(whole))  # a chunked body, read whole
    scheme = request.scheme
    if host is not None and scheme == "http":  # the common case: from the cache
        names = app.hosts.get(host)
        if names is None:
            names = _server_name(host, sockname, scheme)
            _remember(app.hosts, host, names)
    else:
        names = _server_name(host, sockname, scheme)
    environ["SERVER_NAME"], environ["SERVER_PORT"] = names
    packed = request._peer
    if type(packed) is int:  # an IPv4 client (messages.pack_peer): from the cache
        peer = app.peers.get(packed)
        if peer is None:
            peer = _remote(request.peer)
            _remember(app.peers, packed, peer)
    else:
        peer = _remote(request.peer)
    if peer:
        environ["REMOTE_ADDR"], environ["REMOTE_PORT"] = peer
    else:  # a unix socket's client has no address
        del environ["REMOTE_ADDR"], environ["REMOTE_PORT"]
    environ["wsgi.url_scheme"] = scheme
    if body is not None:
        environ["wsgi.input"] = body
    elif whole:
        environ["wsgi.input"] = io.BytesIO(whole)
    environ["wsgi.errors"] = errors if errors is not None else app.errors
    return environ


def _remote(peer) -> tuple:
    """REMOTE_ADDR and REMOTE_PORT of a client address; () for none (a unix socket's client)."""
    if type(peer) is tuple and len(peer) >= 2:
        return str(peer[0]), str(peer[1])
    return ()


def _remember(cache: dict, key, value) -> None:
    if len(cache) >= NAMES_MAX:
        cache.clear()
    cache[key] = value


def check_status(status: Any) -> int:
    """The code of a PEP 3333 status string ("200 OK"); ValueError if it is not one."""
    if type(status) is not str:
        raise ValueError(f"start_response: bad status {status!r} (expected e.g. '200 OK')")
    text = status  # a str (typed for the compiler)
    if len(text) < 4 or text[3] != " " or not ("0" <= text[0] <= "9" and "0" <= text[1] <= "9"
                                               and "0" <= text[2] <= "9") or "\r" in text or "\n" in text:
        raise ValueError(f"start_response: bad status {status!r} (expected e.g. '200 OK')")
    return (ord(text[0]) - 48) * 100 + (ord(text[1]) - 48) * 10 + ord(text[2]) - 48


# what check_headers tells of the headers, besides the Content-Length: bit 0
# of its value, the app gave a Server header; bit 1, a Date header; the rest
# (value >> 2) is the Content-Length the app gave, plus one (0: none)
OWN_SERVER = 1
OWN_DATE = 2


def check_headers(headers: Any) -> int:
    """PEP 3333's response headers: a list of (str, str), no hop-by-hop ones,
    a Content-Length (if any) of digits; TypeError or ValueError if not. What
    the head needs of them, in one int: ``OWN_SERVER`` and ``OWN_DATE`` set
    when the app gave those, and ``value >> 2`` the Content-Length plus one
    (0: none; the last one given counts)."""
    if type(headers) is not list:
        raise TypeError(f"start_response: headers must be a list, not {type(headers).__name__}")
    facts = 0
    declared = -1
    for item in headers:
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not str or type(item[1]) is not str:
            raise TypeError(f"start_response: a header must be a (str, str) tuple, not {item!r}")
        name, value = item
        size = len(name)
        if not size or ":" in name or " " in name or "\r" in name or "\n" in name or "\r" in value \
                or "\n" in value:
            raise ValueError(f"start_response: bad header {item!r}")
        if size not in _LOOKED_AT:  # (most: Content-Type, Cache-Control, Set-Cookie, X-...)
            continue
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            raise ValueError(f"start_response: hop-by-hop header {name!r} is the server's")
        if lower == "content-length":
            declared = _content_length(value)
        elif lower == "server":
            facts |= OWN_SERVER
        elif lower == "date":
            facts |= OWN_DATE
    return facts | (declared + 1) << 2


def _content_length(value: str) -> int:
    """A Content-Length the app gave: digits (around them, spaces); ValueError if not."""
    digits = value.strip()
    if not digits or len(digits) > 18:
        raise ValueError(f"bad Content-Length {value!r}")
    length = 0
    for ch in digits:
        if ch < "0" or ch > "9":
            raise ValueError(f"bad Content-Length {value!r}")
        length = length * 10 + (ord(ch) - 48)
    return length
