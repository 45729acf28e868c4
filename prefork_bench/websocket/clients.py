"""The WebSocket client processes: each holds its share of the subscribers
in its own epoll loop (raw non-blocking sockets, ``frames`` for the framing),
counts what arrives (``deliveries.Deliveries``) and reports cumulative JSON
lines to the parent every half second, until the parent closes the stop pipe
(or its own deadline passes, or the parent dies: PR_SET_PDEATHSIG).

The per-message cost is one ``recv``, a 2-byte frame header and an ``int()``
of the sequence number; pings get their pong. Connections come from many
127.0.x.y source addresses (``IP_BIND_ADDRESS_NO_PORT``), as in
``prefork-bench connections``.
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import socket
import time
from dataclasses import dataclass

from ..client import HIST_SIZE, IP_BIND_ADDRESS_NO_PORT, errno_name, hist_index
from ..procs import die_with_parent, raise_nofile
from .deliveries import Deliveries
from .frames import (BINARY, CLOSE, PING, PONG, TEXT, FrameError, client_frame, handshake, handshake_status,
                     message_seq, parse_frame)

REPORT_EVERY = 0.5             # seconds between a client process's reports
CONNECTING, HANDSHAKE, OPEN = range(3)
MAX_HEAD = 8192                # a handshake answer longer than this is an error


class _Conn:
    __slots__ = ("sock", "state", "started", "buf", "last")

    def __init__(self, sock: socket.socket, started: float):
        self.sock = sock
        self.state = CONNECTING
        self.started = started
        self.buf = b""
        self.last = -1           # the last sequence number this connection got


@dataclass
class WsJob:
    """What one client process does."""
    index: int
    count: int                 # connections to open and hold
    first: int                 # global number of its first connection: picks its source address
    rate: float                # new connections per second, this process
    host: str
    port: int
    path: str                  # /ws/<channel>
    sources: list[str]
    ramp_timeout: float        # stop opening after this long
    deadline: float            # seconds after which the process ends whatever happens
    stop_r: int                # the stop pipe: EOF means "report and go"
    stop_w: int                # its write end, closed in the child


class WsClientProcess:
    def __init__(self, job: WsJob, out: int):
        self.job = job
        self.out = out
        self.ep = select.epoll()
        self.conns: dict[int, _Conn] = {}
        self.started = self.established = self.failed = self.dropped = self.open = 0
        self.errors: dict[str, int] = {}
        self.clat = [0] * HIST_SIZE          # connect() -> 101
        self.deliveries = Deliveries()
        self.pings = 0
        self.phase = "ramp"
        self.ramp_done_at = 0.0
        self.stopping = False
        self.request = handshake(job.host, job.path)

    def report(self, now: float, done: bool = False) -> None:
        data = {"i": self.job.index, "t": now, "phase": self.phase, "started": self.started,
                "established": self.established, "open": self.open,
                "failed": self.failed, "dropped": self.dropped, "errors": self.errors, "pings": self.pings,
                "clat": {i: n for i, n in enumerate(self.clat) if n}, "ramp_done_at": self.ramp_done_at,
                "done": done, **self.deliveries.report()}
        try:
            os.write(self.out, (json.dumps(data) + "\n").encode())
        except BlockingIOError:
            pass  # the parent is behind: the next report carries the same totals
        except OSError:
            raise SystemExit(0)  # the parent is gone

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    def open_one(self, now: float) -> None:
        job = self.job
        number = job.first + self.started
        self.started += 1
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:
            self.failed += 1
            self.error(errno_name(exc.errno))
            return
        try:
            if job.sources:
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                sock.bind((job.sources[number % len(job.sources)], 0))
            sock.setblocking(False)
            code = sock.connect_ex((job.host, job.port))
        except OSError as exc:
            code = exc.errno
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            self.failed += 1
            self.error(errno_name(code))
            return
        self.conns[sock.fileno()] = _Conn(sock, now)
        self.ep.register(sock.fileno(), select.EPOLLOUT)

    def close(self, fd: int, conn: _Conn, failed: bool = False) -> None:
        self.conns.pop(fd, None)
        try:
            self.ep.unregister(fd)
        except OSError:
            pass
        conn.sock.close()
        if failed:
            self.failed += 1
        elif conn.state == OPEN:
            self.open -= 1
            self.dropped += 1

    def on_event(self, fd: int, ev: int, now: float) -> None:
        conn = self.conns.get(fd)
        if conn is None:
            return
        if conn.state == CONNECTING:
            code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.error(errno_name(code))
                self.close(fd, conn, failed=True)
            elif ev & select.EPOLLOUT:
                try:
                    conn.sock.send(self.request)
                except OSError as exc:
                    self.error(f"send {errno_name(exc.errno)}")
                    self.close(fd, conn, failed=True)
                    return
                conn.state = HANDSHAKE
                self.ep.modify(fd, select.EPOLLIN)
            return
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.error(f"recv {errno_name(exc.errno)}")
            self.close(fd, conn, failed=conn.state == HANDSHAKE)
            return
        if not data:
            if not self.stopping:
                self.error("closed by server" if conn.state == OPEN else "closed during the handshake")
            self.close(fd, conn, failed=conn.state == HANDSHAKE)
            return
        if conn.buf:
            data = conn.buf + data
            conn.buf = b""
        if conn.state == HANDSHAKE:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD:
                    self.error("handshake answer too long")
                    self.close(fd, conn, failed=True)
                else:
                    conn.buf = data
                return
            status = handshake_status(data[:end])
            if status != 101:
                self.error(f"handshake {status}")
                self.close(fd, conn, failed=True)
                return
            conn.state = OPEN
            self.established += 1
            self.open += 1
            self.clat[hist_index(now - conn.started)] += 1
            data = data[end + 4:]
            if not data:
                return
        self.frames(fd, conn, data, now)

    def frames(self, fd: int, conn: _Conn, data: bytes, now: float) -> None:
        at = 0
        deliveries = self.deliveries
        while True:
            try:
                frame = parse_frame(data, at)
            except FrameError as exc:
                self.error(f"bad frame: {exc}")
                self.close(fd, conn)
                return
            if frame is None:
                break
            opcode, payload, at = frame
            if opcode == TEXT or opcode == BINARY:
                conn.last = deliveries.record(conn.last, message_seq(payload), now)
            elif opcode == PING:
                self.pings += 1
                try:
                    conn.sock.send(client_frame(PONG, payload))
                except OSError:
                    pass  # the next read says why
            elif opcode == CLOSE:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.error(f"close {code} from the server")
                self.close(fd, conn)
                return
        if at < len(data):
            conn.buf = data[at:]

    def run(self) -> None:
        job = self.job
        clock = time.monotonic
        t0 = clock()
        end_of_ramp = t0 + job.ramp_timeout
        stop_at = t0 + job.deadline
        next_report = t0
        ep = self.ep
        ep.register(job.stop_r, select.EPOLLIN)
        while True:
            now = clock()
            if self.phase == "ramp":
                want = min(job.count - self.started, int((now - t0) * job.rate) + 1 - self.started, 512)
                for _ in range(max(0, want)):
                    self.open_one(now)
                if (self.started >= job.count and self.established + self.failed >= job.count) or now >= end_of_ramp:
                    self.phase = "hold"
                    self.ramp_done_at = now
            if now >= stop_at:
                self.error("stopped by the client's own deadline")
                break
            timeout = 0.002 if self.phase == "ramp" else min(REPORT_EVERY, stop_at - now)
            events = ep.poll(max(0.0, timeout), 4096)
            now = clock()
            for fd, ev in events:
                if fd == job.stop_r:
                    self.stopping = True
                else:
                    self.on_event(fd, ev, now)
            if self.stopping:
                break
            if now >= next_report:
                self.report(now)
                next_report = now + REPORT_EVERY
        self.report(clock(), done=True)
        for fd, conn in list(self.conns.items()):
            self.conns.pop(fd)
            conn.sock.close()


def ws_child_main(job: WsJob, out: int) -> None:
    """A client process's life (forked by ``client.Clients``)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.close(job.stop_w)
    raise_nofile()
    code = 0
    try:
        WsClientProcess(job, out).run()
    except SystemExit:
        pass
    except BaseException as exc:  # report and go: the parent shows it
        try:
            os.write(out, (json.dumps({"i": job.index, "fatal": repr(exc), "done": True}) + "\n").encode())
        except OSError:
            pass
        code = 1
    os._exit(code)
