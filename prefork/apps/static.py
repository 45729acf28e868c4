"""Static files: GET and HEAD under ``[static] root``.

Content-Type from the extension, Last-Modified and ETag (as nginx makes
them: hex mtime "-" hex size), 304 for If-None-Match / If-Modified-Since, one
byte Range (206, or 416 when unsatisfiable), ``index`` for a directory (301 to
add the slash first), never a listing.

Where the work happens: an open-file cache per worker (nginx's
``open_file_cache``) answers on the reactor thread — small files from memory,
larger ones by sendfile from a cached fd (each response gets its own dup, so an
eviction never closes a file being sent). A miss, or an entry older than
``cache_valid``, is an ``Offload``: path checks, stat and open run in the
thread pool, so a slow disk never stalls the loop.

Security: the percent-decoded path may not hold NUL, backslash, or "." / ".."
segments (404); the resolved path (symlinks followed) must stay inside the
root (403). Error pages never show a path.
"""

from __future__ import annotations

import mimetypes
import os
import stat
import threading
import time
from collections import OrderedDict
from email.utils import formatdate, parsedate_to_datetime
from urllib.parse import quote_from_bytes

from ..messages import FileChunk, Offload, Request, Response

CACHE_BYTES = 8 << 20  # memory for cached small bodies, per worker
_CONDITIONAL_LENGTHS = frozenset((5, 8, 13, 17))  # range, if-range, if-none-match, if-modified-since


class _Entry:
    __slots__ = ("path", "size", "mtime", "ino", "etag", "last_modified", "content_type", "body", "fd", "checked",
                 "headers", "ok")

    def __init__(self, path: str, st: os.stat_result, fd: int, body: bytes | None):
        self.path = path
        self.size = st.st_size
        self.mtime = int(st.st_mtime)
        self.ino = (st.st_dev, st.st_ino)
        self.etag = b'"%x-%x"' % (self.mtime, self.size)
        self.last_modified = formatdate(self.mtime, usegmt=True).encode()
        ctype = mimetypes.guess_type(path)[0] or "application/octet-stream"
        self.content_type = ctype.encode()
        self.body = body
        self.fd = fd
        self.checked = time.monotonic()
        # fixed for the entry's life: a tuple lets the protocol cache the whole head
        self.headers = ((b"Last-Modified", self.last_modified), (b"ETag", self.etag), (b"Accept-Ranges", b"bytes"))
        # the plain 200 of a file held in memory is the same object every time
        self.ok = Response(200, body, self.content_type, self.headers) if body is not None else None

    def detach(self) -> int:
        """Take the fd out of the entry (the caller holds the cache lock)."""
        fd, self.fd = self.fd, -1
        return fd


def _plain(status: int, text: str, headers: list | None = None) -> Response:
    return Response(status, text.encode() + b"\n", b"text/plain", headers)


