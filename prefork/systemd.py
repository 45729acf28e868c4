"""systemd integration without libsystemd: the notify protocol (sd_notify)
and socket activation (sd_listen_fds_with_names)."""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("prefork.master")

SD_LISTEN_FDS_START = 3


class Notifier:
    """Sends ``KEY=VALUE`` datagrams to ``$NOTIFY_SOCKET`` when it is set;
    otherwise every call does nothing."""

    def __init__(self, env: dict[str, str] | None = None):
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET", "")
        self.sock: socket.socket | None = None
        if self.address:
            target = self.address
            if target.startswith("@"):
                target = "\0" + target[1:]  # abstract namespace
            self._target = target
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        usec = env.get("WATCHDOG_USEC", "")
        wpid = env.get("WATCHDOG_PID", "")
        self.watchdog_interval = 0.0
        if usec.isdigit() and int(usec) > 0 and (not wpid or wpid == str(os.getpid())):
            self.watchdog_interval = int(usec) / 1e6 / 2  # ping at half the interval, as sd_watchdog_enabled advises

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def notify(self, *lines: str) -> None:
        if self.sock is None:
            return
        try:
            self.sock.sendto("\n".join(lines).encode(), self._target)
        except OSError as exc:
            log.warning("sd_notify to %s failed: %s", self.address, exc)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def listen_fds(env: dict[str, str] | None = None, unset: bool = True) -> list[tuple[str, socket.socket]]:
    """Sockets passed by systemd (``LISTEN_PID``/``LISTEN_FDS``/``LISTEN_FDNAMES``),
    as (name, socket) pairs; empty when none were passed to this process."""
    env = os.environ if env is None else env
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    names = env.get("LISTEN_FDNAMES", "")
    if unset:
        for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
            env.pop(key, None)
    if not pid.isdigit() or int(pid) != os.getpid() or not count.isdigit():
        return []
    name_list = names.split(":") if names else []
    out = []
    for i in range(int(count)):
        fd = SD_LISTEN_FDS_START + i
        try:
            sock = socket.socket(fileno=fd)
        except OSError as exc:
            log.warning("socket activation: fd %d is not a socket: %s", fd, exc)
            continue
        os.set_inheritable(fd, False)
        out.append((name_list[i] if i < len(name_list) else "", sock))
    return out
