"""The limits doctor: can this host hold N concurrent connections?

``prefork-server --check-limits [--connections N] [-c FILE]`` reads the
kernel's limits from /proc and compares them with what N connections need:
the server (``workers`` processes of ``worker_connections`` each) and a load
client on the same host (as ``prefork-bench connections`` runs), so every
connection has two ends, two sockets and two fds here.

Everything is read below a root directory (default "/") so tests can point
it at a fake tree. A file that is missing or unreadable is reported as
"unknown", never an error. Nothing here prints except ``render``.
"""

from __future__ import annotations

import math
import os
import resource
from dataclasses import dataclass, field

from .config import ServerConfig
from .worker import FD_RESERVE

OK, FIX, NOTE = "OK", "FIX", "note"
UNKNOWN = "unknown"

CLIENT_FD_RESERVE = 64              # fds a load-client process keeps for itself
FULL_PORT_RANGE = (1024, 65535)     # the widest sensible ip_local_port_range
MIN_BACKLOG = 4096                  # somaxconn / tcp_max_syn_backlog below this: a burst of connects drops SYNs
FILE_MAX_HEADROOM_PERCENT = 10      # fs.file-max: 10% above what the server, the client and the rest hold
# Memory per connection, measured on a loopback pair: about 7.3 KB of kernel
# memory for the two sockets, i.e. about 3.7 KiB per socket.
KERNEL_PER_SOCKET = 3.7 * 1024
SERVER_PER_CONNECTION = 512         # user memory in a worker per open connection
CLIENT_PER_CONNECTION = 300         # user memory in a load client per open connection
PER_PROCESS = 30 * 1024 * 1024      # a Python process: interpreter, modules, reactor
MEMORY_IN_USE_MAX = 0.8             # more than this share of MemTotal in use: FIX


@dataclass(frozen=True, slots=True)
class System:
    """What the kernel says; None where the value is unknown."""

    soft_nofile: int | None = None
    hard_nofile: int | None = None
    file_max: int | None = None
    nr_open: int | None = None
    file_nr: int | None = None          # fds allocated system-wide right now
    port_range: tuple[int, int] | None = None
    conntrack_loaded: bool = False      # /proc/sys/net/netfilter/nf_conntrack_max exists
    conntrack_max: int | None = None
    somaxconn: int | None = None
    syn_backlog: int | None = None
    tcp_mem: tuple[int, int, int] | None = None     # pages: low, pressure, high
    tcp_rmem: tuple[int, int, int] | None = None    # bytes: min, default, max
    tcp_wmem: tuple[int, int, int] | None = None
    mem_total: int | None = None        # bytes
    mem_available: int | None = None    # bytes
    page_size: int = 4096


@dataclass(slots=True)
class Row:
    what: str
    have: str
    need: str
    status: str                         # OK, FIX or note


@dataclass(slots=True)
class Report:
    connections: int
    source: str                         # where the target and the server figures came from
    rows: list[Row] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    ok: bool = True                     # False when any row is FIX: the target cannot be met as things stand


# --- reading /proc --------------------------------------------------------


def _read(root: str, rel: str) -> str | None:
    try:
        with open(os.path.join(root, rel), encoding="ascii", errors="replace") as f:
            return f.read()
    except (OSError, ValueError):
        return None


def _ints(root: str, rel: str, count: int) -> tuple[int, ...] | None:
    """The first ``count`` integers of a /proc/sys file, or None."""
    text = _read(root, rel)
    if text is None:
        return None
    try:
        values = tuple(int(v) for v in text.split()[:count])
    except ValueError:
        return None
    return values if len(values) == count else None


def _int(root: str, rel: str) -> int | None:
    values = _ints(root, rel, 1)
    return values[0] if values else None


def _nofile(root: str) -> tuple[int | None, int | None]:
    """Soft and hard RLIMIT_NOFILE from the "Max open files" line of /proc/self/limits."""
    text = _read(root, "proc/self/limits") or ""
    for line in text.splitlines():
        if line.startswith("Max open files"):
            parts = line[len("Max open files"):].split()
            out = []
            for value in parts[:2]:
                if value == "unlimited":
                    out.append(resource.RLIM_INFINITY)
                elif value.isdigit():
                    out.append(int(value))
                else:
                    out.append(None)
            if len(out) == 2:
                return out[0], out[1]
    return None, None


