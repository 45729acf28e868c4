"""``prefork-bench``: the load client.

``connections``  open N TCP connections to one or more targets, spread over as
                 many processes as the fd limit requires and over many loopback
                 source addresses (so ephemeral ports never run out), hold them,
                 optionally send one HTTP request per connection every S
                 seconds, and report what the client and the server did.
``accept``       compare the accept strategies: one process, N threads of one
                 process, N processes on one shared socket (EPOLLEXCLUSIVE), N
                 processes with a SO_REUSEPORT socket each.
``http``         the wrk throughput runs of ``bench/http.py`` (prefork against
                 nginx and uvicorn).

Every run is bounded in time and stops by itself; the client processes are
children of this one and die with it (PR_SET_PDEATHSIG).

Each client process runs its own epoll loop (no framework: the client must
not be the bottleneck, and must stay small at a million connections). It
reports cumulative counters to the parent as a JSON line on a pipe every half
second; the parent adds them up, samples the server (CPU and memory of the
processes under the pid file) and the machine once a second, draws the
progress bar, and writes the table, the JSON and the PNG at the end.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import heapq
import json
import math
import os
import random
import resource
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .httpbench import free_port, wait_ready

IP_BIND_ADDRESS_NO_PORT = 24   # Linux: bind() picks no port; connect() picks one unique for the 4-tuple
FD_MARGIN = 64                 # fds a client process keeps for itself
REPORT_EVERY = 0.5             # seconds between a client process's reports
DRAIN_TIMEOUT = 10.0           # seconds to wait for responses still due when the hold ends
SAMPLE_EVERY = 1.0             # seconds between the parent's samples
HIST_SCALE = 8                 # latency histogram: 8 buckets per power of two of microseconds
HIST_SIZE = HIST_SCALE * 32
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# --- small helpers ------------------------------------------------------------------


def raise_nofile() -> int:
    """Raise the soft fd limit to the hard one; returns it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def parse_targets(text: str) -> list[tuple[str, int]]:
    targets = []
    for item in text.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit() or not host:
            raise argparse.ArgumentTypeError(f"--target: expected HOST:PORT[,HOST:PORT...], got {item!r}")
        targets.append((host, int(port)))
    return targets


def parse_sources(text: str) -> list[str]:
    """"127.0.0.2-127.0.0.60", "127.0.0.2,127.0.0.3", or "none" (no bind)."""
    if text == "none":
        return []
    sources = []
    for item in text.split(","):
        first, sep, last = item.strip().partition("-")
        try:
            lo = int.from_bytes(socket.inet_aton(first), "big")
            hi = int.from_bytes(socket.inet_aton(last), "big") if sep else lo
        except OSError:
            raise argparse.ArgumentTypeError(f"--sources: {item!r} is not an IPv4 address or range") from None
        if hi < lo or hi - lo > 1 << 20:
            raise argparse.ArgumentTypeError(f"--sources: bad range {item!r}")
        sources += [socket.inet_ntoa(i.to_bytes(4, "big")) for i in range(lo, hi + 1)]
    return sources


def port_range() -> int:
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return hi - lo + 1
    except (OSError, ValueError):
        return 28232  # the kernel's default range


def auto_sources(count: int, targets: list[tuple[str, int]]) -> list[str]:
    """Enough loopback source addresses for ``count`` connections, with room to spare."""
    if not all(host.startswith("127.") for host, _ in targets):
        return []
    # connect() slows down badly as a source's ports fill up (the kernel scans
    # for a free one), so each source is kept to a quarter of its port range
    needed = max(2, math.ceil(count / (0.25 * port_range() * len(targets))))
    return [f"127.0.{(i >> 8) & 255}.{i & 255}" for i in range(2, 2 + needed)]


def hist_index(seconds: float) -> int:
    us = seconds * 1e6
    if us < 1:
        return 0
    return min(HIST_SIZE - 1, int(math.log2(us) * HIST_SCALE))


def hist_value(index: int) -> float:
    """The upper bound of bucket ``index``, in seconds."""
    return 2 ** ((index + 1) / HIST_SCALE) / 1e6


def percentile(hist: list[int], q: float) -> float | None:
    total = sum(hist)
    if not total:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return hist_value(i)
    return hist_value(len(hist) - 1)


def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


# --- the client process -------------------------------------------------------------

CONNECTING, IDLE, WAITING, DONE = range(4)


class _Conn:
    __slots__ = ("sock", "state", "started", "buf")

    def __init__(self, sock: socket.socket, started: float):
        self.sock = sock
        self.state = CONNECTING
        self.started = started
        self.buf = b""


@dataclass
class ClientJob:
    """What one client process does."""
    index: int
    count: int                     # connections to open (hold mode) or to keep in flight (churn mode)
    first: int                     # global number of its first connection: picks source and target
    rate: float                    # new connections per second, this process
    targets: list[tuple[str, int]]
    sources: list[str]
    ramp_timeout: float
    hold: float
    request_every: float
    request: bytes
    churn: bool = False            # accept mode: connect, one request, close, again
    duration: float = 0.0          # churn mode: how long


