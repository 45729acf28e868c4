"""A worker: one reactor serving the listening sockets it was given.

``run_worker`` is the entry point the master calls after fork (and the
foreground server calls directly). It returns the process exit status.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import time

from .apps.builtin import default_routes
from .config import Config
from .connection import Acceptor, Connection
from .protocols.echo import EchoProtocol
from .protocols.http import HttpContext, HttpProtocol
from .reactor import Reactor

log = logging.getLogger("prefork.worker")

# fds a worker needs besides connections: epoll, eventfd, the signal wakeup
# pair, the spare fd, stdio, log files, and headroom.
FD_RESERVE = 32

EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # cannot start (as gunicorn's WORKER_BOOT_ERROR): do not respawn in a loop


class Worker:
    def __init__(self, config: Config, sockets: list[tuple[socket.socket, object]], index: int = 0):
        self.config = config
        self.index = index
        server = config.server
        self.max_connections = server.worker_connections
        self.accept_batch = server.accept_batch
        self.send_timeout = config.http.send_timeout
        self.high_water = config.http.high_water
        self.shutdown_timeout = server.shutdown_timeout
        self.reactor = Reactor(setsize=server.worker_connections + FD_RESERVE + len(sockets))
        self.rbuf = bytearray(65536)
        self.rbufs = [self.rbuf]
        self.rview = memoryview(self.rbuf)
        self.active = 0
        self.accepted = 0
        self.draining = False
        self.accept_paused = False
        self.http = HttpContext(config.http, default_routes(), clock=self.reactor.clock)
        self.acceptors = []
        for sock, listen in sockets:
            if listen.protocol == "http":
                factory, ctx = HttpProtocol, self.http
            else:
                factory, ctx = EchoProtocol, None
            self.acceptors.append(Acceptor(self, sock, factory, ctx, listen.name or str(listen.address)))
        self._spare_fd = self._open_spare()
        self._stop_deadline = 0.0

    # --- fds ----------------------------------------------------------------------

    @staticmethod
    def _open_spare() -> int:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return -1

    def out_of_fds(self, sock: socket.socket, exc: OSError) -> None:
        """EMFILE/ENFILE: free the spare fd, accept and close the pending
        connection so the listener stops being readable, reopen the spare.
        Without this, level-triggered epoll would report the listener ready
        forever and the loop would spin at 100% CPU."""
        log.warning("worker %d: accept failed: %s; shedding a pending connection", self.index, exc.strerror)
        if self._spare_fd >= 0:
            os.close(self._spare_fd)
            self._spare_fd = -1
        try:
            fd, _ = sock._accept()
            os.close(fd)
        except OSError:
            pass
        self._spare_fd = self._open_spare()
        if self._spare_fd < 0:
            # Still no fd: stop polling the listeners for a moment.
            self.pause_accepting()
            self.reactor.call_later(0.1, Worker._resume_after_emfile, self)

    def _resume_after_emfile(self) -> None:
        self._spare_fd = self._open_spare()
        self.resume_accepting()

    def pause_accepting(self) -> None:
        if not self.accept_paused:
            self.accept_paused = True
            for acceptor in self.acceptors:
                acceptor.stop()

    def resume_accepting(self) -> None:
        if self.accept_paused and not self.draining:
            self.accept_paused = False
            for acceptor in self.acceptors:
                acceptor.start()

    def connection_closed(self) -> None:
        self.active -= 1
        if self.accept_paused and self.active < self.max_connections and self._spare_fd >= 0:
            self.resume_accepting()
        if self.draining and self.active == 0:
            self.reactor.stop()

    def connections(self) -> list[Connection]:
        """Every open connection (an O(table) scan: for shutdown, not hot paths)."""
        return [d for d in self.reactor._data if isinstance(d, Connection)]

    # --- life cycle -------------------------------------------------------------------

    def _tick(self) -> None:
        self.http.refresh_date()
        self.reactor.call_later(1.0 - (time.time() % 1.0) + 0.001, Worker._tick, self)
        if self.draining and self.reactor.clock() >= self._stop_deadline:
            log.warning("worker %d: shutdown_timeout reached, closing %d connections", self.index, self.active)
            self.reactor.stop()

    def on_fast_stop(self, signum: int) -> None:
        self.reactor.stop()

    def on_graceful_stop(self, signum: int = 0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish."""
        if self.draining:
            return
        self.draining = True
        self._stop_deadline = self.reactor.clock() + self.shutdown_timeout
        for acceptor in self.acceptors:
            acceptor.stop()
        for conn in self.connections():
            if conn.proto.state == 0 and conn.wbuf is None:
                conn.close()
        if self.active == 0:
            self.reactor.stop()

    def run(self) -> int:
        reactor = self.reactor
        reactor.add_signal_handler(signal.SIGTERM, self.on_fast_stop)
        reactor.add_signal_handler(signal.SIGINT, self.on_fast_stop)
        reactor.add_signal_handler(signal.SIGQUIT, self.on_graceful_stop)
        for acceptor in self.acceptors:
            acceptor.start()
        self._tick()
        try:
            reactor.run()
        finally:
            for conn in self.connections():
                conn.close()
            for acceptor in self.acceptors:
                acceptor.stop()
            if self._spare_fd >= 0:
                os.close(self._spare_fd)
            reactor.close()
        return EXIT_OK


def raise_nofile_limit(needed: int) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE towards ``needed`` (never above the hard
    limit). Returns the (soft, hard) pair in force afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit to %d: %s", target, exc)
    return soft, hard


def run_worker(config: Config, sockets: list, index: int = 0) -> int:
    """Entry point after fork: serve ``sockets`` until told to stop."""
    needed = config.server.worker_connections + FD_RESERVE + len(sockets)
    soft, _ = raise_nofile_limit(needed)
    if soft < needed:
        log.warning("worker %d: open-file limit %d is below worker_connections + reserve (%d); "
                    "accepts will be shed when it is reached", index, soft, needed)
    try:
        worker = Worker(config, sockets, index)
    except OSError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        return EXIT_BOOT_ERROR
    return worker.run()

