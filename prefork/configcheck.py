"""Validation of configuration values: the type and range checks, and one
table per section mapping each key to its check (``config.from_dict`` reads
the sections through them). Every error is a ``ConfigError`` naming the file,
the key and what was expected.
"""

from __future__ import annotations

import os
from dataclasses import fields
from typing import Any

from .resp import parse_url

BACKENDS = ("epoll", "uvloop", "asyncio")
ACCEPT_STRATEGIES = ("reuseport", "shared")
MODES = ("process", "thread")
THREAD_SCHEDS = ("batch", "normal")  # [server] threads_sched (prefork.pool)
LIFESPAN_MODES = ("auto", "on", "off")  # [[route]] lifespan (prefork.lifespan)
LOG_LEVELS = ("debug", "info", "warning", "error")
PROTOCOLS = ("http", "echo")
COMPRESSIONS = ("off", "deflate")  # [websocket] compression


class ConfigError(Exception):
    """A configuration problem, phrased for the person who wrote the file."""

    def __init__(self, path: str, key: str, message: str):
        self.path = path
        self.key = key
        self.message = message
        super().__init__(f"{path}: {key}: {message}" if key else f"{path}: {message}")



# --- validation helpers ---------------------------------------------------


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


def _check_int(path: str, key: str, value: Any, lo: int, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, key, f"expected an integer, got {_type_name(value)} {value!r}")
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"from {lo} to {hi}"
        raise ConfigError(path, key, f"expected an integer {bound}, got {value}")
    return value


def _check_float(path: str, key: str, value: Any, lo: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, key, f"expected a number of seconds, got {_type_name(value)} {value!r}")
    if value <= lo:
        raise ConfigError(path, key, f"expected a number > {lo}, got {value}")
    return float(value)