class ClientProcess:
    """The epoll loop of one client process; reports on ``out`` (a pipe fd)."""

    def __init__(self, job: ClientJob, out: int):
        self.job = job
        self.out = out
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.started = self.established = self.failed = self.dropped = 0
        self.completed = 0   # churn mode: connections that went through a whole request
        self.sent = self.responses = self.non2xx = 0
        self.outstanding = 0  # requests sent and not answered
        self.errors: dict[str, int] = {}
        self.lat = [0] * HIST_SIZE      # request -> response
        self.clat = [0] * HIST_SIZE     # connect() -> established
        self.due: list = []             # heap of (when, fd): requests to send
        self.phase = "ramp"
        self.ramp_done_at = 0.0
        self.next_number = 0

    # reporting
    def report(self, now: float, done: bool = False) -> None:
        data = {"i": self.job.index, "t": now, "phase": self.phase, "started": self.started,
                "established": self.established, "open": len(self.conns), "failed": self.failed,
                "dropped": self.dropped, "completed": self.completed, "sent": self.sent,
                "responses": self.responses, "non2xx": self.non2xx, "errors": self.errors,
                "lat": {i: n for i, n in enumerate(self.lat) if n},
                "clat": {i: n for i, n in enumerate(self.clat) if n},
                "ramp_done_at": self.ramp_done_at, "done": done}
        line = (json.dumps(data) + "\n").encode()
        try:
            os.write(self.out, line)
        except BlockingIOError:
            pass  # the parent is behind: the next report carries the same totals
        except OSError:
            raise SystemExit(0)  # the parent is gone

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    # connections
    def open_one(self, now: float) -> None:
        job = self.job
        number = job.first + self.next_number
        self.next_number += 1
        self.started += 1
        host, port = job.targets[number % len(job.targets)]
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failed += 1
            self.error(errno_name(exc.errno))
            return
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if job.sources:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((job.sources[(number // len(job.targets)) % len(job.sources)], 0))
            sock.setblocking(False)
            code = sock.connect_ex((host, port))
        except OSError as exc:
            code = exc.errno
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            self.error(errno_name(code))
            return
        conn = _Conn(sock, now)
        self.conns[sock.fileno()] = conn
        self.ep.register(sock.fileno(), select.EPOLLOUT)

    def close(self, fd: int, conn: _Conn) -> None:
        self.conns.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        conn.sock.close()
        if conn.state == WAITING:
            self.outstanding -= 1
        conn.state = DONE

    def send(self, fd: int, conn: _Conn, now: float) -> None:
        try:
            conn.sock.send(self.job.request)
        except OSError as exc:
            self.dropped += 1
            self.error(f"send {errno_name(exc.errno)}")
            self.close(fd, conn)
            return
        conn.state = WAITING
        conn.started = now
        self.sent += 1
        self.outstanding += 1

    def on_event(self, fd: int, ev: int, now: float) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        job = self.job
        if conn.state == CONNECTING:
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.failed += 1
                self.error(errno_name(code))
                self.close(fd, conn)
                return
            if not ev & select.EPOLLOUT:
                return
            self.established += 1
            self.clat[hist_index(now - conn.started)] += 1
            self.ep.modify(fd, select.EPOLLIN)
            conn.state = IDLE
            if job.churn:
                self.send(fd, conn, now)
            elif job.request_every and self.phase != "ramp":
                # (connections open during the ramp start asking when it ends)
                heapq.heappush(self.due, (now + random.random() * job.request_every, fd))
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            data = None
            self.error(f"recv {errno_name(exc.errno)}")
        if not data:
            if data is not None and not (job.churn and conn.state == WAITING and conn.buf):
                self.error("closed by server")
            if job.churn and conn.state == WAITING and conn.buf and self._complete(conn, now, eof=True):
                self.completed += 1
            else:
                self.dropped += 1
            self.close(fd, conn)
            return
        if conn.state != WAITING:
            self.error("unexpected data")
            return
        conn.buf += data
        if self._complete(conn, now):
            if job.churn:
                self.completed += 1
                self.close(fd, conn)
            else:
                conn.state = IDLE
                heapq.heappush(self.due, (now + job.request_every, fd))

    def _complete(self, conn: _Conn, now: float, eof: bool = False) -> bool:
        """A whole response in ``conn.buf``? Then count it and clear the buffer."""
        buf = conn.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = buf[:end].lower()
        at = head.find(b"content-length:")
        if at >= 0:
            length = int(head[at + 15:].split(b"\r\n", 1)[0])
            if len(buf) < end + 4 + length:
                return False
        elif not eof:
            return False
        self.responses += 1
        self.outstanding -= 1
        conn.state = IDLE
        if not buf[9:10] == b"2":
            self.non2xx += 1
        self.lat[hist_index(now - conn.started)] += 1
        conn.buf = b""
        return True

    # the loop
    def run(self) -> None:
        job = self.job
        clock = time.monotonic
        t0 = clock()
        end_of_ramp = t0 + job.ramp_timeout
        stop_at = t0 + (job.duration if job.churn else job.ramp_timeout + job.hold)
        next_report = t0
        ep = self.ep
        while True:
            now = clock()
            if self.phase == "ramp":
                if job.churn:
                    want = min(job.count - len(self.conns), 256)
                else:
                    want = min(job.count - self.started, int((now - t0) * job.rate) + 1 - self.started, 512)
                for _ in range(max(0, want)):
                    self.open_one(now)
                if not job.churn:
                    settled = self.started >= job.count and self.established + self.failed >= job.count
                    if settled or now >= end_of_ramp:
                        self.phase = "hold"
                        self.ramp_done_at = now
                        stop_at = now + job.hold
                        if job.request_every:
                            # requests begin once every connection is open, so the
                            # ramp is not slowed by them; the first ones are spread
                            # over one interval, as steady traffic would be
                            due = self.due
                            for fd, conn in self.conns.items():
                                if conn.state == IDLE:
                                    due.append((now + random.random() * job.request_every, fd))
                            heapq.heapify(due)
            if now >= stop_at:
                if self.phase != "drain" and not job.churn:
                    # no new requests; wait a little for the answers still due
                    self.phase = "drain"
                    self.due.clear()
                    stop_at = now + DRAIN_TIMEOUT
                    continue
                break
            if self.phase == "drain" and not self.outstanding:
                break
            due = self.due
            while due and due[0][0] <= now:
                fd = heapq.heappop(due)[1]
                conn = self.conns.get(fd)
                if conn is not None and conn.state == IDLE:
                    self.send(fd, conn, now)
            if self.phase == "ramp":
                timeout = 0.002
            else:
                timeout = min(REPORT_EVERY, stop_at - now, (due[0][0] - now) if due else REPORT_EVERY)
            for fd, ev in ep.poll(max(0.0, timeout), 4096):
                self.on_event(fd, ev, clock())
            if now >= next_report:
                self.report(now)
                next_report = now + REPORT_EVERY
        if self.outstanding and not job.churn:
            self.errors[f"no response within {DRAIN_TIMEOUT:g}s of the end"] = self.outstanding
        self.report(clock(), done=True)
        for fd, conn in list(self.conns.items()):
            self.close(fd, conn)


def _child_main(job: ClientJob, out: int) -> None:
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise_nofile()
    code = 0
    try:
        ClientProcess(job, out).run()
    except SystemExit:
        pass
    except BaseException as exc:  # report and go: the parent shows it
        try:
            os.write(out, (json.dumps({"i": job.index, "fatal": repr(exc), "done": True}) + "\n").encode())
        except OSError:
            pass
        code = 1
    os._exit(code)


class Clients:
    """The client processes, from the parent's side."""

    def __init__(self, jobs: list[ClientJob], cpus: str | None = None):
        self.latest: dict[int, dict] = {}
        self.pids: list[int] = []
        self._pipes: dict[int, tuple[int, bytearray]] = {}
        self.fatal: list[str] = []
        for job in jobs:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                if cpus:
                    os.sched_setaffinity(0, parse_cpus(cpus))
                _child_main(job, w)
            os.close(w)
            os.set_blocking(r, False)
            self.pids.append(pid)
            self._pipes[r] = (job.index, bytearray())

    def poll(self, timeout: float) -> None:
        fds = list(self._pipes)
        if not fds:
            time.sleep(timeout)
            return
        ready, _, _ = select.select(fds, [], [], timeout)
        for fd in ready:
            index, buf = self._pipes[fd]
            try:
                chunk = os.read(fd, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                os.close(fd)
                del self._pipes[fd]
                continue
            buf += chunk
            *lines, rest = buf.split(b"\n")
            buf[:] = rest
            for line in lines:
                data = json.loads(line)
                if "fatal" in data:
                    self.fatal.append(f"client {index}: {data['fatal']}")
                self.latest[index] = data

    def done(self) -> bool:
        return not self._pipes

    def total(self, key: str) -> int:
        return sum(d.get(key, 0) for d in self.latest.values())

    def errors(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for d in self.latest.values():
            for name, n in d.get("errors", {}).items():
                out[name] = out.get(name, 0) + n
        return out

    def hist(self, key: str) -> list[int]:
        h = [0] * HIST_SIZE
        for d in self.latest.values():
            for i, n in d.get(key, {}).items():
                h[int(i)] += n
        return h

    def reap(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for pid in self.pids:
            while True:
                try:
                    done, _ = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    break
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    break
                self.poll(0.05)
        for fd in list(self._pipes):
            os.close(fd)
        self._pipes.clear()

    def kill(self) -> None:
        for pid in self.pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def parse_cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


# --- watching the server and the machine --------------------------------------------


def read_pid_file(path: str | None) -> int | None:
    if not path:
        return None
    try:
        return int(Path(path).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """``pid`` and every process under it (/proc/PID/task/*/children)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            continue
    return out


def proc_cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, ValueError, IndexError):
        return None


def proc_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes; PSS splits shared pages fairly between processes."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, pss


def meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                out[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def machine_cpu() -> tuple[int, int]:
    """(busy, total) ticks over all CPUs."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


class Watcher:
    """CPU shares (percent of the whole machine) and memory, once a second."""

    def __init__(self, server_pid: int | None, client_pids: list[int]):
        self.server_pid = server_pid
        self.client_pids = client_pids
        self.ncpu = os.cpu_count() or 1
        self._ticks: dict[int, int] = {}
        self._client_ticks: dict[int, int] = {}
        self._machine = machine_cpu()
        self._t = time.monotonic()
        self.sample(prime=True)

    def _delta(self, pids: list[int], memo: dict[int, int]) -> int:
        spent = 0
        for pid in pids:
            ticks = proc_cpu_ticks(pid)
            if ticks is None:
                continue
            spent += ticks - memo.get(pid, ticks)
            memo[pid] = ticks
        return spent

    def sample(self, prime: bool = False) -> dict:
        now = time.monotonic()
        elapsed = max(now - self._t, 1e-6)
        self._t = now
        out: dict = {}
        if self.server_pid is not None:
            pids = descendants(self.server_pid)
            spent = self._delta(pids, self._ticks)
            rss = pss = 0
            for pid in pids:
                r, p = proc_memory(pid)
                rss += r
                pss += p
            out.update(server_processes=len(pids), server_cpu=100.0 * spent / CLK_TCK / elapsed / self.ncpu,
                       server_rss=rss, server_pss=pss)
        spent = self._delta(self.client_pids, self._client_ticks)
        out["client_cpu"] = 100.0 * spent / CLK_TCK / elapsed / self.ncpu
        busy, total = machine_cpu()
        b0, t0 = self._machine
        self._machine = (busy, total)
        out["machine_cpu"] = 100.0 * (busy - b0) / max(total - t0, 1)
        mem = meminfo()
        if mem.get("MemTotal"):
            out["mem_used"] = 100.0 * (mem["MemTotal"] - mem.get("MemAvailable", 0)) / mem["MemTotal"]
            out["mem_used_bytes"] = mem["MemTotal"] - mem.get("MemAvailable", 0)
        if prime:
            self.baseline = out
        return out


# --- output -----------------------------------------------------------------------


def fmt_int(n: float | None) -> str:
    return "-" if n is None else f"{n:,.0f}"


def fmt_ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.2f} ms"


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    return f"{n:.1f}"


def render_rows(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def progress_line(summary: dict, sample: dict, target: int) -> str:
    est = summary["established_now"]
    frac = min(1.0, est / target) if target else 0.0
    bar = "#" * int(frac * 30) + "." * (30 - int(frac * 30))
    parts = [f"[{bar}] {est:,}/{target:,}", f"{summary['phase']}", f"err {summary['errors']:,}",
             f"resp/s {summary['responses_per_s']:,.0f}"]
    if "server_cpu" in sample:
        parts.append(f"server CPU {sample['server_cpu']:.0f}% RSS {fmt_bytes(sample['server_rss'])}")
    if "mem_used" in sample:
        parts.append(f"mem {sample['mem_used']:.0f}%")
    return " | ".join(parts)


def plot(path: str, samples: list[dict], title: str) -> str | None:
    """A PNG: connections and responses/s, memory, CPU over time. Returns an
    error text when it cannot be drawn (matplotlib missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'prefork[bench]'): no plot"
    t = [s["t"] for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    ax = axes[0]
    ax.plot(t, [s["established"] for s in samples], label="connections open")
    ax.set_ylabel("connections")
    ax2 = ax.twinx()
    ax2.plot(t, [s["responses_per_s"] for s in samples], color="tab:orange", label="responses/s")
    ax2.set_ylabel("responses/s")
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title(title)
    ax = axes[1]
    if any("server_rss" in s for s in samples):
        ax.plot(t, [s.get("server_rss", 0) / 2**30 for s in samples], label="server RSS (GiB)")
        ax.plot(t, [s.get("server_pss", 0) / 2**30 for s in samples], label="server PSS (GiB)")
    ax.plot(t, [s.get("mem_used_bytes", 0) / 2**30 for s in samples], label="machine memory used (GiB)")
    ax.set_ylabel("GiB")
    ax.legend(loc="upper left")
    ax = axes[2]
    for key, label in (("server_cpu", "server"), ("client_cpu", "client"), ("machine_cpu", "machine")):
        if any(key in s for s in samples):
            ax.plot(t, [s.get(key, 0) for s in samples], label=f"{label} CPU")
    ax.set_ylabel("% of all CPUs")
    ax.set_xlabel("seconds")
    ax.set_ylim(0, 100)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# --- connections --------------------------------------------------------------------


def plan_jobs(args: argparse.Namespace, per_process: int) -> list[ClientJob]:
    processes = args.processes or max(1, math.ceil(args.count / per_process))
    base, extra = divmod(args.count, processes)
    request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.target[0][0]}\r\n\r\n").encode()
    jobs, first = [], 0
    for i in range(processes):
        n = base + (i < extra)
        jobs.append(ClientJob(index=i, count=n, first=first, rate=args.rate / processes, targets=args.target,
                              sources=args.sources, ramp_timeout=args.ramp_timeout, hold=args.hold,
                              request_every=args.request_every, request=request))
        first += n
    return jobs


def run_connections(args: argparse.Namespace) -> int:
    hard = raise_nofile()
    per_process = hard - FD_MARGIN
    if args.sources is None:
        args.sources = auto_sources(args.count, args.target)
    if args.ramp_timeout is None:
        args.ramp_timeout = args.count / args.rate + 30
    jobs = plan_jobs(args, per_process)
    if any(job.count > per_process for job in jobs):
        print(f"error: {max(j.count for j in jobs):,} connections per process, but a process may open "
              f"only {per_process:,} (hard limit {hard:,}): use more --processes", file=sys.stderr)
        return 2
    pid_file = args.pid_file or ("prefork.pid" if Path("prefork.pid").exists() else None)
    server_pid = read_pid_file(pid_file)
    if pid_file and server_pid is None:
        print(f"warning: cannot read a pid from {pid_file}: no server figures", file=sys.stderr)
    print(f"prefork-bench connections: {args.count:,} to {', '.join(f'{h}:{p}' for h, p in args.target)} "
          f"from {len(jobs)} processes, {len(args.sources) or 'no'} source addresses, "
          f"{args.rate:,.0f}/s, hold {args.hold:g}s"
          + (f", a request every {args.request_every:g}s" if args.request_every else ""), file=sys.stderr)
    started = time.monotonic()
    clients = Clients(jobs, args.client_cpus)
    watcher = Watcher(server_pid, clients.pids)
    samples: list[dict] = [dict(watcher.baseline, t=0.0, established=0, responses=0, responses_per_s=0.0,
                                errors=0, phase="ramp")]
    last_responses, last_t = 0, started
    tty = sys.stderr.isatty()
    last_print = 0.0
    hard_stop = started + args.ramp_timeout + args.hold + 60
    interrupted = False
    try:
        next_sample = started + SAMPLE_EVERY
        while not clients.done():
            clients.poll(max(0.0, min(0.25, next_sample - time.monotonic())))
            now = time.monotonic()
            if now >= hard_stop:
                print("\nclients did not finish in time: stopping them", file=sys.stderr)
                clients.kill()
                break
            if now < next_sample:
                continue
            next_sample = now + SAMPLE_EVERY
            sample = watcher.sample()
            responses = clients.total("responses")
            phases = {d.get("phase") for d in clients.latest.values()}
            summary = {"established_now": clients.total("open"), "errors": sum(clients.errors().values()),
                       "responses_per_s": (responses - last_responses) / (now - last_t),
                       "phase": "ramp" if "ramp" in phases else "hold" if "hold" in phases else "drain"}
            last_responses, last_t = responses, now
            sample.update(t=round(now - started, 2), established=summary["established_now"],
                          responses=responses, responses_per_s=summary["responses_per_s"],
                          errors=summary["errors"], phase=summary["phase"])
            samples.append(sample)
            if tty:
                print("\r" + progress_line(summary, sample, args.count), end="", file=sys.stderr, flush=True)
            elif now - last_print >= 5:
                print(progress_line(summary, sample, args.count), file=sys.stderr, flush=True)
                last_print = now
    except KeyboardInterrupt:
        interrupted = True
        clients.kill()
    finally:
        clients.reap()
    if tty:
        print(file=sys.stderr)
    result = summarize(args, jobs, clients, samples, watcher, started)
    result["interrupted"] = interrupted
    print(render_connections(result))
    out = args.json or "prefork-bench-connections.json"
    Path(out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nJSON: {out}")
    png = args.plot or str(Path(out).with_suffix(".png"))
    problem = plot(png, samples, f"{args.count:,} connections"
                   + (f", a request every {args.request_every:g}s" if args.request_every else ""))
    print(problem or f"plot: {png}")
    ok = (not interrupted and not clients.fatal and result["established_max"] >= args.count
          and not result["errors"])
    return 0 if ok else 1


def summarize(args, jobs, clients: Clients, samples: list[dict], watcher: Watcher, started: float) -> dict:
    hold = [s for s in samples if s.get("phase") == "hold"]
    ramp_done = [d.get("ramp_done_at", 0) for d in clients.latest.values() if d.get("ramp_done_at")]
    established = clients.total("established")
    ramp_seconds = None
    if ramp_done:
        first_t0 = started
        ramp_seconds = max(ramp_done) - first_t0
    peak = max(samples, key=lambda s: s["established"], default={})
    base = watcher.baseline
    per_conn = None
    if peak.get("established") and "server_rss" in peak and "server_rss" in base:
        per_conn = {"rss": (peak["server_rss"] - base["server_rss"]) / peak["established"],
                    "pss": (peak["server_pss"] - base["server_pss"]) / peak["established"]}
    hold_responses = None
    if len(hold) >= 2:
        hold_responses = (hold[-1]["responses"] - hold[0]["responses"]) / (hold[-1]["t"] - hold[0]["t"])

    def avg(key, rows):
        values = [r[key] for r in rows if key in r]
        return sum(values) / len(values) if values else None

    def peak_of(key):
        values = [s[key] for s in samples if key in s]
        return max(values) if values else None

    lat, clat = clients.hist("lat"), clients.hist("clat")
    return {
        "command": " ".join(sys.argv),
        "target_connections": args.count,
        "targets": [f"{h}:{p}" for h, p in args.target],
        "client_processes": len(jobs),
        "source_addresses": len(args.sources),
        "rate": args.rate,
        "hold_s": args.hold,
        "request_every_s": args.request_every,
        "started": clients.total("started"),
        "established": established,
        "established_max": max((s["established"] for s in samples), default=0),
        "failed": clients.total("failed"),
        "dropped": clients.total("dropped"),
        "errors": clients.errors(),
        "fatal": clients.fatal,
        "ramp_s": ramp_seconds,
        "connect_s_per_1000": (ramp_seconds / (established / 1000)) if ramp_seconds and established else None,
        "connect_p50_s": percentile(clat, 0.5),
        "connect_p99_s": percentile(clat, 0.99),
        "requests_sent": clients.total("sent"),
        "responses": clients.total("responses"),
        "non_2xx": clients.total("non2xx"),
        "hold_responses_per_s": hold_responses,
        "latency_p50_s": percentile(lat, 0.5),
        "latency_p99_s": percentile(lat, 0.99),
        "latency_max_s": percentile(lat, 1.0),
        "server_cpu_hold_avg": avg("server_cpu", hold),
        "server_cpu_peak": peak_of("server_cpu"),
        "client_cpu_hold_avg": avg("client_cpu", hold),
        "machine_cpu_hold_avg": avg("machine_cpu", hold),
        "server_processes": peak.get("server_processes"),
        "server_rss_peak": peak_of("server_rss"),
        "server_pss_peak": peak_of("server_pss"),
        "server_bytes_per_connection": per_conn,
        "mem_used_peak_percent": peak_of("mem_used"),
        "mem_used_peak_bytes": peak_of("mem_used_bytes"),
        "samples": samples,
    }


def render_connections(r: dict) -> str:
    pct = (lambda v: "-" if v is None else f"{v:.1f}%")
    errors = ", ".join(f"{k} {v:,}" for k, v in sorted(r["errors"].items())) or "none"
    per = r["server_bytes_per_connection"]
    rows = [
        ("target connections", fmt_int(r["target_connections"])),
        ("established (peak open)", f"{fmt_int(r['established'])} ({fmt_int(r['established_max'])})"),
        ("failed / dropped", f"{fmt_int(r['failed'])} / {fmt_int(r['dropped'])}"),
        ("errors", errors),
        ("client processes / sources", f"{r['client_processes']} / {r['source_addresses']}"),
        ("ramp time", "-" if r["ramp_s"] is None else f"{r['ramp_s']:.1f} s"),
        ("connect time per 1,000", "-" if r["connect_s_per_1000"] is None
         else f"{r['connect_s_per_1000'] * 1000:.1f} ms"),
        ("connect latency p50 / p99", f"{fmt_ms(r['connect_p50_s'])} / {fmt_ms(r['connect_p99_s'])}"),
        ("requests / responses / non-2xx", f"{fmt_int(r['requests_sent'])} / {fmt_int(r['responses'])} / "
                                             f"{fmt_int(r['non_2xx'])}"),
        ("responses/s while holding", fmt_int(r["hold_responses_per_s"])),
        ("latency p50 / p99 / max", f"{fmt_ms(r['latency_p50_s'])} / {fmt_ms(r['latency_p99_s'])} / "
                                      f"{fmt_ms(r['latency_max_s'])}"),
        ("server CPU, holding (peak)", f"{pct(r['server_cpu_hold_avg'])} ({pct(r['server_cpu_peak'])}) "
                                         "of all CPUs"),
        ("client CPU / machine CPU, holding", f"{pct(r['client_cpu_hold_avg'])} / {pct(r['machine_cpu_hold_avg'])}"),
        ("server processes", fmt_int(r["server_processes"])),
        ("server RSS / PSS, peak", f"{fmt_bytes(r['server_rss_peak'])} / {fmt_bytes(r['server_pss_peak'])}"),
        ("server memory per connection", "-" if not per else
         f"{per['rss']:,.0f} B RSS, {per['pss']:,.0f} B PSS"),
        ("machine memory used, peak", f"{pct(r['mem_used_peak_percent'])} ({fmt_bytes(r['mem_used_peak_bytes'])})"),
    ]
    return render_rows(rows)


# --- accept -------------------------------------------------------------------------

STRATEGIES = {
    # name: (description, server settings)
    "one": ("1 process", {"workers": 1}),
    "threads": ("N threads, 1 process", {"mode": "thread"}),
    "shared": ("N processes, 1 shared socket (EPOLLEXCLUSIVE)", {"accept": "shared"}),
    "reuseport": ("N processes, SO_REUSEPORT socket each", {"accept": "reuseport"}),
}


def status_rows(port: int) -> list[dict]:
    """Per-worker lines of /status: [{"slot", "pid", "accepted", ...}]."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows, threads = [], []
    for line in data.decode("latin-1").splitlines():
        if line.startswith("reactor thread "):  # mode = "thread": a line per reactor
            words = line.replace(":", "").split()
            threads.append({"slot": int(words[2]), "accepted": int(words[words.index("accepted") + 1])})
        elif line.startswith("worker "):
            words = line.replace(":", "").split()
            row = {words[i]: int(words[i + 1]) for i in range(0, len(words) - 1, 2) if words[i + 1].isdigit()}
            row["slot"] = int(words[1])
            rows.append(row)
    return threads or rows


def settled_status(port: int, timeout: float = 5.0) -> list[dict]:
    """/status once the counters stop moving: workers publish theirs once a
    second, so two reads a tick apart that agree are the final numbers."""
    rows = status_rows(port)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1.1)  # one worker tick: the counters' refresh period  # noqa: not a readiness check
        again = status_rows(port)
        if [r.get("accepted") for r in again] == [r.get("accepted") for r in rows]:
            return again
        rows = again
    return rows


def accept_config(strategy: str, port: int, workers: int, backlog: int) -> str:
    settings = {"workers": workers, "worker_connections": 10000, "accept": "reuseport", "mode": "process"}
    settings.update(STRATEGIES[strategy][1])
    server = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f"""[server]
{server}
pid_file = "prefork.pid"
threads = 0

[[listen]]
address = "127.0.0.1:{port}"
protocol = "http"
backlog = {backlog}

[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/status"
handler = "status"

[log]
access_log = ""
level = "warning"
"""


def run_accept(args: argparse.Namespace) -> int:
    raise_nofile()
    results = []
    for name in args.strategies:
        with tempfile.TemporaryDirectory(prefix="prefork-accept-") as tmp:
            port = free_port()
            Path(tmp, "server.toml").write_text(accept_config(name, port, args.workers, args.backlog))
            argv = [sys.executable, "-m", "prefork.cli", "-c", "server.toml"]
            if args.server_cpus:
                argv = ["taskset", "-c", args.server_cpus] + argv
            log = open(Path(tmp, "server.log"), "wb")
            proc = subprocess.Popen(argv, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(proc, port, 20.0)
                # every worker must be up before the clock starts
                deadline = time.monotonic() + 20
                expected = 1 if name == "one" else args.workers
                while len(status_rows(port)) < expected and time.monotonic() < deadline:
                    proc.poll()
                before = {r["slot"]: r.get("accepted", 0) for r in status_rows(port)}
                print(f"[{name}] {STRATEGIES[name][0]}: {args.duration:g}s of connect + GET + close, "
                      f"{args.clients} client processes x {args.concurrency} in flight", file=sys.stderr)
                result = churn(port, args)
                after = settled_status(port)
            finally:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                log.close()
            shares = [r.get("accepted", 0) - before.get(r["slot"], 0) for r in after]
            result.update(strategy=name, description=STRATEGIES[name][0],
                          workers=1 if name == "one" else args.workers, per_worker=shares)
            if len(shares) != result["workers"]:
                result["errors"]["status shows a different worker count"] = 1
            results.append(result)
    print(render_accept(results, args))
    out = args.json or "prefork-bench-accept.json"
    Path(out).write_text(json.dumps({"command": " ".join(sys.argv), "results": results}, indent=2) + "\n")
    print(f"\nJSON: {out}")
    png = args.plot or str(Path(out).with_suffix(".png"))
    problem = plot_accept(png, results)
    print(problem or f"plot: {png}")
    return 0 if all(r["completed"] for r in results) else 1


def churn(port: int, args: argparse.Namespace) -> dict:
    request = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    sources = auto_sources(args.clients * args.concurrency * 2000, [("127.0.0.1", port)])
    jobs = [ClientJob(index=i, count=args.concurrency, first=i * 100003, rate=0.0,
                      targets=[("127.0.0.1", port)], sources=sources, ramp_timeout=0.0, hold=0.0,
                      request_every=0.0, request=request, churn=True, duration=args.duration)
            for i in range(args.clients)]
    started = time.monotonic()
    clients = Clients(jobs, args.client_cpus)
    try:
        while not clients.done() and time.monotonic() < started + args.duration + 30:
            clients.poll(0.25)
    finally:
        if not clients.done():
            clients.kill()
        clients.reap()
    elapsed = max(d.get("t", started) for d in clients.latest.values()) - started if clients.latest else 0
    completed = clients.total("completed")
    lat = clients.hist("lat")
    return {"completed": completed, "seconds": round(elapsed, 2),
            "per_second": completed / elapsed if elapsed else 0.0,
            "ms_per_1000": 1000 * 1000 / (completed / elapsed) if completed and elapsed else None,
            "latency_p50_s": percentile(lat, 0.5), "latency_p99_s": percentile(lat, 0.99),
            "errors": clients.errors(), "fatal": clients.fatal}


def evenness(shares: list[int]) -> str:
    if len(shares) < 2 or not sum(shares):
        return "-"
    mean = sum(shares) / len(shares)
    return f"{min(shares) / mean:.2f}-{max(shares) / mean:.2f}"


def render_accept(results: list[dict], args: argparse.Namespace) -> str:
    header = ["strategy", "workers", "conn/s", "ms per 1,000", "p99", "spread (min-max / mean)",
              "per worker", "errors"]
    rows = [header]
    for r in results:
        errors = sum(r["errors"].values())
        rows.append([r["description"], str(r["workers"]), fmt_int(r["per_second"]),
                     "-" if r["ms_per_1000"] is None else f"{r['ms_per_1000']:.1f}",
                     fmt_ms(r["latency_p99_s"]),
                     evenness(r["per_worker"]),
                     "/".join(f"{s:,}" for s in r["per_worker"]), f"{errors:,}"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    base = results[0]["per_second"] if results else 0
    lines += ["", "conn/s: connections that went through connect, GET /plaintext, response, close, per "
              "second;", "spread: the fewest and the most connections one worker accepted, over the mean "
              "(1.00-1.00 is perfectly even)."]
    if base:
        lines.append("relative to the first row: " + ", ".join(
            f"{r['strategy']} {r['per_second'] / base:.2f}x" for r in results))
    return "\n".join(lines)


def plot_accept(path: str, results: list[dict]) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install 'prefork[bench]'): no plot"
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r["strategy"] for r in results]
    a1.bar(names, [r["per_second"] for r in results])
    a1.set_ylabel("new connections per second")
    a1.set_title("accept throughput")
    for i, r in enumerate(results):
        shares = r["per_worker"]
        total = sum(shares) or 1
        bottom = 0.0
        for s in shares:
            a2.bar(i, s / total * 100, bottom=bottom)
            bottom += s / total * 100
    a2.set_xticks(range(len(names)), names)
    a2.set_ylabel("% of connections, by worker")
    a2.set_title("how workers share them")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return None


# --- http ---------------------------------------------------------------------------


def run_http(rest: list[str]) -> int:
    from . import httpbench
    return httpbench.main(rest)


# --- main ---------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="prefork-bench", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    c = sub.add_parser("connections", help="open, hold and exercise many connections")
    c.add_argument("--target", type=parse_targets, default=parse_targets("127.0.0.1:8080"),
                   help="HOST:PORT[,HOST:PORT...] (default: 127.0.0.1:8080)")
    c.add_argument("--count", type=int, required=True, help="connections to open")
    c.add_argument("--rate", type=float, default=10000.0, help="new connections per second (default: 10000)")
    c.add_argument("--hold", type=float, default=30.0, help="seconds to hold them once open (default: 30)")
    c.add_argument("--request-every", type=float, default=0.0, metavar="SECONDS",
                   help="send one request per connection every SECONDS while holding (default: none)")
    c.add_argument("--path", default="/plaintext", help="the request's path (default: /plaintext)")
    c.add_argument("--sources", type=parse_sources, default=None,
                   help="source addresses: 127.0.0.2-127.0.0.60, a list, or none "
                        "(default: enough 127.0.x.y for the count)")
    c.add_argument("--processes", type=int, default=0, help="client processes (default: as the fd limit needs)")
    c.add_argument("--ramp-timeout", type=float, default=None,
                   help="seconds to wait for every connection (default: count / rate + 30)")
    c.add_argument("--pid-file", help="the server's pid file, to measure its CPU and memory "
                                      "(default: ./prefork.pid when present)")
    c.add_argument("--client-cpus", help="taskset-style CPU list for the client processes")
    c.add_argument("--json", help="where to write the JSON (default: prefork-bench-connections.json)")
    c.add_argument("--plot", help="where to write the PNG (default: beside the JSON)")

    a = sub.add_parser("accept", help="compare the accept strategies")
    a.add_argument("--workers", type=int, default=2, help="threads or processes (default: 2)")
    a.add_argument("--duration", type=float, default=5.0, help="seconds per strategy (default: 5)")
    a.add_argument("--clients", type=int, default=2, help="client processes (default: 2)")
    a.add_argument("--concurrency", type=int, default=32, help="connections in flight per client (default: 32)")
    a.add_argument("--strategies", default=",".join(STRATEGIES),
                   help=f"comma-separated, in this order (default: {','.join(STRATEGIES)})")
    a.add_argument("--backlog", type=int, default=4096, help="listen backlog (default: 4096)")
    a.add_argument("--server-cpus", default=None, help="taskset CPU list for the server (e.g. 0)")
    a.add_argument("--client-cpus", default=None, help="CPU list for the clients (e.g. 1)")
    a.add_argument("--json", help="where to write the JSON (default: prefork-bench-accept.json)")
    a.add_argument("--plot", help="where to write the PNG (default: beside the JSON)")

    sub.add_parser("http", help="wrk throughput: prefork against nginx and uvicorn (bench/http.py)",
                   add_help=False)
    args, rest = parser.parse_known_args(argv)
    args.rest = rest
    if args.command != "http" and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "connections":
        if args.count < 1 or args.rate <= 0 or args.hold < 0 or args.request_every < 0:
            parser.error("--count and --rate must be > 0, --hold and --request-every >= 0")
    if args.command == "accept":
        items = [s.strip() for s in args.strategies.split(",") if s.strip()]
        unknown = [s for s in items if s not in STRATEGIES]
        if not items or unknown:
            parser.error(f"--strategies: expected some of {', '.join(STRATEGIES)}, got {args.strategies!r}")
        args.strategies = items
        if args.workers < 1 or args.clients < 1 or args.concurrency < 1 or args.duration <= 0:
            parser.error("--workers, --clients, --concurrency and --duration must be > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "connections":
        return run_connections(args)
    if args.command == "accept":
        return run_accept(args)
    return run_http(args.rest)


if __name__ == "__main__":
    sys.exit(main())
