"""What the Redis bus needs of RESP and of a Redis URL, pure: encoding a
command, parsing ``redis://[[user]:password@]host[:port][/db]``, the glob
pattern of a channel prefix. Replies are parsed by ``hiredis.Reader`` (in
``redisbus``). Imports nothing else of prefork.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 6379


def command(*args: bytes) -> bytes:
    """A command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


@dataclass(frozen=True, slots=True)
class RedisAddress:
    host: str
    port: int = DEFAULT_PORT
    db: int = 0
    username: str = ""
    password: str = ""

    def __str__(self) -> str:  # never the password: this goes into logs
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"redis://{host}:{self.port}/{self.db}"

    def hello(self) -> list[bytes]:
        """The commands a fresh connection sends first (AUTH when there is a password)."""
        if not self.password:
            return []
        if self.username:
            return [command(b"AUTH", self.username.encode(), self.password.encode())]
        return [command(b"AUTH", self.password.encode())]


def parse_url(url: str) -> RedisAddress:
    """``redis://[[user]:password@]host[:port][/db]``; ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"expected 'redis://host:port/db', got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"no query or fragment expected in {url!r}")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"no host in {url!r}")
    db_text = parts.path.lstrip("/")
    if db_text and not db_text.isdigit():
        raise ValueError(f"expected a database number after the '/', got {db_text!r}")
    return RedisAddress(host, port or DEFAULT_PORT, int(db_text or 0), unquote(parts.username or ""),
                        unquote(parts.password or ""))


def glob_escape(prefix: bytes) -> bytes:
    """``prefix`` with Redis glob's special characters escaped, so ``PSUBSCRIBE
    glob_escape(prefix) + b"*"`` matches exactly the channels beginning with it."""
    out = bytearray()
    for byte in prefix:
        if byte in b"*?[]\\":
            out += b"\\"
        out.append(byte)
    return bytes(out)
