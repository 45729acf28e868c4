"""Helpers of the bus e2e tests: prefork-server run by ``tests.bus_apps``
(each worker's deliveries logged to a file), publishing through its route,
reading the logs, and a throwaway Redis server."""
from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from conftest import ROOT, Server, free_port, http_get, make_config, wait_for_port, wait_until

ROUTE = '\n[[route]]\npath = "/pub/"\nhandler = "tests.bus_apps:publish"\n'


class BusServer(Server):
    """prefork-server with each worker's bus deliveries in ``logs_dir/<pid>.log``."""

    def __init__(self, tmp_path: Path, workers: int, backend: str, extra: str = "", server: str = ""):
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.logs_dir = tmp_path / "bus"
        self.logs_dir.mkdir()
        ports = {"http": free_port()}
        super().__init__(tmp_path, make_config(ports, f'workers = {workers}\nbackend = "{backend}"\n'
                                                      "shutdown_timeout = 20\n" + server) + ROUTE + extra, ports)

    def start(self, env: dict | None = None) -> "BusServer":
        env = dict(os.environ if env is None else env, PREFORK_TEST_BUS_DIR=str(self.logs_dir),
                   PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.bus_apps", "-c", str(self.path)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=ROOT)
        wait_for_port(self.port, self.proc)
        return self

    def publish(self, channel: str = "news", n: int = 1, size: int = 0, tag: str = "m", binary: bool = False,
                timeout: float = 30) -> int:
        """Publish on whichever worker takes the connection; that worker's pid."""
        status, _, body = http_get(self.port, f"/pub/{channel}?n={n}&size={size}&tag={tag}&binary={int(binary)}",
                                   timeout=timeout)
        assert status == 200, body
        return int(body)

    def deliveries(self, pid: int) -> list[tuple[str, int, int, str]]:
        """What worker ``pid`` got: (channel, binary, length, head) per delivery."""
        path = self.logs_dir / f"{pid}.log"
        if not path.exists():
            return []
        out = []
        for line in path.read_bytes().decode().splitlines():
            channel, binary, length, head = line.split(" ")
            out.append((channel, int(binary), int(length), head))
        return out

    def stop_all(self) -> None:
        workers = self.workers() if self.proc and self.proc.poll() is None else []
        self.stop()
        for pid in workers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def by_tag(deliveries, channel: str = "news") -> dict[str, list[int]]:
    """tag -> the sequence numbers delivered, in delivery order (``tag:pid:i`` heads)."""
    out: dict[str, list[int]] = defaultdict(list)
    for ch, _, _, head in deliveries:
        if ch == channel:
            tag, _, i = head.split(":")
            out[tag].append(int(i))
    return out


_pings = itertools.count()


def wait_subscribed(servers: list[BusServer], pids: dict[BusServer, list[int]], timeout: float = 20.0) -> None:
    """Publish pings until every worker of every server has got one (its bus is up)."""
    tag = f"ping{next(_pings)}"  # a fresh one each time: pings from before an outage do not count

    def all_pinged():
        servers[0].publish("ping", tag=tag)
        return all(any(d[0] == "ping" and d[3].startswith(tag + ":") for d in srv.deliveries(pid))
                   for srv in servers for pid in pids[srv])
    wait_until(all_pinged, timeout=timeout, interval=0.1, what="every worker subscribed")


# --- Redis ------------------------------------------------------------------------------------

class RedisServer:
    """A throwaway redis-server on a free port (started again on the same port by ``restart``)."""

    def __init__(self, tmp_path: Path, *args: str):
        self.args = list(args)  # more redis-server options (--requirepass ...)
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.dir = tmp_path / "redis"
        self.dir.mkdir()
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen([self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir), *self.args],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


def redis_available() -> bool:
    return bool(shutil.which("redis-server") or os.path.exists("/usr/bin/redis-server"))


def need_redis() -> None:
    """Skip without a Redis server to run -- or fail, under PREFORK_REQUIRE_REDIS=1 (CI)."""
    if redis_available():
        return
    if os.environ.get("PREFORK_REQUIRE_REDIS"):
        pytest.fail("PREFORK_REQUIRE_REDIS=1 but there is no redis-server")
    pytest.skip("no redis-server")
