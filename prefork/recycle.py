"""Worker recycling, for apps that leak: ``[server] max_requests`` (plus a
per-worker jitter, as gunicorn's) and ``max_rss`` (MiB, as granian's
``--workers-max-rss``).

The master asks the ``Recycler`` on each tick of its loop (signals only wake
the loop; the work is done here). A worker past either limit is replaced the
way a reload replaces it: the master forks a successor into the same slot
(``Master.spawn``: the slot's own SO_REUSEPORT socket, or the shared one), the
two poll that socket side by side, and once the successor has reported ready
the old worker gets QUIT and finishes what it has in flight within
``shutdown_timeout``. One recycle per slot at a time; a successor that dies
before it is ready leaves the old worker serving, and the slot backs off.
"""

from __future__ import annotations

import logging
import os
import random
import signal
from typing import Protocol

from .config import Config, ServerConfig
from .scoreboard import READY, REQUESTS, Scoreboard
from .workerproc import WorkerProc

log = logging.getLogger("prefork.master")

RSS_EVERY = 1.0          # seconds between two readings of the workers' RSS (the workers' heartbeat period)
RSS_FRESH = 10.0         # a worker this young past max_rss: the limit is below what a worker needs at start
BACKOFF_FIRST = 1.0      # seconds before a slot tries again after a failed successor, doubling ...
BACKOFF_MAX = 60.0       # ... up to this
PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / (1 << 20)


class Host(Protocol):
    """What the recycler needs of the master."""

    config: Config
    generation: int
    workers: dict[int, WorkerProc]
    scoreboard: Scoreboard

    def spawn(self, slot: int) -> WorkerProc | None: ...

    def retire(self, wp: WorkerProc, sig: int = signal.SIGQUIT) -> None: ...


def request_limit(max_requests: int, jitter: int, rng: random.Random) -> int:
    """A worker's own request limit: ``max_requests + randint(0, jitter)``
    (gunicorn's), so that workers started together do not all recycle at
    once; 0 (no limit) when ``max_requests`` is 0."""
    if max_requests <= 0:
        return 0
    return max_requests + (rng.randint(0, jitter) if jitter > 0 else 0)


def rss_mib(pid: int, proc: str = "/proc") -> float | None:
    """Resident memory of ``pid`` in MiB (``/proc/<pid>/statm``), None if it is gone."""
    try:
        with open(f"{proc}/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE_MIB
    except (OSError, IndexError, ValueError):
        return None


def _ready(host: Host, wp: WorkerProc) -> bool:
    """Has ``wp`` reported ready? Its scoreboard flag too, not only the
    master's ``ready``: the master ignores the message of a worker that came
    up while a reload was under way, and a reload that then fails leaves it
    serving in the restored generation."""
    return wp.ready or bool(host.scoreboard.get(wp.record, READY))


class _Pending:
    __slots__ = ("old", "successor", "hasty")

    def __init__(self, old: WorkerProc, successor: WorkerProc, hasty: bool):
        self.old = old
        self.successor = successor
        self.hasty = hasty  # the old worker passed max_rss young: keep the slot's back-off growing


class Recycler:
    def __init__(self, rng: random.Random | None = None):
        self.rng = rng or random.Random()
        self.limits: dict[int, int] = {}        # pid -> that worker's request limit
        self.pending: dict[int, _Pending] = {}  # slot -> the recycle under way there
        self.failures: dict[int, int] = {}      # slot -> successors in a row that did not come up
        self.next_try: dict[int, float] = {}    # slot -> no recycle there before this (monotonic)
        self.next_rss = 0.0
        self.recycled = 0

    def tick(self, host: Host, now: float, paused: bool = False) -> None:
        """The master's tick: hand over the slots whose successor is ready,
        then start a successor for each worker past a limit (not while
        ``paused``: a reload under way, or WINCH)."""
        self._settle(host)
        server = host.config.server
        if paused or not (server.max_requests or server.max_rss):
            return
        rss_due = bool(server.max_rss) and now >= self.next_rss
        if rss_due:
            self.next_rss = now + RSS_EVERY
        for wp in list(host.workers.values()):
            slot = wp.slot
            if (wp.retiring or wp.generation != host.generation or slot in self.pending
                    or self.next_try.get(slot, 0.0) > now or not _ready(host, wp)):
                continue
            reason, by_rss = self._past_limit(server, host.scoreboard, wp, rss_due)
            if not reason:
                continue
            log.info("worker %d (pid %d) %s: replacing it", slot, wp.pid, reason)
            hasty = by_rss and now - wp.started < RSS_FRESH
            if hasty:
                # each successor would start as big: recycle, but less and less often
                log.warning("worker %d passed max_rss %.1fs after it started: if a worker starts that big, "
                            "raise max_rss (next recycle of this slot in %.0fs at the earliest)",
                            slot, now - wp.started, self._back_off(slot, now))
            successor = host.spawn(slot)
            if successor is None:  # fork failed (logged): try again later
                self._back_off(slot, now)
            else:
                self.pending[slot] = _Pending(wp, successor, hasty)

    def _past_limit(self, server: ServerConfig, scoreboard: Scoreboard, wp: WorkerProc,
                    rss_due: bool) -> tuple[str, bool]:
        """Why ``wp`` is to be replaced ("" if it is not), and whether it is its memory."""
        if server.max_requests:
            limit = self.limits.get(wp.pid)
            if limit is None:
                limit = self.limits[wp.pid] = request_limit(server.max_requests, server.max_requests_jitter,
                                                            self.rng)
            served = scoreboard.get(wp.record, REQUESTS)
            if served >= limit:
                return f"served {served} requests (max_requests {limit})", False
        if rss_due:
            rss = rss_mib(wp.pid)
            if rss is not None and rss > server.max_rss:
                return f"uses {rss:.0f} MiB (max_rss {server.max_rss} MiB)", True
        return "", False

    def _settle(self, host: Host) -> None:
        for slot, p in list(self.pending.items()):
            old, successor = p.old, p.successor
            if old.pid not in host.workers or old.retiring or successor.retiring:
                # the old worker died, or a reload, TTOU or stop retired one of
                # them: the master's own path goes on from here
                del self.pending[slot]
            elif _ready(host, successor):
                del self.pending[slot]
                if not p.hasty:
                    self.failures.pop(slot, None)
                self.recycled += 1
                host.retire(old)

    def exited(self, wp: WorkerProc, how: str, now: float) -> bool:
        """``wp`` was reaped. True if it was a successor that died before it
        took over its slot: the old worker keeps serving, and the master
        must not treat it as a crash or a boot failure."""
        self.limits.pop(wp.pid, None)
        p = self.pending.get(wp.slot)
        if p is None or p.successor is not wp or wp.retiring:
            return False
        del self.pending[wp.slot]
        delay = self._back_off(wp.slot, now)
        log.error("worker process %d (slot %d), the successor of worker process %d, %s before it took over; "
                  "%d keeps serving, next try in %.0fs", wp.pid, wp.slot, p.old.pid, how, p.old.pid, delay)
        return True

    def _back_off(self, slot: int, now: float) -> float:
        n = self.failures[slot] = self.failures.get(slot, 0) + 1
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (n - 1))
        self.next_try[slot] = now + delay
        return delay
