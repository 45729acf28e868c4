"""The test types, the targets (server x database) and what a run records."""

from __future__ import annotations

from dataclasses import dataclass, field

SERVERS = ("prefork", "uvicorn")
BACKENDS = ("sqlite", "postgresql")
SHORT = {"prefork": "pf", "uvicorn": "uv", "sqlite": "sqlite", "postgresql": "pg"}
DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:54329/tfb_bench"
QUERIES = 20                   # queries=N for /queries and /updates
CONNECTIONS = 256
PIPELINE = 16
WRK_TIMEOUT = 8                # seconds, TechEmpower's wrk --timeout
VERIFY_TIMEOUT = 10.0          # seconds for one verification GET
OTHER_LOAD_MARK = 20.0         # % of a core used by unrelated processes from which a run is marked
TARGET_RPS = 50_000            # /json and /db with prefork-sqlite
TARGET_RATIO = 1.5             # prefork over uvicorn, every test type and backend
LOG_EXCERPT_LINES = 6          # server log lines quoted per run
WORLD_ROWS = 10000             # the World table's rows (TechEmpower's)
ADDITIONAL_FORTUNE = "Additional fortune added at request time."  # what /fortunes adds (TechEmpower's)

ACCEPT_PLAIN = "text/plain,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_JSON = "application/json,text/html;q=0.9,application/xhtml+xml;q=0.9,application/xml;q=0.8,*/*;q=0.7"
ACCEPT_HTML = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"

@dataclass(frozen=True)
class TestType:
    name: str
    path: str
    accept: str
    content_type: str
    pipeline: int = 1
    connections: int = CONNECTIONS
    database: bool = False

    @property
    def description(self) -> str:
        how = f"{self.pipeline}-deep pipelining" if self.pipeline > 1 else "keep-alive"
        return f"GET {self.path}, {self.connections} connections, {how}"


TESTS = (
    TestType("plaintext", "/plaintext", ACCEPT_PLAIN, "text/plain", pipeline=PIPELINE),
    TestType("json", "/json", ACCEPT_JSON, "application/json"),
    TestType("db", "/db", ACCEPT_JSON, "application/json", database=True),
    TestType("queries", f"/queries?queries={QUERIES}", ACCEPT_JSON, "application/json", database=True),
    TestType("updates", f"/updates?queries={QUERIES}", ACCEPT_JSON, "application/json", database=True),
    TestType("fortunes", "/fortunes", ACCEPT_HTML, "text/html; charset=utf-8", database=True),
)


@dataclass(frozen=True)
class Target:
    server: str     # prefork or uvicorn
    backend: str    # sqlite or postgresql

    @property
    def name(self) -> str:
        return f"{self.server}-{self.backend}"

    @property
    def short(self) -> str:
        return f"{SHORT[self.server]}-{SHORT[self.backend]}"


@dataclass
class Run:
    """One measured wrk run against one target."""

    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p99_ms: float | None
    connect_errors: int
    read_errors: int
    write_errors: int
    timeout_errors: int
    non_2xx: int
    wall_s: float
    server_cpu_percent: float
    wrk_cpu_percent: float
    pg_backend_cpu_percent: float | None
    cpu_busy_percent: dict[str, float]        # per core, from /proc/stat
    other_cpu_percent: float                  # process CPU (all cores) that was not server, wrk or backends
    interrupt_cpu_percent: float              # irq + softirq time, all cores
    steal_cpu_percent: float
    pg_backends: int | None
    other_top: list[str]                      # the busiest other processes, "comm[pid] N%"
    client_bound: bool
    contended: bool                           # another wrk ran during the measurement
    other_wrk_pids: list[int] = field(default_factory=list)
    attempts: int = 1                         # measurements made (a contended one is repeated)
    server_processes_before: list[int] = field(default_factory=list)
    server_processes_after: list[int] = field(default_factory=list)
    log_counts: dict[str, int] = field(default_factory=dict)
    log_excerpt: list[str] = field(default_factory=list)

    @property
    def errors(self) -> int:
        return (self.connect_errors + self.read_errors + self.write_errors
                + self.timeout_errors + self.non_2xx)


@dataclass
class TargetResult:
    runs: dict[str, Run] = field(default_factory=dict)
    verify: dict[str, str] = field(default_factory=dict)       # test -> "ok" or the problem
    failure: str | None = None                                  # the whole target failed
    measure_failures: dict[str, str] = field(default_factory=dict)
    config: str = ""
