"""Redis pub/sub as the bus, against a real redis-server: the RESP client on
both reactor kinds in one process, then two prefork servers on one Redis
(exactly once across servers, in order), and Redis restarting mid-run.

In CI ``.ci/run`` starts Redis (``.ci/redis.sh``) and sets
PREFORK_TEST_REDIS_URL with PREFORK_REQUIRE_REDIS=1, so these tests fail
rather than skip there; the tests that restart Redis start their own."""
from __future__ import annotations

import os
import uuid

import pytest

from bus_helpers import BusServer, RedisServer, by_tag, need_redis, wait_subscribed
from conftest import wait_until
from prefork.aio import AsyncioReactor
from prefork.reactor import Reactor
from prefork.redisbus import UP, RedisBus
from prefork.resp import parse_url


@pytest.fixture
def own_redis(tmp_path):
    need_redis()
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(tmp_path):
    """The CI's Redis when there is one, else a throwaway one."""
    url = os.environ.get("PREFORK_TEST_REDIS_URL")
    if url:
        yield url
        return
    need_redis()
    server = RedisServer(tmp_path).start()
    yield server.url
    server.stop()


def _prefix() -> str:
    return f"t{uuid.uuid4().hex[:12]}:"  # tests sharing one Redis never hear each other


# --- the client on each reactor, in this process -----------------------------------------------

class Recorder:
    def __init__(self):
        self.got = []

    def deliver(self, channel, payload, binary):
        self.got.append((channel, payload, binary))


def _turn(reactor) -> None:
    if isinstance(reactor, Reactor):
        reactor.run_once(0.01)
    else:
        reactor.loop.call_later(0.01, reactor.loop.stop)
        reactor.loop.run_forever()


def _until(reactor, predicate, timeout: float = 10.0):
    def turned():
        _turn(reactor)
        return predicate()
    return wait_until(turned, timeout=timeout, interval=0, what="the bus")


@pytest.mark.parametrize("kind", ["epoll", "asyncio"])
def test_redis_bus_round_trip_on_each_reactor(own_redis, kind):
    reactor = Reactor() if kind == "epoll" else AsyncioReactor("asyncio")
    prefix = _prefix().encode()
    buses = [RedisBus(reactor, parse_url(own_redis.url), prefix) for _ in range(2)]
    recorders = [Recorder(), Recorder()]
    for bus, rec in zip(buses, recorders):
        bus.attach(rec)
    try:
        _until(reactor, lambda: all(b.connected for b in buses))
        sent = [(b"news", b"%d" % i, False) for i in range(200)] + [(b"bin", bytes(range(256)) * 4096, True),
                                                                     (b"e", b"", False)]
        for message in sent:
            buses[0].publish(*message)
        _until(reactor, lambda: all(len(r.got) == len(sent) for r in recorders))
        assert recorders[0].got == sent and recorders[1].got == sent  # the publisher's own too, once
        # Redis restarts: the bus reconnects and subscribes again; publishes meanwhile are dropped, counted
        own_redis.stop()
        _until(reactor, lambda: buses[0].pub.state != UP)
        buses[0].publish(b"news", b"lost", False)
        assert buses[0].dropped == 1
        own_redis.start()
        _until(reactor, lambda: all(b.connected for b in buses))
        buses[1].publish(b"news", b"back", False)
        _until(reactor, lambda: all(r.got[-1] == (b"news", b"back", False) for r in recorders))
        assert all(len(r.got) == len(sent) + 1 for r in recorders)
        assert buses[0].sub.connects == 2
    finally:
        for bus in buses:
            bus.close()
        reactor.close()


