"""Configuration: TOML (tomllib) validated into typed, frozen objects.

Every error names the file, the key and what was expected, so
``prefork-server -t -c FILE`` can tell the user exactly what to fix, and a
reload with a bad file can keep the old configuration.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import unquote

from .configcheck import (_DATABASE_CHECKS, _HTTP_CHECKS, _LOG_CHECKS, _PUBSUB_CHECKS, _SERVER_CHECKS,
                          _STATIC_CHECKS, _STATUS_CHECKS, _WEBSOCKET_CHECKS, LIFESPAN_MODES, PROTOCOLS, ConfigError,
                          _check_int, _check_str, _check_table, _section, _unknown_keys)


@dataclass(frozen=True, slots=True)
class Address:
    """Where a listener binds: an IP host and port, or a unix socket path."""

    family: str  # "inet", "inet6" or "unix"
    host: str
    port: int
    path: str = ""

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        if self.family == "inet6":
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ListenConfig:
    address: Address
    protocol: str = "http"
    name: str = ""
    backlog: int = 4096


@dataclass(frozen=True, slots=True)
class ServerConfig:
    workers: int = 1
    worker_connections: int = 10000
    backend: str = "epoll"
    accept_batch: int = 64
    shutdown_timeout: float = 30.0      # graceful stop: force-close after this
    accept: str = "reuseport"           # one SO_REUSEPORT socket per worker slot, or one "shared"
    mode: str = "process"               # workers as processes, or as threads of one process
    pid_file: str = ""                  # needed by -s and by USR2 upgrades
    worker_timeout: float = 30.0        # a worker silent this long is aborted, then killed
    worker_rlimit_nofile: int = 0       # soft RLIMIT_NOFILE for workers (0: what worker_connections needs)
    threads: int = 4                    # thread pool per worker, for blocking handlers (0: run them inline)
    queue: int = 1024                   # jobs waiting for the pool; beyond this a request gets 503
    threads_sched: str = "batch"        # the pool's threads as SCHED_BATCH (a woken one does not preempt the reactor) or "normal"
    user: str = ""                      # workers drop to this user (the master stays as started; root only)
    group: str = ""                     # ... and this group (default: the user's primary group)
    max_requests: int = 0               # recycle a worker after this many requests (0: never)
    max_requests_jitter: int = 0        # ... plus randint(0, this) per worker, so they do not all go at once
    max_rss: int = 0                    # recycle a worker whose resident memory passes this many MiB (0: never)


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """Limits and timeouts, with nginx's defaults where nginx has one."""

    max_request_line: int = 8192        # large_client_header_buffers: 8k line
    max_header_bytes: int = 32768       # large_client_header_buffers: 4 x 8k
    max_headers: int = 100
    max_body: int = 1048576             # client_max_body_size 1m
    header_timeout: float = 60.0        # client_header_timeout
    body_timeout: float = 60.0          # client_body_timeout
    keepalive_timeout: float = 75.0     # keepalive_timeout
    keepalive_requests: int = 1000      # keepalive_requests
    send_timeout: float = 60.0          # send_timeout
    high_water: int = 65536             # pause reading above this much unsent output
    wsgi_body_buffer: int = 65536       # WSGI request bodies larger than this (or chunked) stream to wsgi.input
    server_header: str = "prefork"
    # trusted proxies whose X-Forwarded-For/-Proto and Forwarded are believed: ip_network
    # objects, "unix" (unix-socket peers), "*" (anyone); empty: the headers are never read
    forwarded_allow: tuple = ()


@dataclass(frozen=True, slots=True)
class RouteConfig:
    path: str                           # "/x" matches exactly; "/x/" matches the prefix
    handler: str                        # a built-in name or "package.module:callable" ("" with asgi)
    blocking: bool | None = None        # run in the thread pool (None: the handler's own default)
    asgi: str = ""                      # an ASGI 3 app, "package.module:app" (instead of handler)
    asgi_factory: bool = False          # asgi names a callable that returns the app (called with no arguments)
    root_path: str = ""                 # asgi: the prefix a proxy strips before forwarding (scope root_path, as uvicorn's)
    lifespan: str = "auto"              # asgi: run the app's lifespan per worker: "auto", "on" or "off"
    wsgi: str = ""                      # a WSGI (PEP 3333) app, "package.module:app" (instead of handler)
    wsgi_factory: bool = False          # wsgi names a callable that returns the app (called with no arguments)


