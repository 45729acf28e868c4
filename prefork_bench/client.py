"""The client processes of ``prefork-bench connections`` and ``accept``.

Each client process runs its own epoll loop (no framework: the client must
not be the bottleneck, and must stay small at a million connections). It
reports cumulative counters to the parent as a JSON line on a pipe every half
second; the parent adds them up, samples the server (CPU and memory of the
processes under the pid file) and the machine once a second, draws the
progress bar, and writes the table, the JSON and the PNG at the end.
"""

from __future__ import annotations

import errno
import heapq
import json
import math
import os
import random
import select
import signal
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable

from .procs import die_with_parent, parse_cpus, raise_nofile

IP_BIND_ADDRESS_NO_PORT = 24   # Linux: bind() picks no port; connect() picks one unique for the 4-tuple
REPORT_EVERY = 0.5             # seconds between a client process's reports
DRAIN_TIMEOUT = 10.0           # seconds to wait for responses still due when the hold ends
HIST_SCALE = 8                 # latency histogram: 8 buckets per power of two of microseconds
HIST_SIZE = HIST_SCALE * 32


# --- latency histograms -----------------------------------------------------------


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


# --- the client process -----------------------------------------------------------


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


# --- the parent's side ------------------------------------------------------------


class Clients:
    """The client processes, from the parent's side."""

    def __init__(self, jobs: list, cpus: str | None = None, child: Callable[[Any, int], None] | None = None):
        """Fork one process per job, running ``child(job, out)`` (this module's
        ``ClientProcess`` by default; it must end with ``os._exit``)."""
        child = child or _child_main
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
                child(job, w)
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
