"""The master process (the arbiter).

It owns every listening socket for its whole life, forks the workers, and
supervises them. Modelled on nginx's ``ngx_process_cycle.c`` and gunicorn's
``arbiter.py``: signal handlers do nothing but wake the loop (the reactor's
wakeup fd); the loop handles each signal, reaps with ``waitpid(WNOHANG)``,
aborts workers whose heartbeat stopped, and starts the workers that are
missing.

The listening sockets are in ``sockets.py``, the pid file in ``pidfile.py``,
the USR2 upgrade in ``upgrade.py``, what runs in a forked worker in
``workerproc.py``, what each signal does in ``signals.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from typing import Callable

from . import __version__, reloader
from .busrelay import BusRelay, Links
from .checks import load_checked
from .config import Config, ConfigError
from .listeners import BindError
from .pidfile import PidFile
from .reactor import READABLE, Reactor
from .recycle import Recycler
from .scoreboard import READY, STOPPING, Scoreboard
from .signals import SignalActions
from .sockets import Sockets, enable_tcp_migrate_req
from .systemd import Notifier
from .upgrade import INHERIT_ENV, start_new_master
from .worker import EXIT_BOOT_ERROR
from .workerproc import MANAGED_SIGNALS, WorkerProc, fork_worker, set_proctitle

log = logging.getLogger("prefork.master")

MAX_RECORDS = 8192
TICK = 0.25                       # how often the master checks heartbeats and missing workers
KILL_GRACE = 3.0                  # SIGABRT, then SIGKILL this much later
BACKOFF_MAX = 10.0


class Master(SignalActions):
    def __init__(self, config: Config, argv: list[str], load: Callable[[], Config] | None = None,
                 watch: bool = False):
        self.config = config
        self.argv = argv                      # how this master was started, for USR2
        # what a reload reads: the file again (the cli's: with the command line's overrides)
        self.load = load or (lambda: load_checked(config.path))
        self.watcher = reloader.Watcher() if watch else None  # --reload: the app's source files
        self.prev_modules: reloader.Forgotten | None = None  # the old generation's code, until a reload completes
        self.pid = os.getpid()
        self.generation = 1
        self.last_generation = 1              # generation numbers are never reused, even after a rollback
        self.slots = config.server.workers if config.server.mode == "process" else 1
        self.workers: dict[int, WorkerProc] = {}
        self.sockets = Sockets()
        self.scoreboard = Scoreboard(MAX_RECORDS)
        self.notifier = Notifier()
        self.reactor = Reactor(setsize=256)
        self.ready_r, self.ready_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.pidfile = PidFile(config.server.pid_file, self.pid)
        self.stopping = ""                    # "", "fast" or "graceful"
        self.stop_deadline = 0.0
        self.winched = False
        self.exit_code = 0
        self.upgrade_pid = 0
        # started by a USR2 upgrade: the old master, our parent (systemd's main process until we are ready)
        self.upgraded_from = os.getppid() if os.environ.get(INHERIT_ENV) else 0
        self.prev_config: Config | None = None
        self.prev_generation = 0
        self.reloading = False
        self.announced_ready = False
        self.slot_failures: dict[int, int] = {}
        self.slot_next_spawn: dict[int, float] = {}
        self.next_watchdog = 0.0
        self.migrate_req = False
        self.recycler = Recycler()            # max_requests, max_rss
        self.relay = BusRelay(self.reactor)   # the bus between the workers: a link per worker reactor

    def close_unused_sockets(self) -> None:
        """Close sockets that neither the configuration nor a live worker uses."""
        in_use: set[int] = set()
        for wp in self.workers.values():
            in_use |= wp.fds
        self.sockets.close_unused(self.config, self.slots, in_use)

    # --- workers ------------------------------------------------------------------------

    def spawn(self, slot: int) -> WorkerProc | None:
        record = self.scoreboard.allocate()
        socks = self.sockets.for_worker(self.config, slot)
        keep = {s.fileno() for s, _ in socks}
        generation = self.generation
        # the worker's links to the bus relay: one per reactor (none with Redis as the bus)
        reactors = self.config.server.workers if self.config.server.mode == "thread" else 1
        try:
            links = self.relay.links(0 if self.config.pubsub.url else reactors)
        except OSError as exc:
            self.scoreboard.release(record)
            log.error("cannot make the bus links of a worker: %s", exc)
            return None
        try:
            pid = fork_worker(self.config, socks, slot, record, generation, self.scoreboard, self.ready_w, self.pid,
                              lambda: self._in_child(keep, links))
        except OSError as exc:
            links.close()
            self.scoreboard.release(record)
            log.error("fork failed: %s", exc)
            return None
        self.relay.attach(links, pid)
        wp = WorkerProc(pid, slot, generation, record, {id(s) for s, _ in socks})
        self.workers[pid] = wp
        log.info("started worker process %d (slot %d, generation %d)", pid, slot, generation)
        return wp

    def _in_child(self, keep: set[int], links: Links) -> list[int]:
        """Right after fork, in the worker: drop the master's reactor, pipe,
        notify socket, bus relay and every listening socket this worker does
        not serve; the fds of the worker's bus links."""
        self.reactor.close_after_fork()
        os.close(self.ready_r)
        self.sockets.close_all(keep)
        self.notifier.close()
        return self.relay.drop_in_child(links)

    def live(self, slot: int) -> list[WorkerProc]:
        return [wp for wp in self.workers.values() if wp.slot == slot and not wp.retiring]

    def manage_workers(self) -> None:
        """Start a worker for every slot that has none (with back-off for
        slots that keep crashing)."""
        if self.stopping or self.winched:
            return
        now = time.monotonic()
        for slot in range(self.slots):
            if self.live(slot):
                continue
            if self.slot_next_spawn.get(slot, 0.0) > now:
                continue
            self.spawn(slot)

    def retire(self, wp: WorkerProc, sig: int = signal.SIGQUIT) -> None:
        if not wp.retiring:
            wp.retiring = True
            wp.quit_sent = time.monotonic()
        self._kill(wp.pid, sig)

    def _kill(self, pid: int, sig: int) -> None:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.upgrade_pid:
                self._upgrade_child_exited(status)
                continue
            wp = self.workers.pop(pid, None)
            if wp is None:
                continue
            if self.scoreboard.get(wp.record, READY):
                wp.ready = True  # it served (its ready message may still be in the pipe)
            self.scoreboard.release(wp.record)
            self._worker_exited(wp, status)

    def _worker_exited(self, wp: WorkerProc, status: int) -> None:
        if os.WIFEXITED(status):
            code = os.WEXITSTATUS(status)
            how = f"exited with code {code}"
        else:
            code = -1
            how = f"was killed by signal {os.WTERMSIG(status)}"
        if self.recycler.exited(wp, how, time.monotonic()):
            return  # a recycling successor that never took over: the worker it was to replace serves on
        if wp.retiring or self.stopping or self.winched:
            log.info("worker process %d (slot %d) %s", wp.pid, wp.slot, how)
        else:
            log.error("worker process %d (slot %d) %s; respawning", wp.pid, wp.slot, how)
        if code == EXIT_BOOT_ERROR and not wp.ready and not wp.retiring and not self.stopping:
            if self.reloading and wp.generation == self.generation and self.prev_config is not None:
                self._reload_failed(f"worker process {wp.pid} of the new configuration could not start")
            else:
                log.error("worker process %d could not start (exit code %d); stopping", wp.pid, code)
                self.exit_code = EXIT_BOOT_ERROR
                self.stop("fast")
            return
        if not wp.retiring and not self.stopping:
            # crash-loop back-off: a worker that dies soon after it started
            if time.monotonic() - wp.started < 5.0:
                n = self.slot_failures.get(wp.slot, 0) + 1
                self.slot_failures[wp.slot] = n
                self.slot_next_spawn[wp.slot] = time.monotonic() + min(BACKOFF_MAX, 0.05 * 2 ** n)
            else:
                self.slot_failures.pop(wp.slot, None)
                self.slot_next_spawn.pop(wp.slot, None)
        self.close_unused_sockets()
        if self.stopping and not self.workers:
            self.reactor.stop()

    def on_ready_pipe(self) -> None:
        while True:
            try:
                data = os.read(self.ready_r, 4096)
            except BlockingIOError:
                break
            if not data:
                break
            # (record, pid) pairs: a dead worker's message never names the
            # worker that got its record since
            for i in range(0, len(data) - 7, 8):
                record = int.from_bytes(data[i:i + 4], "little")
                wp = self.workers.get(int.from_bytes(data[i + 4:i + 8], "little"))
                if wp is not None and wp.record == record:
                    self._worker_ready(wp)

    def _worker_ready(self, wp: WorkerProc) -> None:
        if wp.retiring or wp.generation != self.generation:
            # a worker of a failed or rolled-back reload (or one being
            # stopped): it must not retire a current worker
            log.info("worker process %d (generation %d) is ready, but not wanted: ignored", wp.pid, wp.generation)
            return
        wp.ready = True
        # The new worker of this slot accepts now: retire older ones of the slot.
        for other in list(self.workers.values()):
            if other.slot == wp.slot and other.generation < wp.generation and not other.retiring:
                self.retire(other)
        current = [w for w in self.workers.values() if not w.retiring]
        if len(current) >= self.slots and all(w.ready for w in current):
            if self.reloading:
                self.reloading = False
                self.prev_config = self.prev_modules = None
                log.info("reload complete: generation %d serving", self.generation)
            elif self.announced_ready:
                return
            ready = ["READY=1", f"STATUS={self.status_line()}"]
            if self.upgraded_from and not self.announced_ready:
                ready.insert(0, f"MAINPID={self.pid}")  # the new master of an upgrade: systemd follows it now
            self.announced_ready = True
            self.notifier.notify(*ready)

    def status_line(self) -> str:
        return f"{self.slots} workers, generation {self.generation}"

    def _reload_refused(self, reason: str) -> None:
        """A HUP that did not start a reload still completes the notify
        protocol: under Type=notify-reload, systemd waits for RELOADING=1 with a
        fresh MONOTONIC_USEC= and then READY=1 (or times the reload out)."""
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        self.notifier.notify("READY=1", f"STATUS=reload failed: {reason}")

    def murder_stuck_workers(self) -> None:
        now = time.monotonic()
        timeout = self.config.server.worker_timeout
        for wp in list(self.workers.values()):
            if wp.abort_sent:
                if now - wp.abort_sent > KILL_GRACE:
                    log.error("worker process %d did not exit after SIGABRT; SIGKILL", wp.pid)
                    self._kill(wp.pid, signal.SIGKILL)
                continue
            if wp.retiring and wp.quit_sent and now - wp.quit_sent > self.config.server.shutdown_timeout + KILL_GRACE:
                log.error("worker process %d still running %.0fs after QUIT; SIGKILL", wp.pid, now - wp.quit_sent)
                wp.abort_sent = now
                self._kill(wp.pid, signal.SIGKILL)
                continue
            silent = self.scoreboard.silent_for(wp.record)
            if silent > timeout:
                log.error("worker process %d (slot %d) silent for %.1fs (worker_timeout %.0fs); SIGABRT",
                          wp.pid, wp.slot, silent, timeout)
                wp.abort_sent = now
                self._kill(wp.pid, signal.SIGABRT)

    # --- reload, upgrade, stop ---------------------------------------------------------------------

    def reload(self) -> None:
        forgotten = reloader.forget(self.config)  # the app's modules are read again (new code, new generation)
        if not self._reload():
            forgotten.restore()
        elif self.reloading:
            self.prev_modules = forgotten
        if self.watcher is not None:
            self.watcher.scan(self.config)

    def _reload(self) -> bool:
        try:
            new = self.load()
        except ConfigError as exc:
            log.error("reload failed, keeping the current configuration: %s", exc)
            self._reload_refused(str(exc))
            return False
        if new.server.mode != self.config.server.mode:
            log.error("reload failed, keeping the current configuration: %s: server.mode cannot change on reload "
                      "(restart the server)", new.path)
            self._reload_refused("server.mode cannot change on reload")
            return False
        slots = new.server.workers if new.server.mode == "process" else 1
        if new.database != self.config.database:
            from .apps.db import DatabaseError

            try:
                self.setup_database(new)
            except DatabaseError as exc:
                log.error("reload failed, keeping the current configuration: %s", exc)
                self._reload_refused(str(exc))
                return False
        try:
            self.sockets.ensure(new, slots)
        except BindError as exc:
            log.error("reload failed, keeping the current configuration: %s", exc)
            self._reload_refused(str(exc))
            return False
        self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        self.prev_config, self.prev_generation = self.config, self.generation
        self.config = new
        self.last_generation += 1
        self.generation = self.last_generation
        self.slots = slots
        self.reloading = True
        self.slot_failures.clear()
        self.slot_next_spawn.clear()
        log.info("reloading: generation %d with %d workers", self.generation, slots)
        for wp in list(self.workers.values()):
            if wp.slot >= slots and not wp.retiring:
                self.retire(wp)  # its slot is gone
        # Old workers keep serving their slots until the new worker of the
        # slot reports ready; _worker_ready retires them then.
        for slot in range(slots):
            if self.spawn(slot) is None:
                self._reload_failed("cannot fork a worker process")
                return False
        return True

    def _reload_failed(self, reason: str) -> None:
        log.error("reload failed, keeping the previous configuration: %s", reason)
        failed = self.generation
        self.config = self.prev_config
        self.generation = self.prev_generation
        self.slots = self.config.server.workers if self.config.server.mode == "process" else 1
        self.prev_config = None
        self.reloading = False
        if self.prev_modules is not None:
            self.prev_modules.restore()  # a respawned worker of the old generation runs the old code
            self.prev_modules = None
        for wp in list(self.workers.values()):
            if wp.generation == failed:
                self.retire(wp, signal.SIGTERM)
        self.close_unused_sockets()  # those bound for the new configuration
        self.notifier.notify("READY=1", f"STATUS=reload failed: {reason}")

    def upgrade(self) -> None:
        """USR2: start a new master from the current program, handing it our sockets."""
        if self.upgrade_pid:
            log.warning("USR2: an upgrade (pid %d) is already running", self.upgrade_pid)
            return
        try:
            self.pidfile.move_aside()
        except OSError as exc:
            log.error("USR2: cannot rename the pid file: %s", exc)
            return
        try:
            pid = start_new_master(self.sockets.by_address, self.argv, MANAGED_SIGNALS)
        except OSError as exc:
            self.pidfile.restore()
            log.error("USR2: fork failed: %s; this master goes on serving", exc)
            return
        self.upgrade_pid = pid
        log.info("USR2: started new master process %d; send QUIT to this master (%d) when it serves",
                 pid, self.pid)

    def _upgrade_child_exited(self, status: int) -> None:
        log.error("new master process %d exited (%s); this master goes on serving", self.upgrade_pid,
                  f"code {os.WEXITSTATUS(status)}" if os.WIFEXITED(status) else f"signal {os.WTERMSIG(status)}")
        self.upgrade_pid = 0
        self.pidfile.restore()
        if not self.stopping:  # main process again, if the new master had taken over (or died as main)
            self.notifier.notify(f"MAINPID={self.pid}", "READY=1", f"STATUS={self.status_line()}")

    def stop(self, how: str) -> None:
        if self.stopping == "fast" or (self.stopping and how == "graceful"):
            return
        self.stopping = how
        if self.upgrade_pid:
            pass  # no STOPPING=1: the new master (USR2) goes on as systemd's main process
        elif self.upgraded_from and os.getppid() == self.upgraded_from:
            self.notifier.notify(f"MAINPID={self.upgraded_from}")  # rollback: the old master goes on
        else:
            self.notifier.notify("STOPPING=1")
        timeout = self.config.server.shutdown_timeout + KILL_GRACE if how == "graceful" else 5.0
        self.stop_deadline = time.monotonic() + timeout
        sig = signal.SIGQUIT if how == "graceful" else signal.SIGTERM
        log.info("%s stop: %d workers", how, len(self.workers))
        for wp in self.workers.values():
            wp.retiring = True
            self.scoreboard.set(wp.record, STOPPING, 1)  # not a hand-over: WebSocket clients get 1001 at once
            self._kill(wp.pid, sig)
        if not self.workers:
            self.reactor.stop()

    def tick(self) -> None:
        self.reactor.call_later(TICK, Master.tick, self)
        self.reap()
        if self.stopping:
            if time.monotonic() > self.stop_deadline:
                for wp in self.workers.values():
                    log.error("worker process %d did not stop in time; SIGKILL", wp.pid)
                    self._kill(wp.pid, signal.SIGKILL)
                self.stop_deadline = time.monotonic() + 5.0
            if not self.workers:
                self.reactor.stop()
            return
        self.murder_stuck_workers()
        self.manage_workers()
        self.recycler.tick(self, time.monotonic(), paused=self.reloading or self.winched)
        changed = self.watcher.changed() if self.watcher is not None else ""
        if changed:
            log.info("--reload: %s changed", changed)
            self.reload()
        if self.notifier.watchdog_interval and time.monotonic() >= self.next_watchdog:
            self.notifier.notify("WATCHDOG=1")
            self.next_watchdog = time.monotonic() + self.notifier.watchdog_interval

    # --- main ----------------------------------------------------------------------------------------

    @staticmethod
    def setup_database(config: Config) -> None:
        """Create and seed the database before any worker uses it (raises DatabaseError)."""
        if config.database.url:
            from .apps.db import open_backend

            db = config.database
            open_backend(db.url, db.synchronous, db.timeout).setup()
            if config.server.user and os.getuid() == 0 and db.url.startswith("sqlite:///"):
                from . import privileges
                from .apps.db import sqlite_path

                path = sqlite_path(db.url)
                # the workers run as server.user: the files the master made are theirs
                privileges.hand_over([path, path + "-wal", path + "-shm"],
                                     privileges.resolve(config.server.user, config.server.group))

    def run(self) -> int:
        self.pidfile.check(upgrading=INHERIT_ENV in os.environ)
        set_proctitle(f"prefork-server: master process {' '.join(self.argv)}".rstrip())
        # Handlers first: once a socket listens, clients (and systemd) may act
        # on the server, and a TERM from then on must be a clean stop, not
        # the default action. Signals that come before the loop runs wait in
        # the wakeup fd and are handled on its first turn.
        reactor = self.reactor
        for sig in MANAGED_SIGNALS:
            reactor.add_signal_handler(sig, self.on_signal)
        for note in self.config.notes:
            log.warning("%s: %s", self.config.path, note)
        if self.config.server.user and os.getuid() != 0:
            log.warning("server.user %r is ignored: the master does not run as root (as nginx's user "
                        "directive)", self.config.server.user)
        self.setup_database(self.config)
        self.sockets.adopt_inherited(self.config)
        self.sockets.ensure(self.config, self.slots)
        self.close_unused_sockets()
        for address, per_slot in sorted(self.sockets.by_address.items()):
            log.info("listening on %s (%d socket%s)", address, len(per_slot), "s" if len(per_slot) > 1 else "")
        if self.config.server.accept == "reuseport":
            self.migrate_req = enable_tcp_migrate_req()
            if not self.migrate_req:
                log.warning("net.ipv4.tcp_migrate_req is not available: connections queued on a slot's socket "
                            "are reset if that slot is removed (TTOU, fewer workers)")
        reactor.add(self.ready_r, READABLE, Master.on_ready_pipe, self)
        if self.watcher is not None:
            self.watcher.scan(self.config)
        self.pidfile.write()
        log.info("prefork-server %s: master process %d, %d workers (%s, accept = %s, backend = %s)",
                 __version__, self.pid, self.slots if self.config.server.mode == "process" else 1,
                 self.config.server.mode, self.config.server.accept, self.config.server.backend)
        self.manage_workers()
        self.tick()
        try:
            reactor.run()
        finally:
            self.pidfile.remove()
            self.sockets.close_all()
            self.relay.close()
            for wp in self.workers.values():
                self._kill(wp.pid, signal.SIGKILL)
            reactor.close()
            self.notifier.close()
        log.info("master process %d exiting", self.pid)
        return self.exit_code