def _check_str(path: str, key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise ConfigError(path, key, f"expected a string, got {_type_name(value)} {value!r}")
    if choices is not None and value not in choices:
        raise ConfigError(path, key, f"expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _check_table(path: str, key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(path, key, f"expected a table, got {_type_name(value)}")
    return value


def _unknown_keys(path: str, section: str, table: dict, known: set[str]) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(path, f"{section}.{key}" if section else key,
                              f"unknown key (known keys: {', '.join(sorted(known))})")


def _section(path: str, data: dict, name: str, cls: type, checks: dict) -> Any:
    table = _check_table(path, f"[{name}]", data.get(name, {}))
    _unknown_keys(path, name, table, {f.name for f in fields(cls)})
    values = {}
    for key, raw in table.items():
        values[key] = checks[key](path, f"{name}.{key}", raw)
    return cls(**values)


def _workers(path: str, key: str, value: Any) -> int:
    if value == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str):
        raise ConfigError(path, key, f"expected an integer >= 1 or \"auto\", got {value!r}")
    return _check_int(path, key, value, 1, 4096)


def _path(path: str, key: str, value: Any, allow_stderr: bool = False) -> str:
    """A file path; relative paths are taken from the directory the server
    starts in, and made absolute so a reload or an upgrade finds the same file."""
    text = _check_str(path, key, value)
    if not text or (allow_stderr and text == "-"):
        return text
    return os.path.abspath(text)


def _directory(path: str, key: str, value: Any) -> str:
    text = _path(path, key, value)
    if text and not os.path.isdir(text):
        raise ConfigError(path, key, f"{text} is not a directory")
    if text and not os.access(text, os.R_OK | os.X_OK):
        raise ConfigError(path, key, f"{text} is not readable by this user")
    return text


def _database_url(path: str, key: str, value: Any) -> str:
    text = _check_str(path, key, value)
    if text and not text.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(path, key, "expected 'sqlite:///relative/path.db', 'sqlite:////absolute/path.db' "
                                     "or 'postgresql://user:password@host/dbname'")
    if text.startswith("sqlite:///"):
        # made absolute now, so a reload or an upgrade finds the same file
        return "sqlite:///" + os.path.abspath(text[len("sqlite:///"):])
    return text


def _redis_url(path: str, key: str, value: Any) -> str:
    text = _check_str(path, key, value)
    if text:
        try:
            parse_url(text)
        except ValueError as exc:
            raise ConfigError(path, key, f"{exc} (expected 'redis://[[user]:password@]host[:port][/db]')") from None
    return text


def _channel_prefix(path: str, key: str, value: Any) -> str:
    text = _check_str(path, key, value)
    if not 1 <= len(text.encode()) <= 256:
        raise ConfigError(path, key, f"expected 1 to 256 bytes, got {len(text.encode())}")
    return text


def _addresses(path: str, key: str, value: Any) -> tuple[str, ...]:
    import ipaddress

    if not isinstance(value, list):
        raise ConfigError(path, key, f"expected an array of addresses, got {_type_name(value)}")
    out = []
    for i, item in enumerate(value):
        text = _check_str(path, f"{key}[{i}]", item)
        if text == "unix":  # every client of a unix-socket listener (a proxy's clients too)
            out.append(text)
            continue
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ConfigError(path, f"{key}[{i}]",
                              f'expected an IP address or network, or "unix", got {text!r}') from None
        out.append(text)
    return tuple(out)


def _trusted_proxies(path: str, key: str, value: Any) -> tuple:
    """``[http] forwarded_allow``: addresses and networks (parsed here, once),
    "unix" and "*"; an array, or one comma-separated string (as the command
    line's ``--forwarded-allow-ips`` gives it)."""
    import ipaddress

    if isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(path, key, f"expected an array of addresses or networks, got {_type_name(value)}")
    out = []
    for i, item in enumerate(items):
        where = f"{key}[{i}]"
        text = _check_str(path, where, item).strip()
        if text in ("unix", "*"):
            out.append(text)
            continue
        try:
            out.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ConfigError(path, where, 'expected an IP address or network (e.g. "10.0.0.0/8"), "unix" or "*", '
                                           f"got {text!r}") from None
    return tuple(out)


def _rlimit_nofile(path: str, key: str, value: Any) -> int:
    import resource

    n = _check_int(path, key, value, 0)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if n and hard != resource.RLIM_INFINITY and n > hard:
        raise ConfigError(path, key, f"{n} is above this process's hard open-file limit ({hard}); "
                                     f"raise it (ulimit -Hn, or LimitNOFILE= in the systemd unit) or lower the value")
    return n


def _backend(path: str, key: str, value: Any) -> str:
    name = _check_str(path, key, value, BACKENDS)
    if name == "uvloop":
        import importlib.util

        if importlib.util.find_spec("uvloop") is None:
            raise ConfigError(path, key, "backend 'uvloop' needs uvloop: pip install 'prefork[uvloop]'")
    return name


def _user(path: str, key: str, value: Any) -> str:
    import pwd

    name = _check_str(path, key, value)
    try:
        if name:
            pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(path, key, f"no such user: {name!r}") from None
    return name


def _group(path: str, key: str, value: Any) -> str:
    import grp

    name = _check_str(path, key, value)
    try:
        if name:
            grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except KeyError:
        raise ConfigError(path, key, f"no such group: {name!r}") from None
    return name


_SERVER_CHECKS = {
    "workers": _workers,
    "worker_connections": lambda p, k, v: _check_int(p, k, v, 1, 10_000_000),
    "backend": _backend,
    "accept_batch": lambda p, k, v: _check_int(p, k, v, 1, 65536),
    "shutdown_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "accept": lambda p, k, v: _check_str(p, k, v, ACCEPT_STRATEGIES),
    "mode": lambda p, k, v: _check_str(p, k, v, MODES),
    "pid_file": lambda p, k, v: _path(p, k, v),
    "worker_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "worker_rlimit_nofile": lambda p, k, v: _rlimit_nofile(p, k, v),
    "threads": lambda p, k, v: _check_int(p, k, v, 0, 1024),
    "queue": lambda p, k, v: _check_int(p, k, v, 1, 1 << 20),
    "threads_sched": lambda p, k, v: _check_str(p, k, v, THREAD_SCHEDS),
    "user": _user,
    "group": _group,
    "max_requests": lambda p, k, v: _check_int(p, k, v, 0),
    "max_requests_jitter": lambda p, k, v: _check_int(p, k, v, 0),
    "max_rss": lambda p, k, v: _check_int(p, k, v, 0, 1 << 30),
}

_STATIC_CHECKS = {
    "root": lambda p, k, v: _directory(p, k, v),
    "index": lambda p, k, v: _check_str(p, k, v),
    "cache_entries": lambda p, k, v: _check_int(p, k, v, 0, 1 << 20),
    "cache_valid": lambda p, k, v: _check_float(p, k, v, 0),
    "cache_max_file": lambda p, k, v: _check_int(p, k, v, 0, 1 << 30),
}

_DATABASE_CHECKS = {
    "url": lambda p, k, v: _database_url(p, k, v),
    "synchronous": lambda p, k, v: _check_str(p, k, v, ("full", "normal")),
    "timeout": lambda p, k, v: _check_float(p, k, v, 0),
}

_PUBSUB_CHECKS = {
    "url": _redis_url,
    "prefix": _channel_prefix,
}

_STATUS_CHECKS = {
    "allow": lambda p, k, v: _addresses(p, k, v),
}

def _seconds_or_off(path: str, key: str, value: Any) -> float:
    """A number of seconds, or 0 for off."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, key, f"expected a number of seconds (0: off), got {_type_name(value)} {value!r}")
    if value < 0:
        raise ConfigError(path, key, f"expected a number >= 0 (0: off), got {value}")
    return float(value)


def _origins(path: str, key: str, value: Any) -> tuple[str, ...]:
    """``[websocket] origins``: the Origin values allowed (empty: any), as
    "scheme://host[:port]" (compared exactly, without a trailing slash)."""
    if not isinstance(value, list):
        raise ConfigError(path, key, f"expected an array of origins, got {_type_name(value)} {value!r}")
    out = []
    for i, item in enumerate(value):
        text = _check_str(path, f"{key}[{i}]", item)
        if "://" not in text or text.endswith("/") or not text.isascii():
            raise ConfigError(path, f"{key}[{i}]", f"expected an origin like 'https://example.com', got {text!r}")
        out.append(text.lower())
    return tuple(out)


_WEBSOCKET_CHECKS = {
    "max_message": lambda p, k, v: _check_int(p, k, v, 1, 1 << 30),
    "idle_timeout": _seconds_or_off,
    "ping_interval": _seconds_or_off,
    "ping_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "queue": lambda p, k, v: _check_int(p, k, v, 0, 1 << 30),
    "origins": _origins,
    "publish_allow": lambda p, k, v: _addresses(p, k, v),
    "compression": lambda p, k, v: _check_str(p, k, v, COMPRESSIONS),
    "compression_level": lambda p, k, v: _check_int(p, k, v, 1, 9),
    "compression_window_bits": lambda p, k, v: _check_int(p, k, v, 9, 15),
}

_LOG_CHECKS = {
    "error_log": lambda p, k, v: _path(p, k, v, allow_stderr=True),
    "access_log": lambda p, k, v: _path(p, k, v, allow_stderr=True),
    "level": lambda p, k, v: _check_str(p, k, v, LOG_LEVELS),
}

_HTTP_CHECKS = {
    "max_request_line": lambda p, k, v: _check_int(p, k, v, 64),
    "max_header_bytes": lambda p, k, v: _check_int(p, k, v, 256),
    "max_headers": lambda p, k, v: _check_int(p, k, v, 1),
    "max_body": lambda p, k, v: _check_int(p, k, v, 0),
    "header_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "body_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "keepalive_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "keepalive_requests": lambda p, k, v: _check_int(p, k, v, 1),
    "send_timeout": lambda p, k, v: _check_float(p, k, v, 0),
    "high_water": lambda p, k, v: _check_int(p, k, v, 1024),
    "wsgi_body_buffer": lambda p, k, v: _check_int(p, k, v, 1024),
    "server_header": lambda p, k, v: _check_str(p, k, v),
    "forwarded_allow": _trusted_proxies,
}
