"""A worker: one reactor serving the listening sockets it was given.

``run_worker`` is the entry point the master calls after fork (and the
foreground server calls directly). It returns the process exit status.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import signal
import socket
import threading
import time

from .apps import AppContext, build_router, default_routes
from .bus import make_bus
from .config import Config
from .connection import Acceptor, Connection
from .lifespan import LifespanError, cancel_tasks
from .logs import AccessLog, reopen_error_log
from .pool import ThreadPool
from .protocols.echo import EchoProtocol
from .protocols.websocket import GOING_AWAY, RESTART
from .dispatch import HttpServerContext, HttpServerProtocol
from .reactor import Reactor
from .scoreboard import (ACCEPTED, ACTIVE, BUSY, HANDLED, READING, READY, REQUESTS, SLOT, STOPPING, WAITING,
                         WRITING, Scoreboard)

log = logging.getLogger("prefork.worker")

# fds a worker needs besides connections: epoll, eventfd, the signal wakeup
# pair, the spare fd, stdio, log files, and headroom. fd_reserve adds what the
# config asks for on top.
FD_RESERVE = 32


def fd_reserve(config: Config) -> int:
    """The fds one worker (one reactor, with mode = "thread") holds besides its
    connections: FD_RESERVE, each static route's open-file cache (up to
    ``cache_entries`` files kept open for sendfile), and the database
    connections (one per pool thread plus the reactor's own; SQLite holds the
    database, its -wal and its -shm file each, PostgreSQL a socket)."""
    return sum(n for _, n in fd_reserve_parts(config))


def fd_reserve_parts(config: Config) -> list[tuple[str, int]]:
    """fd_reserve, part by part, each named as a config key for messages."""
    static_routes = sum(route.handler == "static" for route in config.routes or default_routes(config))
    database = 0
    if config.database.url:
        per_connection = 3 if config.database.url.startswith("sqlite:") else 1
        database = per_connection * (config.server.threads + 1)
    return [("for static.cache_entries" + (f" x {static_routes} static routes" if static_routes > 1 else ""),
             config.static.cache_entries * static_routes),
            ("for the database (server.threads + 1 connections)", database),
            ("reserved", FD_RESERVE)]


def fds_needed(config: Config) -> int:
    """Open files one worker process needs: its connections, its reserve and its
    listening sockets (mode = "thread": all the reactors of the one process)."""
    server = config.server
    reactors = server.workers if server.mode == "thread" else 1
    return reactors * (server.worker_connections + fd_reserve(config) + len(config.listen))


def _unblock_signals(_=None) -> None:
    """Undo the master's fork-time mask (the master's own signals are set to be ignored)."""
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
DRAIN_GRACE = 1.0  # graceful stop: seconds an idle connection may still send a request
APP_GRACE = 0.5    # graceful stop: seconds ASGI calls cut at the deadline get to see http.disconnect
WS_CLOSE_GRACE = 2.0  # a handed-over worker's WebSocket clients get 1012 this long before shutdown_timeout
LIFESPAN_GRACE = 1.0  # a lifespan shutdown gets this much on a fast stop, and at least this much on a graceful one

EXIT_OK = 0
EXIT_BOOT_ERROR = 3  # cannot start (as gunicorn's WORKER_BOOT_ERROR): do not respawn in a loop
EXIT_CRASH = 1       # an exception escaped a worker that was serving: respawned


class Supervisor:
    """The worker's line to its master: the scoreboard record it writes
    (heartbeat, counters) and the pipe on which it says it is ready."""

    def __init__(self, scoreboard: Scoreboard, record: int, ready_fd: int, master_pid: int,
                 bus_links: list[int] | None = None):
        self.scoreboard = scoreboard
        self.record = record
        self.ready_fd = ready_fd
        self.master_pid = master_pid
        self.bus_links = list(bus_links or ())  # fds of this process's ends of the master's bus relay

    def take_bus_link(self) -> int:
        """The fd of the next reactor's link to the master's bus relay (one per
        reactor: mode = "thread" has several), -1 if there is none."""
        return self.bus_links.pop(0) if self.bus_links else -1

    def ready(self) -> None:
        self.scoreboard.set(self.record, READY, 1)
        self.scoreboard.beat(self.record)
        try:
            # with the pid: the master may have given this record to another worker by the time it reads this
            os.write(self.ready_fd, self.record.to_bytes(4, "little") + os.getpid().to_bytes(4, "little"))
        except OSError as exc:
            log.warning("cannot tell the master this worker is ready: %s", exc)

    def update(self, worker: "Worker") -> None:
        board, rec = self.scoreboard, self.record
        board.beat(rec)
        for field, value in worker.counters().items():
            board.set(rec, field, value)

    def master_alive(self) -> bool:
        return os.getppid() == self.master_pid

    def stopping(self) -> bool:
        """Is this worker's QUIT the server's stop (else a hand-over: a reload, a recycle)?"""
        return self.scoreboard.get(self.record, STOPPING) == 1


class Worker:
    def __init__(self, config: Config, sockets: list[tuple[socket.socket, object]], index: int = 0,
                 supervisor: Supervisor | None = None, main_thread: bool = True):
        self.config = config
        self.index = index
        self.supervisor = supervisor
        self.main_thread = main_thread
        self.peers: list[Worker] = []  # the main thread's: the other reactors of this process (mode = "thread")
        self.group: list[Worker] = [self]  # every reactor of this process, whichever thread asks
        server = config.server
        self.max_connections = server.worker_connections
        self.accept_batch = server.accept_batch
        self.send_timeout = config.http.send_timeout
        self.high_water = config.http.high_water
        self.shutdown_timeout = server.shutdown_timeout
        if server.backend == "epoll":
            self.reactor = Reactor(setsize=server.worker_connections + FD_RESERVE + len(sockets))
            self.connection_class = Connection.for_worker(self)
            self.loop = None
        else:
            from .aio import AioConnection, AsyncioReactor

            self.reactor = AsyncioReactor(server.backend)
            self.connection_class = AioConnection.for_worker(self)
            self.loop = self.reactor.loop  # where ASGI apps (and their lifespans) run
        self.active = 0
        self.sending = 0  # epoll connections with output the kernel has not taken yet
        self.accepted = 0
        self.shed = 0
        self.draining = False
        self.fast_stop = False
        # the loop's phases: the ASGI apps' startup, serving (reactor.run), their end; a stop
        # signal stops the loop while it serves and cancels the startup or end task (_phase) otherwise
        self.serving = False
        self.ending = False
        self._phase = None
        self.accept_paused = False
        self.pool = None
        if server.threads:
            self.pool = ThreadPool(self.reactor.call_soon_threadsafe, server.threads, server.queue,
                                   name=f"worker{index}-pool", call_soon=self.reactor.call_soon,
                                   sched_batch=server.threads_sched == "batch")
        # the bus: the fan-out between the workers (and, with [pubsub] url, between the servers)
        self.bus = make_bus(config, self.reactor, supervisor.take_bus_link() if supervisor else -1)
        app = AppContext(config, supervisor.scoreboard if supervisor else None, self, bus=self.bus,
                         clock=self.reactor.clock)
        self.websockets = app.websockets  # the WebSocket routes' contexts: told how to close at a stop
        self.http = HttpServerContext(config.http, build_router(config, app), clock=self.reactor.clock)
        self.lifespans = app.lifespans
        if self.pool is not None:
            self.http.submit = self.pool.submit
            self.http.hand_back = self.reactor.call_soon_threadsafe
        if config.log.access_log:
            self.http.access_log = AccessLog(config.log.access_log)
        self.acceptors = []
        shared = config.server.accept == "shared"
        for sock, listen in sockets:
            # one socket polled by every worker: wake only one of them
            exclusive = shared or listen.address.family == "unix"
            if listen.protocol == "http":
                factory, ctx = HttpServerProtocol, self.http
            else:
                factory, ctx = EchoProtocol, None
            self.acceptors.append(Acceptor(self, sock, factory, ctx, listen.name or str(listen.address),
                                           exclusive))
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
            self.shed += 1
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
            self._interrupt(end_too=False)

    def counters(self) -> dict[int, int]:
        """This worker's (and its peer threads') numbers, by scoreboard field.

        O(1) on the epoll backend: the protocols count the connections reading
        a request or waiting for the pool, the connections count those with
        unsent output; only the asyncio backends look at each connection.
        BUSY is the pool threads running application code (one flag per thread)."""
        reading = writing = 0
        workers = self.group  # any thread may answer /status: count them all
        for worker in workers:
            ctx = worker.http
            reading += ctx.reading
            writing += ctx.pooled
            writing += worker.connection_class.count_sending()
        active = sum(w.active for w in workers)
        # a connection both sending and waiting for the pool is counted once
        writing = min(writing, active - reading)
        return {ACCEPTED: sum(w.accepted + w.shed for w in workers), HANDLED: sum(w.accepted for w in workers),
                ACTIVE: active, REQUESTS: sum(w.http.requests for w in workers), READING: reading,
                WRITING: writing, WAITING: active - reading - writing, SLOT: self.index,
                BUSY: sum(w.pool.busy() for w in workers if w.pool is not None)}

    def connections(self) -> list:
        """Every open connection (an O(table) scan: for shutdown and status, not hot paths)."""
        return self.connection_class.open_connections()

    # --- life cycle -------------------------------------------------------------------

    def _tick(self) -> None:
        self.http.refresh_date()
        self.reactor.call_later(1.0 - (time.time() % 1.0) + 0.001, Worker._tick, self)
        if self.http.access_log is not None:
            self.http.access_log.flush()
        supervisor = self.supervisor
        if supervisor is not None and self.main_thread:
            supervisor.update(self)
            if not self.draining and not supervisor.master_alive():
                log.error("worker %d: the master is gone; stopping", self.index)
                self.on_graceful_stop()
        if self.draining and self.reactor.clock() >= self._stop_deadline:
            if self.serving:
                log.warning("worker %d: shutdown_timeout reached, closing %d connections", self.index, self.active)
                self._interrupt(end_too=False)
            elif self._phase is not None and not self.ending and not self._phase.done():
                log.warning("worker %d: the ASGI lifespan startup did not finish by shutdown_timeout; cancelled",
                            self.index)
                self._phase.cancel()

    def on_fast_stop(self, signum: int = 0) -> None:
        for peer in self.peers:
            peer.reactor.call_soon_threadsafe(peer.on_fast_stop)
        self.fast_stop = True
        self._interrupt(end_too=True)

    def on_reopen(self, signum: int = 0) -> None:
        reopen_error_log()
        for worker in (self, *self.peers):
            if worker.http.access_log is not None:
                worker.reactor.call_soon_threadsafe(worker.http.access_log.reopen)

    def on_graceful_stop(self, signum: int = 0) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish."""
        for peer in self.peers:
            peer.reactor.call_soon_threadsafe(peer.on_graceful_stop)
        if self.draining:
            return
        self.draining = True
        self.http.draining = True  # every response from now on says Connection: close
        now = self.reactor.clock()
        self._stop_deadline = now + self.shutdown_timeout
        for acceptor in self.acceptors:
            acceptor.stop()
        # Idle connections get a short grace instead of an instant close: one
        # accepted a moment ago has its first request on the way, and closing
        # it now would reset that request.
        grace = now + min(DRAIN_GRACE, self.config.http.keepalive_timeout)
        self._websockets_going()
        for conn in self.connections():
            conn.drain(grace)
        if self.active == 0:
            self._interrupt(end_too=False)

    def _websockets_going(self) -> None:
        """How WebSocket connections end: at the server's stop, close 1001
        (going away) now; in a worker handed over (reload, recycle), they
        serve on and get 1012 (service restart) ``WS_CLOSE_GRACE`` before
        ``shutdown_timeout`` (time for the close handshake)."""
        handover = self.supervisor is not None and self.main_thread and not self.supervisor.stopping()
        for ctx in self.websockets:
            if handover:
                ctx.stop_code = RESTART
                ctx.stop_at = self._stop_deadline - min(WS_CLOSE_GRACE, self.shutdown_timeout / 2)
            else:
                ctx.stop_code = GOING_AWAY
                ctx.stop_at = 0.0

    def _interrupt(self, end_too: bool) -> None:
        """Stop the loop if it serves; else, with ``end_too`` (a fast stop),
        cancel the apps' startup or end. A graceful stop lets a startup
        finish (until ``shutdown_timeout``, see _tick); run() then does not
        serve and the lifespan shutdown follows, as under uvicorn. Never a
        second loop.stop(): uvloop schedules each as a callback, and one left
        over ends the next run."""
        if self.serving:
            self.serving = False
            self.reactor.stop()
        elif self._phase is not None and end_too:
            self._phase.cancel()

    def run(self) -> int:
        reactor = self.reactor
        if self.main_thread:
            reactor.add_signal_handler(signal.SIGTERM, self.on_fast_stop)
            reactor.add_signal_handler(signal.SIGINT, self.on_fast_stop)
            reactor.add_signal_handler(signal.SIGQUIT, self.on_graceful_stop)
            reactor.add_signal_handler(signal.SIGUSR1, self.on_reopen)
            # The master forks with signals blocked: unblock them from inside
            # the running loop (uvloop only starts reading its signal pipe
            # then; a signal delivered before that would be lost).
            reactor.call_later(0, _unblock_signals)
        self._tick()
        try:
            if not self._start_apps():
                return EXIT_OK if self.fast_stop or self.draining else EXIT_BOOT_ERROR
            if self.draining or self.fast_stop:  # a stop came during the startup: end without serving
                log.info("worker %d: stopped during the ASGI lifespan startup; not serving", self.index)
                return EXIT_OK
            for acceptor in self.acceptors:
                acceptor.start()
            if self.supervisor is not None and self.main_thread:
                self.supervisor.ready()
            self.serving = True
            reactor.run()
        finally:
            self.serving = False
            for conn in self.connections():
                conn.close()
            for acceptor in self.acceptors:
                acceptor.stop()
            if self.loop is not None:
                self._end_apps()
            if self._spare_fd >= 0:
                os.close(self._spare_fd)
            if self.http.access_log is not None:
                self.http.access_log.close()
            if self.pool is not None:
                self.pool.shutdown()
            self.bus.close()
            reactor.close()
        return EXIT_OK

    # --- ASGI apps: lifespan, and their tasks at the end --------------------------------

    def _start_apps(self) -> bool:
        """The lifespan startup of every ASGI app, on the loop, before this
        worker accepts or says it is ready. False: do not serve (the startup
        failed, or a stop signal came first)."""
        if not self.lifespans:
            return True
        self._phase = self.loop.create_task(self.lifespans.startup())
        try:
            self._run_to_end(self._phase)
        except LifespanError as exc:
            log.error("worker %d cannot start: %s", self.index, exc)
            return False
        except asyncio.CancelledError:
            log.info("worker %d: stopped during the ASGI lifespan startup", self.index)
            return False
        finally:
            self._phase = None
        return True

    def _end_apps(self) -> None:
        """Run ``_stop_apps`` on the loop; a fast stop meanwhile cuts it short."""
        self.ending = True
        loop = self.loop
        self._phase = loop.create_task(self._stop_apps())
        try:
            self._run_to_end(self._phase)
        except asyncio.CancelledError:  # TERM during the end: cancel whatever still runs
            self._run_to_end(loop.create_task(self._cancel_apps()))

    async def _cancel_apps(self) -> None:
        await self.lifespans.cancel()
        await cancel_tasks(asyncio.all_tasks(self.loop) - {asyncio.current_task()})

    def _run_to_end(self, task: asyncio.Task) -> None:
        """Run the loop until ``task`` is done (its result or exception is
        raised); a stop left over from serving does not cut it short."""
        while True:
            try:
                self.loop.run_until_complete(task)
                return
            except RuntimeError:
                if task.done():
                    raise

    async def _stop_apps(self) -> None:
        """After the loop has stopped and the connections are closed: the ASGI
        calls still running (a response cut at the deadline, a background
        task after the response) get until the graceful deadline -- APP_GRACE
        if it has passed, to see http.disconnect -- and are cancelled then (at
        once on a fast stop); then the lifespan shutdown, bounded by what is
        left of ``shutdown_timeout`` (LIFESPAN_GRACE on a fast stop); then
        whatever else runs on the loop (what the app started on its own) is
        cancelled."""
        from .asgi import is_call

        loop, clock = self.loop, self.reactor.clock
        graceful = self.draining and not self.fast_stop
        grace = max(self._stop_deadline - clock(), APP_GRACE) if graceful else 0.0
        cancelled = await cancel_tasks({task for task in asyncio.all_tasks(loop) if is_call(task)}, grace)
        if cancelled:
            log.warning("worker %d: %d ASGI call(s) cancelled", self.index, cancelled)
        if self.lifespans.started:
            await self.lifespans.shutdown(max(self._stop_deadline - clock(), LIFESPAN_GRACE) if graceful
                                          else LIFESPAN_GRACE)
        await self._cancel_apps()


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


