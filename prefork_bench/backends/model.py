"""The scenarios and what a run, an idle measurement and a backend's results record."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..net import URL_PATH
from ..wrk import BODY as HELLO, STATIC_PREFIX, Scenario

BACKENDS = ("epoll", "uvloop", "asyncio")
BASE = "epoll"
PLAINTEXT = URL_PATH
BODY = HELLO.encode()
DB_PATH = "/db"
STATIC_FILE = "4k.bin"
STATIC_PATH = STATIC_PREFIX + STATIC_FILE
WORLD_ROWS = 10000
PIPELINE = 16
THROUGHPUT_WORKER_CONNECTIONS = 18900  # + the static cache (1024), database and reserve fds: under 20000

WORKERS_TIMEOUT = 30.0              # seconds for the master to have all its workers
CHECK_TIMEOUT = 10.0                # seconds for one verification exchange
POLL_WAIT = 0.02                    # seconds between checks whether wrk has exited
OTHER_LOAD_MARK = 20.0              # % of a core used by unrelated processes that marks a run

IDLE_BATCH = 500                    # connections opened at once by the idle client
IDLE_OPEN_TIMEOUT = 180.0           # seconds for the client to open and exercise all of them
IDLE_CLIENT_LIFETIME = 900.0        # the client exits by itself after this long
MEM_POLL = 0.25                     # seconds between memory readings
MEM_STABLE_READINGS = 5             # this many readings in a row within MEM_STABLE_KB
MEM_STABLE_KB = 16
MEM_STABLE_TIMEOUT = 30.0
WARM_CONNECTIONS = 64
WARM_SEQUENTIAL = 50
LOG_EXCERPT_LINES = 6


@dataclass(frozen=True)
class Test:
    scenario: object     # Scenario
    needs: tuple[str, ...]   # the checks that must pass before it is measured


SCENARIOS = (
    Test(Scenario("keepalive-1000", 1000, "GET /plaintext, keep-alive, 1000 connections"),
         ("plaintext",)),
    Test(Scenario("pipeline16-64", 64, "GET /plaintext, 16-deep pipelining, 64 connections",
                  pipeline=PIPELINE), ("plaintext", "pipelining")),
    Test(Scenario("close-64", 64, "GET /plaintext, new connection per request, "
                  "64 connections", close=True), ("plaintext",)),
    Test(Scenario("db-64", 64, "GET /db, keep-alive, 64 connections", path=DB_PATH),
         ("db",)),
    Test(Scenario("static4k-64", 64, "GET /static/4k.bin, keep-alive, 64 connections",
                  path=STATIC_PATH, static_file=STATIC_FILE), ("static",)),
)
TARGET_SCENARIO = "keepalive-1000"


@dataclass
class Run:
    """One measured wrk run."""

    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    latency_valid: bool
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    non_2xx: int
    wall_s: float
    wrk_cpu_percent: float
    server_cpu_percent: float
    other_cpu_percent: float
    client_bound: bool
    contended: bool
    other_wrk_pids: list[int] = field(default_factory=list)
    server_cpu_by_pid: dict[int, float] = field(default_factory=dict)   # % per server process
    cores: dict[str, dict] = field(default_factory=dict)   # per core: busy %, softirq %
    context_switches: list[int] = field(default_factory=list)   # workers': voluntary, involuntary
    other_top: list[str] = field(default_factory=list)   # the busiest other processes

    @property
    def errors(self) -> int:
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.timeout_errors + self.non_2xx)

    @property
    def noisy(self) -> bool:
        return self.other_cpu_percent >= OTHER_LOAD_MARK


@dataclass
class Mem:
    rss_kb: int          # VmRSS (/proc/PID/status)
    uss_kb: int          # Private_Clean + Private_Dirty (/proc/PID/smaps_rollup)
    pss_kb: int
    smaps_rss_kb: int    # Rss of smaps_rollup (a page-table walk; VmRSS is a counter)
    shared_kb: int       # Shared_Clean + Shared_Dirty: resident pages shared (with the master)
    fds: int


@dataclass
class Idle:
    requested: int
    opened: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    open_seconds: float = 0.0
    established: int | None = None       # ss count on the server side, before closing
    worker_pid: int | None = None
    before: Mem | None = None
    after: Mem | None = None
    after_close: Mem | None = None
    stable: bool = True
    alive_after_close: bool | None = None
    contended: bool = False
    failure: str | None = None

    @property
    def rss_per_conn(self) -> float | None:
        if self.before is None or self.after is None or not self.opened:
            return None
        return (self.after.rss_kb - self.before.rss_kb) * 1024 / self.opened

    @property
    def uss_per_conn(self) -> float | None:
        if self.before is None or self.after is None or not self.opened:
            return None
        return (self.after.uss_kb - self.before.uss_kb) * 1024 / self.opened


@dataclass
class BackendResult:
    runs: dict[str, Run] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)      # check -> "ok" or the problem
    failed: dict[str, str] = field(default_factory=dict)      # scenario -> why not measured
    failure: str | None = None                                # the whole server failed
    log_lines: list[str] = field(default_factory=list)        # warnings/errors it logged
    left_over_workers: list[int] = field(default_factory=list)
    idle: Idle | None = None
    idle_log_lines: list[str] = field(default_factory=list)
    idle_left_over_workers: list[int] = field(default_factory=list)