class StaticFiles:
    def __init__(self, root: str, prefix: str, index: str = "index.html", entries: int = 1024,
                 valid: float = 2.0, max_file: int = 65536, max_bytes: int = CACHE_BYTES):
        self.root = os.path.realpath(root)
        self.prefix = prefix.encode()
        self.index = index
        self.entries = entries
        self.valid = valid
        self.max_file = max_file
        self.max_bytes = max_bytes
        self._cache: OrderedDict[str, _Entry] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()  # the reactor reads the cache, pool threads fill it

    # --- the handler (reactor thread) -------------------------------------------------

    def __call__(self, request: Request) -> Response | Offload:
        if request.method not in (b"GET", b"HEAD"):
            return _plain(405, "405 Method Not Allowed", [(b"Allow", b"GET, HEAD")])
        name = self._name(request.path)
        if name is None:
            return _plain(404, "404 Not Found")
        # No lock on this path: get and move_to_end are single C calls (atomic
        # under the GIL); the pool threads that change the cache lock among themselves.
        cache = self._cache
        entry = cache.get(name)
        if entry is not None:
            try:
                cache.move_to_end(name)
            except KeyError:
                pass  # evicted this instant: the entry we hold is still whole
            if time.monotonic() - entry.checked < self.valid:
                return self._respond(entry, request)
        return Offload(self._slow)

    def _name(self, path: bytes) -> str | None:
        """The path below the prefix, or None when it tries to leave the root."""
        rel = path[len(self.prefix):]
        if b"\0" in rel or b"\\" in rel:
            return None
        if b"." in rel and (rel.startswith(b".") or b"/." in rel):  # only then can a segment be . or ..
            for segment in rel.split(b"/"):
                if segment in (b".", b".."):
                    return None
        try:
            return rel.decode("utf-8")
        except UnicodeDecodeError:
            return None

    # --- the slow path (thread pool) ------------------------------------------------------

    def _slow(self, request: Request) -> Response:
        name = self._name(request.path)
        if name is None:
            return _plain(404, "404 Not Found")
        full = os.path.join(self.root, name)
        try:
            real = os.path.realpath(full)
            if real != self.root and not real.startswith(self.root + os.sep):
                return _plain(403, "403 Forbidden")  # a symlink out of the root
            st = os.stat(real)
            if stat.S_ISDIR(st.st_mode):
                if name and not name.endswith("/"):
                    # the path is decoded: percent-encode it again (a space, "%", "?", CR LF, ...)
                    location = quote_from_bytes(request.path + b"/", safe="/!$&'()*+,;=:@")
                    return Response(301, b"", b"text/html", [(b"Location", location.encode())])
                real = os.path.join(real, self.index)
                if not os.path.isfile(real):
                    return _plain(403, "403 Forbidden")  # no directory listings
            elif name.endswith("/"):
                return _plain(404, "404 Not Found")  # "file.txt/": realpath dropped the slash
            entry = self._load(name, real)
        except (FileNotFoundError, NotADirectoryError):
            self._forget(name)
            return _plain(404, "404 Not Found")
        except PermissionError:
            return _plain(403, "403 Forbidden")
        except OSError:
            return _plain(500, "500 Internal Server Error")
        return self._respond(entry, request)

    def _load(self, name: str, real: str) -> _Entry:
        with self._lock:
            old = self._cache.get(name)
        st = os.stat(real)
        if old is not None and old.path == real and old.ino == (st.st_dev, st.st_ino) \
                and old.size == st.st_size and old.mtime == int(st.st_mtime):
            old.checked = time.monotonic()
            return old
        fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise FileNotFoundError(real)
            body = None
            if st.st_size <= self.max_file:
                body = os.pread(fd, st.st_size, 0)
                os.close(fd)
                fd = -1
            entry = _Entry(real, st, fd, body)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        self._store(name, entry)
        return entry

    def _store(self, name: str, entry: _Entry) -> None:
        if not self.entries:
            return
        evicted = []
        with self._lock:
            old = self._cache.pop(name, None)
            if old is not None:
                evicted.append(old)
            self._cache[name] = entry
            self._cached_bytes += len(entry.body or b"")
            while len(self._cache) > self.entries or self._cached_bytes > self.max_bytes:
                _, victim = self._cache.popitem(last=False)
                evicted.append(victim)
            for victim in evicted:
                self._cached_bytes -= len(victim.body or b"")
            fds = [victim.detach() for victim in evicted if victim is not entry]
        for fd in fds:
            if fd >= 0:
                os.close(fd)

    def _forget(self, name: str) -> None:
        with self._lock:
            old = self._cache.pop(name, None)
            fd = -1
            if old is not None:
                self._cached_bytes -= len(old.body or b"")
                fd = old.detach()
        if fd >= 0:
            os.close(fd)

    # --- the response (either thread) ---------------------------------------------------

    def _respond(self, entry: _Entry, request: Request) -> Response:
        inm = ims = rng = if_range = None
        for key, value in request.headers:
            n = len(key)
            if n not in _CONDITIONAL_LENGTHS:
                continue
            key = key.lower()
            if key == b"range":
                rng = value
            elif key == b"if-range":
                if_range = value
            elif key == b"if-none-match":
                inm = value
            elif key == b"if-modified-since":
                ims = value
        if entry.ok is not None and inm is None and ims is None and rng is None:
            return entry.ok
        headers = list(entry.headers)
        if inm is not None:
            if inm.strip() == b"*" or entry.etag in [t.strip().removeprefix(b"W/") for t in inm.split(b",")]:
                return Response(304, b"", entry.content_type, headers)
        elif ims is not None and _not_modified_since(ims, entry.mtime):
            return Response(304, b"", entry.content_type, headers)
        size = entry.size
        start, end = 0, size - 1
        status = 200
        if rng is not None and (if_range is None or if_range.strip() in (entry.etag, entry.last_modified)):
            parsed = _parse_range(rng, size)
            if parsed == "unsatisfiable":
                return Response(416, b"", b"text/plain", headers + [(b"Content-Range", b"bytes */%d" % size)])
            if parsed is not None:
                start, end = parsed
                status = 206
                headers.append((b"Content-Range", b"bytes %d-%d/%d" % (start, end, size)))
        count = end - start + 1 if size else 0
        if entry.body is not None:
            body = entry.body if status == 200 else entry.body[start:end + 1]
            return Response(status, body, entry.content_type, headers)
        if request.method == b"HEAD":
            response = Response(status, b"", entry.content_type, headers)
            response.length = count
            return response
        with self._lock:  # an eviction detaches the fd under this lock: dup it before that can happen
            fd = os.dup(entry.fd) if entry.fd >= 0 else -1
        if fd < 0:
            try:  # evicted meanwhile (rare): open the file again
                fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return _plain(404, "404 Not Found")
        return Response(status, b"", entry.content_type, headers, FileChunk(fd, start, count))


def _not_modified_since(value: bytes, mtime: int) -> bool:
    try:
        when = parsedate_to_datetime(value.decode("latin-1"))
    except (TypeError, ValueError, IndexError):
        return False
    return when is not None and mtime <= int(when.timestamp())


def _parse_range(value: bytes, size: int):
    """One ``bytes=`` range as (start, end) inclusive, "unsatisfiable", or None
    to ignore the header (a syntax we do not serve, such as several ranges)."""
    unit, _, spec = value.partition(b"=")
    if unit.lower() != b"bytes" or b"," in spec:
        return None
    first, dash, last = spec.partition(b"-")
    # positions are 1*DIGIT (RFC 9110 14.1.1): int() would also take "+5", "1_0",
    # " 5" and (for "--5") "-5"; an invalid range is ignored (14.2), never a 416
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):  # bytes: ASCII only
        return None
    try:
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if start > end and last:
                return None
        else:
            if not last:
                return None
            suffix = int(last)
            if suffix == 0:
                return "unsatisfiable"
            start, end = max(0, size - suffix), size - 1
    except ValueError:  # more digits than int() converts
        return None
    if start >= size:
        return "unsatisfiable"
    return start, min(end, size - 1)


def make_handler(app, prefix: str):
    cfg = app.config.static
    return StaticFiles(cfg.root, prefix, cfg.index, cfg.cache_entries, cfg.cache_valid, cfg.cache_max_file)
