"""A worker process as the master sees it: its ``WorkerProc`` record, the
fork, and what runs in the child between ``fork()`` and ``run_worker()``
(dropping the master's signal handling, the parent-death signal, the exit code).
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import NoReturn

from .config import Config, ListenConfig
from .scoreboard import GENERATION, PID, READY, Scoreboard
from .worker import EXIT_BOOT_ERROR, EXIT_CRASH, Supervisor, run_worker, run_worker_threads

log = logging.getLogger("prefork.master")

MANAGED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR1,
                   signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU, signal.SIGCHLD)
# the master's signals that mean nothing to a worker
WORKER_IGNORED_SIGNALS = (signal.SIGHUP, signal.SIGUSR2, signal.SIGWINCH, signal.SIGTTIN, signal.SIGTTOU)


def set_proctitle(title: str) -> None:
    try:
        import setproctitle
        setproctitle.setproctitle(title)
    except ImportError:  # pragma: no cover - a runtime dependency, but titles are cosmetic
        pass


def _set_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class WorkerProc:
    __slots__ = ("pid", "slot", "generation", "record", "started", "ready", "retiring", "abort_sent", "fds",
                 "quit_sent")

    def __init__(self, pid: int, slot: int, generation: int, record: int, fds: set[int]):
        self.pid = pid
        self.slot = slot
        self.generation = generation
        self.record = record
        self.started = time.monotonic()
        self.ready = False
        self.retiring = False
        self.abort_sent = 0.0
        self.quit_sent = 0.0
        self.fds = fds

    def __repr__(self) -> str:
        return f"<worker pid={self.pid} slot={self.slot} gen={self.generation}>"


def fork_worker(config: Config, socks: list[tuple[socket.socket, ListenConfig]], slot: int, record: int,
                generation: int, scoreboard: Scoreboard, ready_w: int, master_pid: int,
                drop_master: Callable[[], list[int]]) -> int:
    """Fork the worker process of ``slot``; returns its pid (in the master: the
    child never returns). Raises OSError if fork fails."""
    sys.stdout.flush()
    sys.stderr.flush()
    # Block our signals across fork: until the child has dropped the
    # master's handlers, a signal to it would be written to the master's
    # wakeup fd and read by the master as its own.
    # What the master has allocated so far is the worker's too, shared
    # copy-on-write: freeze it so the worker's garbage collector never
    # walks (and so never writes to, and copies) those pages.
    gc.freeze()
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, MANAGED_SIGNALS)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        raise
    if pid == 0:  # the worker (signals stay blocked until it has its own handlers)
        _worker_main(config, socks, slot, record, generation, scoreboard, ready_w, master_pid, drop_master)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return pid


def _worker_main(config: Config, socks: list[tuple[socket.socket, ListenConfig]], slot: int, record: int,
                generation: int, scoreboard: Scoreboard, ready_w: int, master_pid: int,
                drop_master: Callable[[], list[int]]) -> NoReturn:
    """The child after fork (the master's signals still blocked): run the
    worker of ``slot`` and exit with its code. ``drop_master`` closes what
    the master holds and the worker does not use (its reactor, the other
    listening sockets...) and returns the fds of the worker's bus links."""
    code = 1
    try:
        _set_pdeathsig(signal.SIGTERM)
        if os.getppid() != master_pid:  # the master died before prctl took effect
            os._exit(0)
        signal.set_wakeup_fd(-1)
        for sig in MANAGED_SIGNALS:
            signal.signal(sig, signal.SIG_IGN if sig in WORKER_IGNORED_SIGNALS else signal.SIG_DFL)
        bus_links = drop_master()
        scoreboard.set(record, PID, os.getpid())
        scoreboard.set(record, GENERATION, generation)
        supervisor = Supervisor(scoreboard, record, ready_w, master_pid, bus_links)
        set_proctitle(f"prefork-server: worker process {slot}")
        if config.server.mode == "thread":
            code = run_worker_threads(config, socks, supervisor)
        else:
            code = run_worker(config, socks, slot, supervisor)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        # a failure before the worker first said ready is a boot
        # failure; later, a crash, respawned like a kill -9
        booted = scoreboard.get(record, READY)
        try:
            log.critical("worker process %d (slot %d): unhandled exception%s", os.getpid(), slot,
                         "" if booted else " while starting", exc_info=True)
        except BaseException:
            traceback.print_exc()
        code = EXIT_CRASH if booted else EXIT_BOOT_ERROR
    finally:
        logging.shutdown()
        os._exit(code)
