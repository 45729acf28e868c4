"""The master's listening sockets: it owns them for its whole life.

Slots: worker *i* of a generation serves slot *i*. With ``accept =
"reuseport"`` each slot has its own SO_REUSEPORT socket per ``[[listen]]``,
created here; a replacement worker (after a crash, a reload or an upgrade)
takes over the same socket, so no connection waiting in an accept queue is
ever reset. With ``accept = "shared"`` every worker polls slot 0's socket with
EPOLLEXCLUSIVE.

Sockets also come from a previous master (USR2, see ``upgrade.py``) and from
systemd's socket activation.
"""

from __future__ import annotations

import dataclasses
import logging
import socket

from .config import Config, ListenConfig
from .listeners import BindError, bind, bound_address, check_free
from .systemd import listen_fds
from .upgrade import take_inherited

log = logging.getLogger("prefork.master")


def enable_tcp_migrate_req() -> bool:
    """Turn on net.ipv4.tcp_migrate_req, so that closing one SO_REUSEPORT
    socket moves its queued connections to another socket of the group."""
    path = "/proc/sys/net/ipv4/tcp_migrate_req"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
        with open(path, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


class Sockets:
    """address -> slot -> socket, for every ``[[listen]]`` of the configurations in use."""

    def __init__(self) -> None:
        self.by_address: dict[str, dict[int, socket.socket]] = {}

    def adopt_inherited(self, config: Config) -> None:
        """Take sockets from a previous master (USR2) or from systemd."""
        for address, slot, sock in take_inherited():
            self.by_address.setdefault(address, {})[slot] = sock
        for name, sock in listen_fds():
            listen = self._match_activated(config, name, sock)
            if listen is None:
                log.warning("socket activation: no [[listen]] matches fd %d (name %r, %s); closing it",
                            sock.fileno(), name, bound_address(sock))
                sock.close()
                continue
            log.info("socket activation: %s from systemd (name %r)", listen.address, name)
            self.by_address.setdefault(str(listen.address), {})[0] = sock

    @staticmethod
    def _match_activated(config: Config, name: str, sock: socket.socket) -> ListenConfig | None:
        for listen in config.listen:
            if name and listen.name == name:
                return listen
        address = bound_address(sock)
        for listen in config.listen:
            if str(listen.address) == address:
                return listen
        return None

    def _listener_slots(self, config: Config, slots: int, listen: ListenConfig) -> int:
        if listen.address.family == "unix" or config.server.accept == "shared":
            return 1
        existing = self.by_address.get(str(listen.address), {}).get(0)
        if existing is not None and not existing.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT):
            return 1  # an activated socket without ReusePort=yes: shared
        return slots if config.server.mode == "process" else config.server.workers

    def ensure(self, config: Config, slots: int) -> list[socket.socket]:
        """Bind whatever (address, slot) sockets ``config`` needs and we lack.
        Returns the new ones (so a failed reload can close them)."""
        created = []
        # ports our own sockets hold: a probe would find those in use
        ours = {s.getsockname()[1] for per_slot in self.by_address.values() for s in per_slot.values()
                if s.family != socket.AF_UNIX}
        try:
            for listen in config.listen:
                per_slot = self.by_address.setdefault(str(listen.address), {})
                if not per_slot and listen.address.port not in ours:
                    # not inherited (USR2, systemd): SO_REUSEPORT would let us
                    # listen beside another server; refuse instead
                    check_free(listen)
                target = listen
                base = per_slot.get(0)
                if base is not None and listen.address.family != "unix":
                    # more slots beside an activated socket: bind where it is bound
                    host, port = base.getsockname()[:2]
                    target = dataclasses.replace(listen, address=dataclasses.replace(
                        listen.address, host=host, port=port))
                for slot in range(self._listener_slots(config, slots, listen)):
                    if slot not in per_slot:
                        reuseport = listen.address.family != "unix"
                        sock = bind(target, reuseport=reuseport)
                        per_slot[slot] = sock
                        created.append((str(listen.address), slot, sock))
        except BindError:
            for address, slot, sock in created:
                self.by_address[address].pop(slot, None)
                sock.close()
            raise
        return [c[2] for c in created]

    def for_slot(self, config: Config, slot: int) -> list[tuple[socket.socket, ListenConfig]]:
        out = []
        for listen in config.listen:
            per_slot = self.by_address[str(listen.address)]
            out.append((per_slot[slot] if slot in per_slot else per_slot[0], listen))
        return out

    def for_worker(self, config: Config, slot: int) -> list[tuple[socket.socket, ListenConfig]]:
        """What the worker process of ``slot`` serves (in mode "thread", every thread's slot)."""
        if config.server.mode == "thread":
            out = []
            for thread_slot in range(config.server.workers):
                out += self.for_slot(config, thread_slot)
            return out
        return self.for_slot(config, slot)

    def close_unused(self, config: Config, slots: int, in_use: set[int]) -> None:
        """Close sockets that neither ``config`` (with ``slots`` workers) nor a
        live worker (``in_use``: ids of its sockets) uses. With tcp_migrate_req
        on, their queued connections move to a sibling."""
        needed = {id(s) for slot in range(slots) for s, _ in self.for_worker(config, slot)} | in_use
        for address in list(self.by_address):
            per_slot = self.by_address[address]
            for slot in list(per_slot):
                sock = per_slot[slot]
                if id(sock) not in needed:
                    log.info("closing listener %s slot %d", address, slot)
                    del per_slot[slot]
                    sock.close()
            if not per_slot:
                del self.by_address[address]

    def close_all(self, keep: set[int] = frozenset()) -> None:
        """Close every socket whose fd is not in ``keep`` (a worker after fork: all but its own)."""
        for per_slot in self.by_address.values():
            for sock in per_slot.values():
                if sock.fileno() not in keep:
                    sock.close()
