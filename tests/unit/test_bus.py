"""The bus's pure parts (frames, RESP commands, Redis URLs) and the relay with
worker-side LocalBus on socketpairs in one process, on both reactor kinds."""
from __future__ import annotations

import socket

import pytest

from prefork import busframe
from prefork.aio import AsyncioReactor
from prefork.bus import LocalBus, make_bus
from prefork.busframe import FrameError, FrameReader, encode
from prefork.busrelay import BusRelay, Links
from prefork.config import ConfigError, from_dict
from prefork.pubsub import LoopbackBus
from prefork.reactor import Reactor
from prefork.resp import RedisAddress, command, glob_escape, parse_url


# --- frames --------------------------------------------------------------------------------

MESSAGES = [(b"news", b"hello", False), (b"", b"", True), (b"c" * 300, bytes(range(256)) * 4, True),
            (b"x", b"y" * 70000, False)]


def test_frames_whole_and_byte_by_byte():
    stream = b"".join(encode(*m) for m in MESSAGES)
    assert FrameReader().feed(stream) == MESSAGES
    reader = FrameReader()
    out = []
    for i in range(len(stream)):
        out += reader.feed(stream[i:i + 1])
    assert out == MESSAGES and reader.pending == 0


def test_frame_head_and_complete():
    frame = encode(b"ch", b"payload", True)
    assert frame[:7] == busframe.HEAD.pack(3 + 2 + 7, 2, busframe.BINARY)
    stream = frame + frame + frame[:5]
    assert busframe.complete(stream) == (2 * len(frame), 2)
    assert busframe.frame_end(stream, 2 * len(frame)) == -1


def test_frame_limits_and_corruption():
    with pytest.raises(ValueError):
        encode(b"c" * 70000, b"", False)
    with pytest.raises(FrameError):
        FrameReader().feed(b"\x00\x00\x00\x01xxxx")       # shorter than its own head
    with pytest.raises(FrameError):
        FrameReader().feed(b"\x7f\xff\xff\xff")           # beyond FRAME_MAX
    with pytest.raises(FrameError):
        FrameReader().feed(busframe.HEAD.pack(5, 9, 0) + b"ab")  # channel longer than the frame
    with pytest.raises(FrameError):
        FrameReader().feed(busframe.HEAD.pack(3, 0, 6))   # unknown flags


# --- RESP and the Redis URL ----------------------------------------------------------------

def test_resp_command():
    assert command(b"PUBLISH", b"prefork:news", b"thi") == \
        b"*3\r\n$7\r\nPUBLISH\r\n$12\r\nprefork:news\r\n$3\r\nthi\r\n"
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert command(b"SET", b"", b"a\r\nb") == b"*3\r\n$3\r\nSET\r\n$0\r\n\r\n$4\r\na\r\nb\r\n"


def test_resp_command_parsed_back_by_hiredis():
    import hiredis

    # a command is a RESP array: hiredis reads it back as the same list
    reader = hiredis.Reader()
    args = [b"PUBLISH", b"\x00\xff channel", b"b" + bytes(range(256))]
    reader.feed(command(*args))
    assert reader.gets() == args


@pytest.mark.parametrize("url, address", [
    ("redis://localhost", RedisAddress("localhost", 6379, 0)),
    ("redis://127.0.0.1:7000/3", RedisAddress("127.0.0.1", 7000, 3)),
    ("redis://:s%40cret@h:1/0", RedisAddress("h", 1, 0, "", "s@cret")),
    ("redis://user:pw@[::1]:6380", RedisAddress("::1", 6380, 0, "user", "pw")),
])
def test_parse_url(url, address):
    assert parse_url(url) == address


@pytest.mark.parametrize("url", ["http://h", "redis://", "redis://h:99999", "redis://h/x", "redis://h/0?a=1",
                                 "rediss://h"])
def test_parse_url_refuses(url):
    with pytest.raises(ValueError):
        parse_url(url)


def test_address_hello_and_str_hide_the_password():
    address = parse_url("redis://u:pw@h:1/2")
    assert str(address) == "redis://h:1/2"
    assert address.hello() == [command(b"AUTH", b"u", b"pw")]
    assert parse_url("redis://:pw@h").hello() == [command(b"AUTH", b"pw")]
    assert parse_url("redis://h").hello() == []


def test_glob_escape():
    assert glob_escape(b"prefork:") == b"prefork:"
    assert glob_escape(b"a*b?[c]\\") == b"a\\*b\\?\\[c\\]\\\\"


LISTEN = {"listen": [{"address": "127.0.0.1:8000"}]}


def test_config_pubsub():
    config = from_dict({**LISTEN, "pubsub": {"url": "redis://127.0.0.1:6379/0", "prefix": "app:"}}, "f.toml")
    assert config.pubsub.url == "redis://127.0.0.1:6379/0" and config.pubsub.prefix == "app:"
    assert from_dict(LISTEN, "f.toml").pubsub.url == ""
    for table, key in [({"url": "http://x"}, "pubsub.url"), ({"url": 5}, "pubsub.url"),
                       ({"url": "redis://h:0x"}, "pubsub.url"), ({"prefix": ""}, "pubsub.prefix"),
                       ({"other": 1}, "pubsub.other")]:
        with pytest.raises(ConfigError) as info:
            from_dict({**LISTEN, "pubsub": table}, "f.toml")
        assert info.value.path == "f.toml" and info.value.key == key, str(info.value)