@dataclass(frozen=True, slots=True)
class StaticConfig:
    root: str = ""                      # directory served by the "static" handler ("" = none)
    index: str = "index.html"
    cache_entries: int = 1024           # open-file cache: entries per worker
    cache_valid: float = 2.0            # seconds before a cached entry is checked again
    cache_max_file: int = 65536         # files up to this size are kept in memory, larger ones are sent with sendfile


@dataclass(frozen=True, slots=True)
class DatabaseConfig:
    url: str = ""                       # sqlite:///relative.db, sqlite:////abs.db or postgresql://...
    synchronous: str = "full"           # SQLite: full (fsync each commit) or normal (survives process crashes)
    timeout: float = 5.0                # seconds to wait for a lock (SQLite) or a connection (PostgreSQL)


@dataclass(frozen=True, slots=True)
class PubsubConfig:
    url: str = ""                       # redis://[[user]:password@]host[:port][/db]: Redis is the bus between servers
    prefix: str = "prefork:"            # the Redis channels used: <prefix><channel>


@dataclass(frozen=True, slots=True)
class StatusConfig:
    allow: tuple[str, ...] = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    """The WebSocket routes' limits (``prefork.protocols.websocket``)."""

    max_message: int = 1048576          # a bigger message (whole or in fragments) closes with 1009 (websockets' default)
    idle_timeout: float = 0.0           # close (1000) after this long without a message from the client (0: never)
    ping_interval: float = 20.0         # ping the client this often (0: never), as the websockets library does
    ping_timeout: float = 20.0          # ...and close (1011) when its pong has not come after this long
    queue: int = 1048576                # bytes pushed to a client past http.high_water unsent; beyond: close 1013
    origins: tuple[str, ...] = ()       # the Origin headers allowed (empty: any); others get 403
    publish_allow: tuple[str, ...] = ("127.0.0.1", "::1")  # who may POST to a publish route (as [status] allow)
    compression: str = "off"            # "deflate": permessage-deflate (RFC 7692) for the clients that offer it
    compression_level: int = 6          # zlib's level (1: fastest .. 9: smallest)
    compression_window_bits: int = 12   # the server's LZ77 window (9..15: 512 B .. 32 KiB), lower if a client asks


@dataclass(frozen=True, slots=True)
class LogConfig:
    error_log: str = "-"                # a path, or "-" for stderr
    access_log: str = ""                # a path, "-" for stderr, "" for none
    level: str = "info"