def _meminfo(root: str) -> tuple[int | None, int | None]:
    """MemTotal and MemAvailable in bytes."""
    found: dict[str, int] = {}
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if key in ("MemTotal", "MemAvailable") and parts and parts[0].isdigit():
            unit = 1024 if parts[1:2] == ["kB"] else 1
            found[key] = int(parts[0]) * unit
    return found.get("MemTotal"), found.get("MemAvailable")


def read_system(root: str = "/", page_size: int | None = None) -> System:
    soft, hard = _nofile(root)
    ports = _ints(root, "proc/sys/net/ipv4/ip_local_port_range", 2)
    conntrack = "proc/sys/net/netfilter/nf_conntrack_max"
    mem_total, mem_available = _meminfo(root)
    return System(
        soft_nofile=soft,
        hard_nofile=hard,
        file_max=_int(root, "proc/sys/fs/file-max"),
        nr_open=_int(root, "proc/sys/fs/nr_open"),
        file_nr=_int(root, "proc/sys/fs/file-nr"),
        port_range=(ports[0], ports[1]) if ports and ports[0] <= ports[1] else None,
        conntrack_loaded=os.path.exists(os.path.join(root, conntrack)),
        conntrack_max=_int(root, conntrack),
        somaxconn=_int(root, "proc/sys/net/core/somaxconn"),
        syn_backlog=_int(root, "proc/sys/net/ipv4/tcp_max_syn_backlog"),
        tcp_mem=_ints(root, "proc/sys/net/ipv4/tcp_mem", 3),
        tcp_rmem=_ints(root, "proc/sys/net/ipv4/tcp_rmem", 3),
        tcp_wmem=_ints(root, "proc/sys/net/ipv4/tcp_wmem", 3),
        mem_total=mem_total,
        mem_available=mem_available,
        page_size=page_size or resource.getpagesize(),
    )


# --- formatting -----------------------------------------------------------


def _n(value: int | None) -> str:
    if value is None:
        return UNKNOWN
    if value == resource.RLIM_INFINITY:
        return "unlimited"
    return f"{value:,}"


def _bytes(value: float | None) -> str:
    if value is None:
        return UNKNOWN
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


# --- the checks -----------------------------------------------------------