def test_redis_bus_auth(tmp_path, caplog):
    need_redis()
    server = RedisServer(tmp_path, "--requirepass", "s3cret").start()
    reactor = Reactor()
    prefix = _prefix().encode()
    good = RedisBus(reactor, parse_url(f"redis://:s3cret@127.0.0.1:{server.port}/0"), prefix)
    bad = RedisBus(reactor, parse_url(f"redis://:wrong@127.0.0.1:{server.port}/0"), prefix)
    rec = Recorder()
    good.attach(rec)
    try:
        _until(reactor, lambda: good.connected and bad.sub.errors and bad.pub.state == UP)
        for i in range(3):
            good.publish(b"c", b"%d" % i, False)
            bad.publish(b"c", b"refused", False)
        _until(reactor, lambda: len(rec.got) == 3 and bad.pub.errors >= 3)
        assert [p for _, p, _ in rec.got] == [b"0", b"1", b"2"] and not bad.connected
        said = [r.getMessage() for r in caplog.records if "Redis says" in r.getMessage()]
        assert len(said) == 2, said  # once per connection (publish, subscribe), not per refused command
    finally:
        good.close()
        bad.close()
        reactor.close()
        server.stop()


# --- prefork servers -----------------------------------------------------------------------------

def _redis_server(tmp_path, name: str, backend: str, url: str, prefix: str, workers: int = 2) -> BusServer:
    return BusServer(tmp_path / name, workers, backend, f'\n[pubsub]\nurl = "{url}"\nprefix = "{prefix}"\n').start()


def _exactly(srv: BusServer, pid: int, expected: dict[str, int]) -> bool:
    got = by_tag(srv.deliveries(pid))
    return {t: len(s) for t, s in got.items()} == expected


def test_two_servers_on_one_redis(tmp_path, redis_url):
    prefix = _prefix()
    a = _redis_server(tmp_path, "a", "epoll", redis_url, prefix)
    b = _redis_server(tmp_path, "b", "uvloop", redis_url, prefix)
    try:
        pids = {a: a.wait_workers(2), b: b.wait_workers(2)}
        wait_subscribed([a, b], pids)
        for k in range(3):
            a.publish(n=100, tag=f"a{k}")
            b.publish(n=100, tag=f"b{k}")
        expected = {f"{s}{k}": 100 for s in "ab" for k in range(3)}
        wait_until(lambda: all(_exactly(srv, pid, expected) for srv in (a, b) for pid in pids[srv]),
                   timeout=20, what="every worker of both servers")
        for srv in (a, b):
            for pid in pids[srv]:
                assert all(seqs == list(range(100)) for seqs in by_tag(srv.deliveries(pid)).values())
    finally:
        a.stop_all()
        b.stop_all()


def test_redis_restarting_mid_run(tmp_path, own_redis):
    srv = _redis_server(tmp_path, "a", "epoll", own_redis.url, _prefix())
    try:
        pids = {srv: srv.wait_workers(2)}
        wait_subscribed([srv], pids)
        srv.publish(n=20, tag="before")
        wait_until(lambda: all(_exactly(srv, pid, {"before": 20}) for pid in pids[srv]), timeout=20,
                   what="before the restart")
        own_redis.stop()
        wait_until(lambda: "retrying" in srv.log(), timeout=10, what="the workers to see Redis gone")
        srv.publish(n=5, tag="lost")  # dropped and counted while Redis is away
        own_redis.start()
        wait_subscribed([srv], pids)
        srv.publish(n=20, tag="after")
        wait_until(lambda: all(_exactly(srv, pid, {"before": 20, "after": 20}) for pid in pids[srv]),
                   timeout=20, what="after the restart")
        assert "is back" in srv.log() and "publishes dropped" in srv.log()
    finally:
        srv.stop_all()


def test_reload_with_redis(tmp_path, redis_url):
    srv = _redis_server(tmp_path, "a", "epoll", redis_url, _prefix())
    try:
        old = srv.wait_workers(2)
        os.kill(srv.pid, __import__("signal").SIGHUP)
        wait_until(lambda: "reload complete" in srv.log(), timeout=20, what="the reload")
        new = srv.wait_workers(2, exclude=set(old))
        wait_subscribed([srv], {srv: new})
        srv.publish(n=30, tag="r")
        wait_until(lambda: all(len(by_tag(srv.deliveries(p)).get("r", [])) == 30 for p in new), timeout=20,
                   what="the new generation's deliveries")
        assert all(by_tag(srv.deliveries(p))["r"] == list(range(30)) for p in new)
    finally:
        srv.stop_all()
