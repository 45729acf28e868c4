"""Listening sockets: creation (bind, options, backlog).

The master creates every listening socket before it forks; workers only
inherit them. Options set here that matter later: SO_REUSEADDR (restart
without waiting for TIME_WAIT), SO_REUSEPORT (one socket per worker slot) and
TCP_NODELAY, which Linux copies to every accepted socket.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from .config import Address, ListenConfig


class BindError(Exception):
    pass


def _family(address: Address) -> int:
    return {"inet": socket.AF_INET, "inet6": socket.AF_INET6, "unix": socket.AF_UNIX}[address.family]


def bind(listen: ListenConfig, reuseport: bool = False) -> socket.socket:
    """Create, bind and listen one non-blocking socket for ``listen``."""
    address = listen.address
    if address.family == "unix":
        _remove_stale_unix_socket(address.path)
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        if address.family == "unix":
            target = address.path
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuseport:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.family == "inet6":
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            target = (address.host, address.port)
        sock.bind(target)
        sock.listen(listen.backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {address}: {exc.strerror or exc}") from None
    return sock


def check_free(listen: ListenConfig) -> None:
    """Raise BindError when another process already listens on ``listen``'s
    address. SO_REUSEPORT would let us bind beside it (a second server
    started by mistake would take half the connections): so probe with a
    socket without it first. Unix sockets are checked in bind()."""
    address = listen.address
    if address.family == "unix" or address.port == 0:
        return
    probe = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is no obstacle
        if address.family == "inet6":
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind((address.host, address.port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise BindError(f"cannot listen on {address}: address already in use "
                            "(another process listens on it)") from None
        # anything else: bind() reports it
    finally:
        probe.close()


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a socket file nobody listens on (left by a crash); refuse one
    a live server listens on."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except (BlockingIOError, InterruptedError):
        pass  # a full backlog: someone listens
    except OSError:  # ECONNREFUSED: stale
        try:
            os.unlink(path)
        except OSError:
            pass  # bind() says why
        return
    finally:
        probe.close()
    raise BindError(f"cannot listen on unix:{path}: address already in use (another process listens on it)")


def bound_address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{name}"
