"""What the master does for each signal it manages (``MANAGED_SIGNALS``):
``SignalActions``, the part of ``Master`` that the loop calls with a signal
that woke it (the handlers themselves only wake the loop). nginx's signals:
TERM/INT fast stop, QUIT graceful stop, HUP reload, USR1 reopen the logs,
USR2 upgrade, WINCH stop the workers (the master stays), TTIN/TTOU one worker
more or less; CHLD reaps.
"""

from __future__ import annotations

import logging
import os
import signal

from .listeners import BindError
from .logs import hand_to_workers, reopen_error_log

log = logging.getLogger("prefork.master")


class SignalActions:
    """``Master``'s signal actions: ``on_signal`` calls ``handle_<name>``.
    They use its state (``config``, ``slots``, ``workers``, ``sockets``,
    ``winched``) and its actions (``reap``, ``manage_workers``, ``retire``,
    ``stop``, ``reload``, ``upgrade``, ``_kill``)."""

    def on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum != signal.SIGCHLD:
            log.info("received %s", name)
        handler = getattr(self, "handle_" + name[3:].lower(), None)
        if handler is not None:
            handler()

    def handle_chld(self) -> None:
        self.reap()
        self.manage_workers()

    def handle_term(self) -> None:
        self.stop("fast")

    handle_int = handle_term

    def handle_quit(self) -> None:
        self.stop("graceful")

    def handle_hup(self) -> None:
        if self.winched:
            self.winched = False
            log.info("HUP after WINCH: starting workers again")
        self.reload()

    def handle_usr1(self) -> None:
        reopen_error_log()
        server = self.config.server
        if server.user and os.getuid() == 0:
            # the workers reopen as server.user: make the new files theirs first
            from . import privileges

            ident = privileges.resolve(server.user, server.group)
            hand_to_workers(self.config.log, ident.uid, ident.gid)
        for wp in self.workers.values():
            self._kill(wp.pid, signal.SIGUSR1)

    def handle_usr2(self) -> None:
        self.upgrade()

    def handle_winch(self) -> None:
        log.info("gracefully stopping all workers (the master keeps running)")
        self.winched = True
        for wp in list(self.workers.values()):
            self.retire(wp)

    def handle_ttin(self) -> None:
        if self.config.server.mode == "thread":
            log.warning("TTIN: mode = \"thread\" has one worker process; change workers and reload")
            return
        try:
            self.sockets.ensure(self.config, self.slots + 1)
        except BindError as exc:
            log.error("TTIN: %s", exc)
            return
        self.slots += 1
        log.info("TTIN: %d workers", self.slots)
        self.manage_workers()

    def handle_ttou(self) -> None:
        if self.config.server.mode == "thread" or self.slots <= 1:
            log.warning("TTOU: keeping %d worker(s)", self.slots)
            return
        self.slots -= 1
        log.info("TTOU: %d workers", self.slots)
        for wp in list(self.workers.values()):
            if wp.slot >= self.slots:
                self.retire(wp)