def evaluate(system: System, server: ServerConfig, connections: int | None = None,
             source: str = "", reserve: int = FD_RESERVE) -> Report:
    """Compare ``system`` with what ``connections`` (default: workers ×
    worker_connections of ``server``) need on this host; ``reserve``: a
    worker's fds besides connections (worker.fd_reserve of the config)."""
    n = connections or server.workers * server.worker_connections
    report = Report(n, source)
    rows, fixes = report.rows, report.fixes
    hard = system.hard_nofile
    wc = server.worker_connections
    per_worker_fds = wc + reserve           # the per-process hard limit a worker wants

    # -- the server: each worker process holds worker_connections + reserve fds
    if server.mode == "thread":
        # all workers share one process's fd table; the figures below are for mode = "process"
        rows.append(Row("server: mode", "thread", '"process" (threads share one fd limit)', NOTE))
    have_fds = UNKNOWN if hard is None else f"hard {_n(hard)} (soft {_n(system.soft_nofile)})"
    fds_short = hard is not None and per_worker_fds > hard
    rows.append(Row("server: fds per worker", have_fds,
                    f"{_n(per_worker_fds)} (worker_connections + {_n(reserve)})",
                    NOTE if hard is None else FIX if fds_short else OK))
    # connections one worker can hold under the hard limit
    at_limit = None if hard is None else max(0, hard - reserve)
    per_worker = wc if at_limit is None else min(wc, at_limit)
    workers_needed = math.ceil(n / per_worker) if per_worker > 0 else None
    rows.append(Row("server: connections per worker", _n(per_worker) if hard is not None else UNKNOWN,
                    f"min(worker_connections {_n(wc)}, hard - {_n(reserve)})", NOTE))
    if workers_needed is None:
        rows.append(Row("server: workers", _n(server.workers), "none fit: the hard limit is below the reserve", FIX))
    else:
        short = server.workers < workers_needed
        rows.append(Row("server: workers", _n(server.workers), f"{_n(workers_needed)} for {_n(n)} connections",
                        FIX if short else OK if hard is not None else NOTE))

    # -- a load client on this host: a process holds hard - 64 connections, and
    # one (source address, source port) pair is one connection to one target
    client_per_process = None if hard is None else hard - CLIENT_FD_RESERVE
    client_procs = None
    if client_per_process is None:
        rows.append(Row("client: processes", UNKNOWN, "hard limit unknown", NOTE))
    elif client_per_process < 1:
        rows.append(Row("client: processes", f"hard {_n(hard)}", f"> {CLIENT_FD_RESERVE} fds per process", FIX))
    else:
        client_procs = math.ceil(n / client_per_process)
        rows.append(Row("client: processes", f"{_n(client_per_process)} conns each (hard - 64)",
                        _n(client_procs), NOTE))
    if system.port_range is None:
        rows.append(Row("client: source addresses (127.0.0.0/8)", UNKNOWN, "ip_local_port_range unknown", NOTE))
    else:
        lo, hi = system.port_range
        ports = hi - lo + 1
        sources = math.ceil(n / ports)
        rows.append(Row("client: source addresses (127.0.0.0/8)", f"{_n(ports)} ports each ({lo}-{hi})",
                        f"{_n(sources)} (127.0.0.1..)", OK if sources == 1 else NOTE))
        full = FULL_PORT_RANGE[1] - FULL_PORT_RANGE[0] + 1
        if ports < full and sources > 1:
            fixes.append(f'sysctl -w net.ipv4.ip_local_port_range="{FULL_PORT_RANGE[0]} {FULL_PORT_RANGE[1]}"'
                         f"   # {_n(math.ceil(n / full))} source addresses instead of {_n(sources)}")

    # -- system-wide fds: both ends of every connection, what is open now, headroom
    if system.file_max is None or system.file_nr is None:
        rows.append(Row("system: fs.file-max", _n(system.file_max), "file-max or file-nr unknown", NOTE))
    else:
        base = 2 * n + system.file_nr
        need = base + -(-base * FILE_MAX_HEADROOM_PERCENT // 100)      # integer ceil: no float surprises
        short = system.file_max < need
        rows.append(Row("system: fs.file-max", _n(system.file_max),
                        f"{_n(need)} (2 × {_n(n)} + {_n(system.file_nr)} open, + 10%)", FIX if short else OK))
        if short:
            fixes.append(f"sysctl -w fs.file-max={need}")
    if system.nr_open is None:
        rows.append(Row("system: fs.nr_open", UNKNOWN, f"{_n(per_worker_fds)} (per-process hard limit wanted)", NOTE))
    else:
        short = system.nr_open < per_worker_fds
        rows.append(Row("system: fs.nr_open", _n(system.nr_open),
                        f"{_n(per_worker_fds)} (per-process hard limit wanted)", FIX if short else OK))
        if short:
            fixes.append(f"sysctl -w fs.nr_open={per_worker_fds}")

    # -- connection tracking: each loopback connection is one entry
    if not system.conntrack_loaded:
        rows.append(Row("system: nf_conntrack_max", "not loaded", "no limit", NOTE))
    elif system.conntrack_max is None:
        rows.append(Row("system: nf_conntrack_max", UNKNOWN, _n(n), NOTE))
    else:
        short = system.conntrack_max < n
        rows.append(Row("system: nf_conntrack_max", _n(system.conntrack_max), _n(n), FIX if short else OK))
        if short:
            fixes.append(f"sysctl -w net.netfilter.nf_conntrack_max={n}")

    # -- accept queues: short ones drop SYNs in a connect burst (retried after 1 s, 3 s...)
    for what, key, value in (("system: somaxconn", "net.core.somaxconn", system.somaxconn),
                             ("system: tcp_max_syn_backlog", "net.ipv4.tcp_max_syn_backlog", system.syn_backlog)):
        short = value is not None and value < MIN_BACKLOG
        rows.append(Row(what, _n(value), f"{_n(MIN_BACKLOG)} (connect bursts)", NOTE if short or value is None else OK))
        if short:
            fixes.append(f"sysctl -w {key}={MIN_BACKLOG}")

    # -- memory: kernel sockets for both ends, the server's and the client's processes
    server_procs = max(server.workers, workers_needed or 0)
    kernel = KERNEL_PER_SOCKET * 2 * n
    server_mem = SERVER_PER_CONNECTION * n + PER_PROCESS * server_procs
    client_mem = CLIENT_PER_CONNECTION * n + PER_PROCESS * (client_procs or 1)
    estimate = kernel + server_mem + client_mem
    rows.append(Row("memory: kernel sockets", "", f"{_bytes(kernel)} (3.7 KiB × 2 × {_n(n)})", NOTE))
    rows.append(Row("memory: server", "",
                    f"{_bytes(server_mem)} (512 B/conn + 30 MiB × {server_procs} workers)", NOTE))
    rows.append(Row("memory: client", "",
                    f"{_bytes(client_mem)} (300 B/conn + 30 MiB × {client_procs or '1+'} processes)", NOTE))
    if system.mem_total is None or system.mem_available is None:
        rows.append(Row("memory: total", f"{_bytes(system.mem_available)} available", _bytes(estimate), NOTE))
    else:
        in_use = system.mem_total - system.mem_available + estimate
        short = in_use > MEMORY_IN_USE_MAX * system.mem_total
        rows.append(Row("memory: total", f"{_bytes(system.mem_available)} available of {_bytes(system.mem_total)}",
                        f"{_bytes(estimate)} (in use after: {in_use / system.mem_total:.0%}, max 80%)",
                        FIX if short else OK))
        if short:
            fixes.append(f"memory: {_bytes(estimate)} more would put {in_use / system.mem_total:.0%} of MemTotal "
                         f"in use (max 80%): lower --connections or add memory")
    # tcp_mem caps socket *buffer* memory (data queued), not the sockets themselves
    if system.tcp_mem is None:
        rows.append(Row("memory: tcp_mem (socket buffers)", UNKNOWN, "", NOTE))
    else:
        _, pressure, high = (pages * system.page_size for pages in system.tcp_mem)
        busy = ""
        if system.tcp_rmem and system.tcp_wmem:
            busy = f"; {_bytes(2 * n * (system.tcp_rmem[0] + system.tcp_wmem[0]))} if all hold data (r+wmem min)"
        rows.append(Row("memory: tcp_mem (socket buffers)", f"pressure {_bytes(pressure)}, high {_bytes(high)}",
                        f"idle ≈ 0{busy}", NOTE))

    # -- what to do about the per-process limit and the number of workers
    if fds_short:
        fixes.append(f"ulimit -n {per_worker_fds}   # as root, in the shell that starts the server")
        fixes.append(f"LimitNOFILE={per_worker_fds}   # systemd: in the unit's [Service] section")
    workers_short = workers_needed is not None and server.workers < workers_needed
    if at_limit and (fds_short or workers_short):
        fewest = math.ceil(n / at_limit)
        if at_limit < n:
            fixes.append(f"the per-process hard limit ({_n(hard)}) cannot be raised without root, "
                         f"so more worker processes are the way:")
        elif fds_short:
            fixes.append("or, without root, fit worker_connections to the hard limit:")
        else:
            fixes.append("more workers, or more connections per worker:")
        options = []
        if per_worker < at_limit:
            options.append(f"[server] workers = {workers_needed}   # {per_worker} connections each")
        options.append(f"[server] workers = {fewest}, worker_connections = {at_limit}   "
                       f"# the most one process holds under the hard limit")
        fixes.extend(f"  {'or ' if i else ''}{option}" for i, option in enumerate(options))

    report.ok = not any(row.status == FIX for row in rows)
    return report


def check(server: ServerConfig, connections: int | None = None, root: str = "/", source: str = "",
          reserve: int = FD_RESERVE) -> Report:
    """Read the limits below ``root`` and evaluate them for ``connections``."""
    return evaluate(read_system(root), server, connections, source, reserve)


def render(report: Report) -> str:
    """The report as a table a person can read, then what to fix."""
    head = ("what", "have", "need", "status")
    cells = [head] + [(r.what, r.have, r.need, r.status) for r in report.rows]
    widths = [max(len(row[i]) for row in cells) for i in range(3)]
    lines = [f"Limits for {report.connections:,} connections: the server and a load client on this host"]
    if report.source:
        lines.append(report.source)
    lines.append("")
    for i, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[3])
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  ------")
    lines.append("")
    if report.fixes:
        lines.append("To fix:")
        lines.extend(f"  {fix}" for fix in report.fixes)
        lines.append("")
    lines.append("ok: the target can be met" if report.ok else "not ok: the target cannot be met as things stand")
    return "\n".join(lines) + "\n"
