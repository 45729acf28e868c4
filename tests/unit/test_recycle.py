"""Worker recycling, the pure parts: the per-worker request limit (jitter),
the config keys, reading RSS, and the Recycler's decisions against a fake
master (tests/e2e/test_recycle_e2e.py has the real processes)."""

from __future__ import annotations

import os
import random
import signal

import pytest

from prefork.config import ConfigError, load
from prefork.recycle import BACKOFF_FIRST, Recycler, request_limit, rss_mib
from prefork.scoreboard import READY, REQUESTS, Scoreboard
from prefork.workerproc import WorkerProc

LISTEN = '\n[[listen]]\naddress = "127.0.0.1:8080"\n'


def test_request_limit_without_jitter_is_max_requests():
    rng = random.Random(1)
    assert [request_limit(100, 0, rng) for _ in range(20)] == [100] * 20
    assert request_limit(0, 50, rng) == 0  # off, whatever the jitter


def test_request_limit_jitter_spans_zero_to_jitter_inclusive():
    rng = random.Random(7)
    seen = {request_limit(1000, 5, rng) for _ in range(500)}
    assert seen == set(range(1000, 1006))  # randint(0, jitter): both ends reachable, nothing outside


def test_config_keys_default_off_and_read(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(LISTEN)
    server = load(str(path)).server
    assert (server.max_requests, server.max_requests_jitter, server.max_rss) == (0, 0, 0)
    path.write_text("[server]\nmax_requests = 1000\nmax_requests_jitter = 50\nmax_rss = 512\n" + LISTEN)
    server = load(str(path)).server
    assert (server.max_requests, server.max_requests_jitter, server.max_rss) == (1000, 50, 512)


@pytest.mark.parametrize("line,key,fragment", [
    ("max_requests = -1", "server.max_requests", ">= 0"),
    ('max_requests = "1000"', "server.max_requests", "integer"),
    ("max_requests = 10.5", "server.max_requests", "integer"),
    ("max_requests_jitter = -5", "server.max_requests_jitter", ">= 0"),
    ("max_requests_jitter = true", "server.max_requests_jitter", "integer"),
    ("max_rss = -1", "server.max_rss", "from 0"),
    ('max_rss = "512M"', "server.max_rss", "integer"),
])
def test_bad_values_are_config_errors_naming_the_key(tmp_path, line, key, fragment):
    path = tmp_path / "s.toml"
    path.write_text(f"[server]\n{line}\n" + LISTEN)
    with pytest.raises(ConfigError) as info:
        load(str(path))
    assert info.value.key == key
    assert str(info.value).startswith(f"{path}: {key}: ") and fragment in str(info.value)


def test_rss_mib_reads_statm(tmp_path):
    (tmp_path / "42").mkdir()
    pages = (300 << 20) // os.sysconf("SC_PAGE_SIZE")
    (tmp_path / "42" / "statm").write_text(f"999999 {pages} 100 1 0 2000 0\n")
    assert rss_mib(42, str(tmp_path)) == pytest.approx(300)
    assert rss_mib(43, str(tmp_path)) is None  # gone
    assert 1 < rss_mib(os.getpid()) < 100_000  # this very process, from the real /proc


# --- the Recycler against a fake master ------------------------------------------------------


class FakeServer:
    def __init__(self, **kw):
        self.max_requests = kw.get("max_requests", 0)
        self.max_requests_jitter = kw.get("max_requests_jitter", 0)
        self.max_rss = kw.get("max_rss", 0)


class FakeConfig:
    def __init__(self, **kw):
        self.server = FakeServer(**kw)


class FakeMaster:
    """The Host protocol: what the recycler uses of the master."""

    def __init__(self, slots: int = 2, **kw):
        self.config = FakeConfig(**kw)
        self.generation = 1
        self.workers: dict[int, WorkerProc] = {}
        self.scoreboard = Scoreboard(64)
        self.next_pid = 1000
        self.spawned: list[int] = []
        self.retired: list[int] = []
        for slot in range(slots):
            self.spawn(slot).ready = True
        self.spawned.clear()

    def spawn(self, slot: int) -> WorkerProc:
        self.next_pid += 1
        wp = WorkerProc(self.next_pid, slot, self.generation, self.scoreboard.allocate(), set())
        self.workers[wp.pid] = wp
        self.spawned.append(slot)
        return wp

    def retire(self, wp: WorkerProc, sig: int = signal.SIGQUIT) -> None:
        wp.retiring = True
        self.retired.append(wp.pid)

    def serve(self, wp: WorkerProc, n: int) -> None:
        self.scoreboard.set(wp.record, REQUESTS, n)

    def reap(self, wp: WorkerProc, recycler: Recycler, now: float) -> bool:
        del self.workers[wp.pid]
        return recycler.exited(wp, "exited with code 3", now)


def test_worker_past_max_requests_gets_one_successor_then_retires_once_it_is_ready():
    master = FakeMaster(max_requests=100)
    rec = Recycler(random.Random(0))
    w0, w1 = master.workers.values()
    master.serve(w0, 99)
    rec.tick(master, 0.0)
    assert master.spawned == []  # below the limit
    master.serve(w0, 100)
    rec.tick(master, 0.25)
    assert master.spawned == [0]
    successor = master.workers[max(master.workers)]
    master.serve(w0, 500)
    rec.tick(master, 0.5)
    assert master.spawned == [0] and master.retired == []  # one recycle per slot; the old one serves on
    successor.ready = True
    rec.tick(master, 0.75)
    assert master.retired == [w0.pid] and rec.recycled == 1
    assert master.spawned == [0]  # a retiring worker is not recycled again
    assert w1.pid not in master.retired


def test_successor_that_dies_before_ready_leaves_the_old_worker_and_backs_off():
    master = FakeMaster(slots=1, max_requests=10)
    rec = Recycler()
    [old] = master.workers.values()
    master.serve(old, 10)
    rec.tick(master, 0.0)
    first = master.workers[max(master.workers)]
    assert master.reap(first, rec, 0.1)  # the recycler takes it: not the master's crash or boot-failure path
    rec.tick(master, 0.2)
    assert master.spawned == [0] and master.retired == [] and not old.retiring
    rec.tick(master, 0.1 + BACKOFF_FIRST + 0.01)
    assert master.spawned == [0, 0]  # tried again after the back-off
    second = master.workers[max(master.workers)]
    assert master.reap(second, rec, 2.0)
    rec.tick(master, 2.0 + BACKOFF_FIRST + 0.01)
    assert master.spawned == [0, 0]  # the back-off doubled
    rec.tick(master, 2.0 + 2 * BACKOFF_FIRST + 0.01)
    assert master.spawned == [0, 0, 0]


def test_an_ordinary_worker_exit_is_left_to_the_master():
    master = FakeMaster(slots=1, max_requests=10)
    rec = Recycler()
    [old] = master.workers.values()
    assert not master.reap(old, rec, 0.0)


def test_paused_during_a_reload_and_retired_elsewhere():
    master = FakeMaster(slots=1, max_requests=10)
    rec = Recycler()
    [old] = master.workers.values()
    master.serve(old, 50)
    rec.tick(master, 0.0, paused=True)
    assert master.spawned == []
    rec.tick(master, 0.25)
    successor = master.workers[max(master.workers)]
    old.retiring = True  # a reload (or TTOU) retired it meanwhile: the master's path goes on
    successor.ready = True
    rec.tick(master, 0.5)
    assert master.retired == [] and rec.recycled == 0 and not rec.pending
    # and a successor retired by a stop or reload is no failure of the recycle
    assert not master.reap(successor, rec, 0.6)


def test_other_generations_are_not_recycled():
    master = FakeMaster(slots=1, max_requests=10)
    rec = Recycler()
    [old] = master.workers.values()
    master.serve(old, 50)
    master.generation = 2  # a reload started: the old generation is on its way out
    rec.tick(master, 0.0)
    assert master.spawned == []


def test_max_rss_recycles_and_a_young_worker_past_it_backs_the_slot_off(monkeypatch):
    master = FakeMaster(slots=1, max_rss=100)
    rec = Recycler()
    [old] = master.workers.values()
    sizes = {old.pid: 50.0}
    monkeypatch.setattr("prefork.recycle.rss_mib", lambda pid: sizes.get(pid))
    now = old.started + 60
    rec.tick(master, now)
    assert master.spawned == []
    sizes[old.pid] = 150.0
    rec.tick(master, now + 0.25)
    assert master.spawned == []  # RSS is read once a second, not on every tick
    rec.tick(master, now + 1.0)
    assert master.spawned == [0]
    successor = master.workers[max(master.workers)]
    successor.ready = True
    rec.tick(master, now + 1.25)
    assert master.retired == [old.pid]
    # a successor over the limit as soon as it starts: recycled, but less and less often
    monkeypatch.setattr("prefork.recycle.rss_mib", lambda pid: 150.0)  # every worker, from its start
    monkeypatch.setattr("prefork.recycle.RSS_EVERY", 0.0)  # read on every tick: only the back-off holds it
    t = now + 3.0
    for n, expected_wait in enumerate((BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST)):
        current = master.workers[max(master.workers)]
        current.started = t - 1.0
        rec.tick(master, t)
        assert master.spawned == [0] * (n + 2)
        master.workers[max(master.workers)].ready = True
        rec.tick(master, t + 0.25)
        assert current.pid in master.retired
        master.workers[max(master.workers)].started = t
        rec.tick(master, t + expected_wait - 0.1)
        assert master.spawned == [0] * (n + 2)  # backing off
        t += expected_wait + 0.01


def test_a_successor_ready_on_the_scoreboard_takes_over_even_if_the_master_ignored_its_message():
    """A successor that came up during a reload that then failed: the master
    ignored its ready message (another generation then), but it serves."""
    master = FakeMaster(slots=1, max_requests=10)
    rec = Recycler()
    [old] = master.workers.values()
    master.serve(old, 10)
    rec.tick(master, 0.0)
    successor = master.workers[max(master.workers)]
    rec.tick(master, 0.25)
    assert master.retired == []
    master.scoreboard.set(successor.record, READY, 1)  # what Supervisor.ready() writes
    rec.tick(master, 0.5)
    assert master.retired == [old.pid] and not successor.ready
    master.serve(successor, 10)
    rec.tick(master, 0.75)
    assert master.spawned == [0, 0]  # and it is recycled in its turn
