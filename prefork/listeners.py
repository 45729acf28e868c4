"""Listening sockets: creation (bind, options, backlog).

The master creates every listening socket before it forks; workers only
inherit them. Options set here that matter later: SO_REUSEADDR (restart
without waiting for TIME_WAIT), SO_REUSEPORT (one socket per worker slot) and
TCP_NODELAY, which Linux copies to every accepted socket.
"""

from __future__ import annotations

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
    sock = socket.socket(_family(address), socket.SOCK_STREAM)
    try:
        if address.family == "unix":
            _remove_stale_unix_socket(address.path)
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


def _remove_stale_unix_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def bound_address(sock: socket.socket) -> str:
    name = sock.getsockname()
    if isinstance(name, tuple):
        host, port = name[0], name[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return f"unix:{name}"