@dataclass(frozen=True, slots=True)
class Config:
    path: str
    server: ServerConfig = field(default_factory=ServerConfig)
    listen: tuple[ListenConfig, ...] = ()
    http: HttpConfig = field(default_factory=HttpConfig)
    log: LogConfig = field(default_factory=LogConfig)
    routes: tuple[RouteConfig, ...] = ()
    static: StaticConfig = field(default_factory=StaticConfig)
    status: StatusConfig = field(default_factory=StatusConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    pubsub: PubsubConfig = field(default_factory=PubsubConfig)
    notes: tuple[str, ...] = ()  # what works differently with this combination (-t prints them, the master logs them)


def parse_address(path: str, key: str, value: Any) -> Address:
    text = _check_str(path, key, value)
    if text.startswith("unix:"):
        if len(text) <= 5:
            raise ConfigError(path, key, "expected 'unix:/path/to/socket'")
        return Address("unix", "", 0, text[5:])
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        family = "inet6"
    elif text.isdigit():
        host, sep, port, family = "0.0.0.0", ":", text, "inet"
    else:
        host, sep, port = text.rpartition(":")
        family = "inet"
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(path, key, f"expected 'host:port', '[v6addr]:port', 'port' or 'unix:/path', got {text!r}")
    if family == "inet" and ":" in host:
        raise ConfigError(path, key, f"an IPv6 address needs brackets: '[{host}]:{port}'")
    return Address(family, host, int(port))


def _routes(path: str, data: dict) -> tuple[RouteConfig, ...]:
    raw = data.get("route", [])
    if not isinstance(raw, list):
        raise ConfigError(path, "[[route]]", "expected an array of tables: [[route]]")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(raw):
        section = f"route[{i}]"
        table = _check_table(path, section, item)
        _unknown_keys(path, section, table, {f.name for f in fields(RouteConfig)})
        if "path" not in table:
            raise ConfigError(path, f"{section}.path", "missing")
        given = [key for key in ("handler", "asgi", "wsgi") if key in table]
        if len(given) != 1:
            raise ConfigError(path, f"{section}.{'handler' if 'handler' in given or not given else given[-1]}",
                              "expected exactly one of handler, asgi and wsgi" if given else "missing")
        route_path = _check_str(path, f"{section}.path", table["path"])
        if not route_path.startswith("/"):
            raise ConfigError(path, f"{section}.path", f"expected a path starting with '/', got {route_path!r}")
        if route_path in seen:
            raise ConfigError(path, f"{section}.path", f"{route_path} is routed twice")
        seen.add(route_path)
        handler = _check_str(path, f"{section}.handler", table.get("handler", ""))
        asgi = _check_str(path, f"{section}.asgi", table.get("asgi", ""))
        if "asgi" in table and not asgi:
            raise ConfigError(path, f"{section}.asgi", "expected 'package.module:app'")
        wsgi = _check_str(path, f"{section}.wsgi", table.get("wsgi", ""))
        if "wsgi" in table and not wsgi:
            raise ConfigError(path, f"{section}.wsgi", "expected 'package.module:app'")
        for flag in ("blocking", "asgi_factory", "wsgi_factory"):
            value = table.get(flag)
            if value is not None and not isinstance(value, bool):
                raise ConfigError(path, f"{section}.{flag}", f"expected true or false, got {value!r}")
        if not asgi and "asgi_factory" in table:
            raise ConfigError(path, f"{section}.asgi_factory", "needs asgi")
        if not wsgi and "wsgi_factory" in table:
            raise ConfigError(path, f"{section}.wsgi_factory", "needs wsgi")
        if asgi and "blocking" in table:
            raise ConfigError(path, f"{section}.blocking", "an asgi app runs on the worker's loop, not in the pool")
        if wsgi and "blocking" in table:
            raise ConfigError(path, f"{section}.blocking", "a wsgi app always runs in the thread pool")
        lifespan = table.get("lifespan", "auto")
        if "lifespan" in table:
            if not asgi:
                raise ConfigError(path, f"{section}.lifespan", "needs asgi (the lifespan is an ASGI app's)")
            lifespan = _check_str(path, f"{section}.lifespan", lifespan, LIFESPAN_MODES)
        out.append(RouteConfig(route_path, handler, table.get("blocking"), asgi, table.get("asgi_factory", False),
                               root_path=_root_path(path, section, table, asgi or wsgi), lifespan=lifespan,
                               wsgi=wsgi, wsgi_factory=table.get("wsgi_factory", False)))
    return tuple(out)


def _root_path(path: str, section: str, table: dict, app: str) -> str:
    if "root_path" not in table:
        return ""
    key = f"{section}.root_path"
    text = _check_str(path, key, table["root_path"])
    if not app:
        raise ConfigError(path, key, "needs asgi or wsgi")
    if text and (not text.startswith("/") or not text.isascii()):
        raise ConfigError(path, key, f"expected an ASCII path starting with '/' (or \"\"), got {text!r}")
    return text.rstrip("/")


_LISTEN_CHECKS = {
    "address": parse_address,
    "protocol": lambda p, k, v: _check_str(p, k, v, PROTOCOLS),
    "name": lambda p, k, v: _check_str(p, k, v),
    "backlog": lambda p, k, v: _check_int(p, k, v, 1, 1 << 20),
}


def _listeners(path: str, data: dict) -> tuple[ListenConfig, ...]:
    raw = data.get("listen")
    if raw is None:
        raise ConfigError(path, "[[listen]]", "at least one [[listen]] table with an address is required")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(path, "[[listen]]", "expected an array of tables: [[listen]]")
    out = []
    seen_addresses: set[str] = set()
    seen_names: set[str] = set()
    for i, item in enumerate(raw):
        section = f"listen[{i}]"
        table = _check_table(path, section, item)
        _unknown_keys(path, section, table, {f.name for f in fields(ListenConfig)})
        if "address" not in table:
            raise ConfigError(path, f"{section}.address", "missing; expected e.g. \"127.0.0.1:8080\"")
        values = {key: _LISTEN_CHECKS[key](path, f"{section}.{key}", v) for key, v in table.items()}
        listen = ListenConfig(**values)
        if str(listen.address) in seen_addresses:
            raise ConfigError(path, f"{section}.address", f"{listen.address} is listed twice")
        if listen.name and listen.name in seen_names:
            raise ConfigError(path, f"{section}.name", f"name {listen.name!r} is used twice")
        seen_addresses.add(str(listen.address))
        if listen.name:
            seen_names.add(listen.name)
        out.append(listen)
    return tuple(out)


def from_dict(data: dict, path: str = "<config>") -> Config:
    _unknown_keys(path, "", data, {"server", "listen", "http", "log", "route", "static", "status", "database",
                                  "websocket", "pubsub"})
    server = _section(path, data, "server", ServerConfig, _SERVER_CHECKS)
    http = _section(path, data, "http", HttpConfig, _HTTP_CHECKS)
    log = _section(path, data, "log", LogConfig, _LOG_CHECKS)
    static = _section(path, data, "static", StaticConfig, _STATIC_CHECKS)
    status = _section(path, data, "status", StatusConfig, _STATUS_CHECKS)
    database = _section(path, data, "database", DatabaseConfig, _DATABASE_CHECKS)
    websocket = _section(path, data, "websocket", WebSocketConfig, _WEBSOCKET_CHECKS)
    pubsub = _section(path, data, "pubsub", PubsubConfig, _PUBSUB_CHECKS)
    if http.max_request_line > http.max_header_bytes:
        raise ConfigError(path, "http.max_request_line",
                          f"must not exceed http.max_header_bytes ({http.max_header_bytes})")
    routes = _routes(path, data)
    server = _asgi_backend(path, data, server, routes)
    first_wsgi = next((i for i, route in enumerate(routes) if route.wsgi), None)
    if first_wsgi is not None and server.threads == 0:
        raise ConfigError(path, "server.threads", f"0, but the WSGI app of route[{first_wsgi}].wsgi runs in "
                                                  "the thread pool: at least 1")
    config = Config(path=path, server=server, listen=_listeners(path, data), http=http, log=log,
                    routes=routes, static=static, status=status, database=database, websocket=websocket,
                    pubsub=pubsub)
    _check_privileges(config)
    return dataclasses.replace(config, notes=_backend_notes(config))


def _asgi_backend(path: str, data: dict, server: ServerConfig, routes: tuple[RouteConfig, ...]) -> ServerConfig:
    """ASGI apps need an asyncio loop: without ``server.backend`` an ASGI
    route makes it uvloop (asyncio when uvloop is missing); an explicit
    "epoll" with one is an error naming both keys."""
    first = next((i for i, route in enumerate(routes) if route.asgi), None)
    if first is None:
        return server
    explicit = isinstance(data.get("server"), dict) and "backend" in data["server"]
    if explicit:
        if server.backend == "epoll":
            raise ConfigError(path, "server.backend", f"'epoll' cannot run the ASGI app of route[{first}].asgi: "
                                                      "use 'uvloop' or 'asyncio' (or leave server.backend out)")
        return server
    import importlib.util

    backend = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    return dataclasses.replace(server, backend=backend)


def _backend_notes(config: Config) -> tuple[str, ...]:
    """Where an asyncio loop cannot do what the epoll reactor does, say so."""
    backend = config.server.backend
    if backend == "epoll":
        return ()
    notes = []
    if config.server.accept == "shared":
        notes.append(f"server.accept = 'shared' with backend '{backend}': an asyncio loop cannot register the "
                     "listener with EPOLLEXCLUSIVE, so every worker wakes for each new connection and one "
                     "wins ('reuseport' wakes one)")
    if config.static.root:
        notes.append(f"static.root with backend '{backend}': the transport owns the socket, so files go out "
                     "with os.pread in 256 KiB pieces instead of sendfile")
    return tuple(notes)


def sqlite_path(url: str) -> str:
    """sqlite:///relative.db -> relative.db (absolute from the start directory); sqlite:////abs -> /abs."""
    rest = url[len("sqlite:///"):]
    return os.path.abspath(unquote(rest))


def _check_privileges(config: Config) -> None:
    """With ``server.user``: can that user use what the workers will open?"""
    server = config.server
    if server.group and not server.user:
        raise ConfigError(config.path, "server.group", "needs server.user")
    if not server.user:
        return
    from . import privileges

    ident = privileges.resolve(server.user, server.group)
    url = config.database.url
    sqlite_file = ""
    if url.startswith("sqlite:///"):
        sqlite_file = sqlite_path(url)
    problem = privileges.check(config.static.root, sqlite_file, ident)
    if problem:
        raise ConfigError(config.path, *problem)


def load(path: str) -> Config:
    """Read and validate a config file; raise ConfigError naming what is wrong.
    The checks that need the apps and the worker (handlers resolve, open files
    fit) are ``checks.load_checked``'s."""
    return from_dict(read(path), path)


def read(path: str) -> dict:
    """The TOML data of a config file, not yet validated (command-line
    overrides go into it first); raise ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, "", "no such file") from None
    except OSError as exc:
        raise ConfigError(path, "", f"cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, "", f"not valid TOML: {exc}") from None
    return data