# --- LocalBus and the relay, in one process --------------------------------------------------

class Recorder:
    def __init__(self):
        self.got: list[tuple[bytes, bytes, bool]] = []

    def deliver(self, channel, payload, binary):
        self.got.append((channel, payload, binary))


def _reactors(kind):
    if kind == "epoll":
        return Reactor(), Reactor()
    return AsyncioReactor("asyncio"), AsyncioReactor("asyncio")


def _run_until(reactors, predicate, turns=2000):
    for _ in range(turns):
        if predicate():
            return True
        for r in reactors:
            if isinstance(r, Reactor):
                r.run_once(0.001)
            else:
                r.loop.call_later(0.001, r.loop.stop)
                r.loop.run_forever()
    return predicate()


@pytest.fixture(params=["epoll", "asyncio"])
def bus_setup(request):
    """A relay on a master reactor, three LocalBuses on one worker reactor (as if three processes)."""
    master, workers = _reactors(request.param)
    relay = BusRelay(master)
    buses, recorders = [], []
    for pid in (1, 2, 3):
        links = Links(1)
        worker_sock = links.worker.pop()
        relay.attach(links, pid)
        bus = LocalBus(workers, worker_sock)
        rec = Recorder()
        bus.attach(rec)
        buses.append(bus)
        recorders.append(rec)
    yield relay, (master, workers), buses, recorders
    for bus in buses:
        bus.close()
    relay.close()
    master.close()
    workers.close()


def test_relay_delivers_once_each_in_order(bus_setup):
    relay, reactors, buses, recorders = bus_setup
    sent = {0: [], 1: []}
    for i in range(300):
        for who in (0, 1):
            message = (b"ch%d" % who, b"%d:%d" % (who, i) + b"x" * (i * 37 % 5000), bool(i % 2))
            buses[who].publish(*message)
            sent[who].append(message)
    big = (b"big", b"z" * (1 << 20), True)  # 1 MiB: more than a socket takes at once
    buses[2].publish(*big)
    assert _run_until(reactors, lambda: all(len(r.got) == 601 for r in recorders))
    for rec in recorders:
        assert [m for m in rec.got if m[0] == b"ch0"] == sent[0]
        assert [m for m in rec.got if m[0] == b"ch1"] == sent[1]
        assert rec.got.count(big) == 1
    assert relay.relayed == 601 and relay.dropped == 0


def test_relay_drops_for_a_full_link_only(bus_setup):
    relay, reactors, buses, recorders = bus_setup
    relay.out_max = 200_000
    stalled = buses[2]
    reactors[1].remove(stalled.fd)          # worker 3 stops reading
    for i in range(40):
        buses[0].publish(b"c", b"%d|" % i + b"x" * 50_000, False)
        _run_until(reactors, lambda: False, turns=2)
    assert _run_until(reactors, lambda: len(recorders[1].got) == 40)
    assert relay.dropped > 0
    # worker 3 reads again: what was queued arrives, in order, with a gap at the end only
    reactors[1].add(stalled.fd, 1, LocalBus._on_readable, stalled)
    _run_until(reactors, lambda: False, turns=200)
    got = [int(p.split(b"|")[0]) for _, p, _ in recorders[2].got]
    assert got == list(range(len(got))) and 0 < len(got) == 40 - relay.dropped


def test_publisher_drops_past_its_own_bound(bus_setup):
    relay, reactors, buses, recorders = bus_setup
    buses[0].out_max = 100_000
    for i in range(20):  # no loop turn between: the socket and then the queue fill
        buses[0].publish(b"c", b"%d|" % i + b"x" * 50_000, False)
    assert buses[0].dropped > 0 and len(recorders[0].got) == 20  # its own subscriber still got each
    assert _run_until(reactors, lambda: len(recorders[1].got) == 20 - buses[0].dropped)
    got = [int(p.split(b"|")[0]) for _, p, _ in recorders[1].got]
    assert got == list(range(len(got)))


def test_a_closed_link_leaves_the_relay(bus_setup):
    relay, reactors, buses, recorders = bus_setup
    buses[2].close()                         # a worker exits
    assert _run_until(reactors, lambda: len(relay) == 2)
    buses[0].publish(b"c", b"after", False)
    assert _run_until(reactors, lambda: recorders[1].got == [(b"c", b"after", False)])


def test_make_bus_picks_by_config():
    config = from_dict(LISTEN, "f.toml")
    assert isinstance(make_bus(config, Reactor(), -1), LoopbackBus)
    a, b = socket.socketpair()
    reactor = Reactor()
    bus = make_bus(config, reactor, b.detach())
    assert isinstance(bus, LocalBus)
    bus.close()
    a.close()
    reactor.close()
