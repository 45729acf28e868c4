"""The binary upgrade (USR2), nginx's way: the master forks and execs a new
master from the current program, handing it every listening socket through
the environment (``PREFORK_INHERIT="address#slot=fd;..."``); the new master
takes them over on start. The old one serves until it is sent QUIT (the
master keeps the pid file as ``<pid_file>.oldbin`` meanwhile, see
``pidfile.py``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from collections.abc import Iterable

log = logging.getLogger("prefork.master")

INHERIT_ENV = "PREFORK_INHERIT"   # "address#slot=fd;..." handed to a new master on USR2


def take_inherited() -> list[tuple[str, int, socket.socket]]:
    """The (address, slot, socket) a previous master handed to us; the
    variable is removed, so our own workers and upgrades do not see it."""
    out = []
    spec = os.environ.pop(INHERIT_ENV, "")
    for item in filter(None, spec.split(";")):
        key, _, fd = item.rpartition("=")
        address, _, slot = key.rpartition("#")
        try:
            sock = socket.socket(fileno=int(fd))
        except OSError as exc:
            log.warning("inherited fd %s for %s is unusable: %s", fd, address, exc)
            continue
        os.set_inheritable(sock.fileno(), False)
        out.append((address, int(slot), sock))
    return out


def start_new_master(sockets: dict[str, dict[int, socket.socket]], argv: list[str],
                     signals: Iterable[signal.Signals]) -> int:
    """Fork and exec ``python -m prefork.cli *argv`` with ``sockets`` (address ->
    slot -> socket) inherited; returns its pid. ``signals``: the master's
    handled signals, blocked across the fork and reset to their default in the
    child before exec. Raises OSError if the fork fails (nothing is left changed)."""
    spec = []
    for address, per_slot in sockets.items():
        for slot, sock in per_slot.items():
            os.set_inheritable(sock.fileno(), True)
            spec.append(f"{address}#{slot}={sock.fileno()}")
    env = dict(os.environ, **{INHERIT_ENV: ";".join(spec)})
    env.pop("LISTEN_PID", None)
    env.pop("WATCHDOG_PID", None)  # systemd's watchdog is the new master's too (unset: its own pid)
    args = [sys.executable, "-m", "prefork.cli", *argv]
    sys.stdout.flush()
    sys.stderr.flush()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        pid = os.fork()
    except OSError:  # undo it all, as fork_worker() does
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        _not_inheritable(sockets)
        raise
    if pid == 0:
        try:
            signal.set_wakeup_fd(-1)
            for sig in signals:
                signal.signal(sig, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
            os.execve(sys.executable, args, env)
        finally:
            os._exit(127)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    _not_inheritable(sockets)
    return pid


def _not_inheritable(sockets: dict[str, dict[int, socket.socket]]) -> None:
    for per_slot in sockets.values():
        for sock in per_slot.values():
            os.set_inheritable(sock.fileno(), False)