def _fd_limit(config: Config, needed: int, index: int) -> None:
    wanted = config.server.worker_rlimit_nofile or needed
    soft, _ = raise_nofile_limit(wanted)
    if soft < needed:
        log.warning("worker %d: open-file limit %d is below worker_connections + reserve (%d); "
                    "accepts will be shed when it is reached", index, soft, needed)


def _drop_privileges(config: Config) -> None:
    """Become ``server.user`` (when the master runs as root): after the worker
    is built -- its sockets, logs and pool are the master's to give -- and
    before it serves anyone."""
    if config.server.user and os.getuid() == 0:
        from . import privileges

        privileges.drop(privileges.resolve(config.server.user, config.server.group))


def run_worker(config: Config, sockets: list, index: int = 0, supervisor: Supervisor | None = None) -> int:
    """Entry point after fork: serve ``sockets`` until told to stop."""
    _fd_limit(config, config.server.worker_connections + fd_reserve(config) + len(sockets), index)
    try:
        worker = Worker(config, sockets, index, supervisor)
        _drop_privileges(config)
    except OSError as exc:
        log.error("worker %d cannot start: %s", index, exc)
        return EXIT_BOOT_ERROR
    return worker.run()


def run_worker_threads(config: Config, sockets: list, supervisor: Supervisor | None = None) -> int:
    """``mode = "thread"``: ``workers`` reactors as threads of this one process,
    reactor *i* on slot *i*'s sockets (``sockets`` holds each slot's in turn)."""
    n = config.server.workers
    per = len(config.listen)
    _fd_limit(config, n * (config.server.worker_connections + fd_reserve(config)) + len(sockets), 0)
    try:
        workers = [Worker(config, sockets[i * per:(i + 1) * per], i, supervisor, main_thread=(i == 0))
                   for i in range(n)]
        _drop_privileges(config)
    except OSError as exc:
        log.error("worker threads cannot start: %s", exc)
        return EXIT_BOOT_ERROR
    main = workers[0]
    main.peers = workers[1:]
    for w in workers:
        w.group = workers
    threads = [threading.Thread(target=w.run, name=f"reactor-{w.index}", daemon=True) for w in workers[1:]]
    for t in threads:
        t.start()
    code = main.run()
    for t in threads:
        t.join(main.shutdown_timeout + 5)
    return code

