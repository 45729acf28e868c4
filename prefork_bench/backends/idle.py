"""Part 2: a worker's memory per idle keep-alive connection, with a client process of its own."""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from ..net import HOST, STOP_TIMEOUT, http_get, http_ok
from ..procs import Quiet, raise_nofile, wrk_pids
from ..tools import BenchError, pin, repo_env
from .model import (CHECK_TIMEOUT, IDLE_BATCH, IDLE_CLIENT_LIFETIME, IDLE_OPEN_TIMEOUT, MEM_POLL,
                    MEM_STABLE_KB, MEM_STABLE_READINGS, MEM_STABLE_TIMEOUT, PLAINTEXT, WARM_CONNECTIONS,
                    WARM_SEQUENTIAL, BackendResult, Idle, Mem)
from .server import Server, check_plaintext, established, exchange, parse_responses, worker_memory


def open_keepalive(port: int, n: int, deadline: float,
                   batch: int = IDLE_BATCH) -> tuple[list[socket.socket], collections.Counter]:
    """Open n connections, non-blocking, ``batch`` at a time; on each send one
    GET /plaintext and read the whole response.  Returns the sockets that got
    a correct response (now idle keep-alive) and a count of failures by kind."""
    request = f"GET {PLAINTEXT} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode()
    done: list[socket.socket] = []
    failures: collections.Counter = collections.Counter()
    sel = selectors.DefaultSelector()

    def fail(sock: socket.socket, why: str) -> None:
        failures[why] += 1
        with contextlib.suppress(KeyError, ValueError):
            sel.unregister(sock)
        sock.close()

    try:
        for start in range(0, n, batch):
            pending: dict[socket.socket, list] = {}     # sock -> [phase, buffer]
            for _ in range(min(batch, n - start)):
                try:
                    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                except OSError as error:
                    failures[f"socket(): {errno.errorcode.get(error.errno, error)}"] += 1
                    continue
                sock.setblocking(False)
                code = sock.connect_ex((HOST, port))
                if code not in (0, errno.EINPROGRESS):
                    fail(sock, f"connect: {errno.errorcode.get(code, code)}")
                    continue
                pending[sock] = ["connect", b""]
                sel.register(sock, selectors.EVENT_WRITE)
            while pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    for sock in list(pending):
                        fail(sock, "timed out")
                    pending.clear()
                    break
                for key, _ in sel.select(timeout=min(1.0, left)):
                    sock = key.fileobj
                    state = pending[sock]
                    try:
                        if state[0] == "connect":
                            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if code:
                                del pending[sock]
                                fail(sock, f"connect: {errno.errorcode.get(code, code)}")
                                continue
                            if sock.send(request) != len(request):
                                del pending[sock]
                                fail(sock, "short send")
                                continue
                            state[0] = "read"
                            sel.modify(sock, selectors.EVENT_READ)
                            continue
                        data = sock.recv(4096)
                    except OSError as error:
                        del pending[sock]
                        fail(sock, f"{type(error).__name__}: "
                                   f"{errno.errorcode.get(error.errno, error)}")
                        continue
                    if not data:
                        del pending[sock]
                        fail(sock, "closed before a complete response")
                        continue
                    state[1] += data
                    try:
                        responses, rest = parse_responses(state[1])
                    except BenchError as error:
                        del pending[sock]
                        fail(sock, str(error)[:80])
                        continue
                    if not responses:
                        continue
                    del pending[sock]
                    status, headers, body = responses[0]
                    problem = check_plaintext(status, headers, body)
                    if problem or rest or len(responses) > 1:
                        fail(sock, f"bad response: {problem or 'extra bytes'}"[:80])
                    elif headers.get("connection", "").lower() == "close":
                        fail(sock, "server said Connection: close")
                    else:
                        sel.unregister(sock)
                        done.append(sock)
    except BaseException:
        for sock in done:
            sock.close()
        raise
    finally:
        sel.close()
    return done, failures


def idle_client(port: int, n: int) -> int:
    """The idle-connection client (a process of its own): open n keep-alive
    connections, report on stdout as one JSON line, hold them until a line
    (or EOF) on stdin, or until IDLE_CLIENT_LIFETIME; then close them and exit."""
    raise_nofile()
    started = time.monotonic()
    socks, failures = open_keepalive(port, n, started + IDLE_OPEN_TIMEOUT)
    report = {"opened": len(socks), "failed": sum(failures.values()),
              "failures": dict(failures), "seconds": round(time.monotonic() - started, 2)}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    with selectors.DefaultSelector() as sel:
        sel.register(sys.stdin, selectors.EVENT_READ)
        sel.select(timeout=max(1.0, IDLE_CLIENT_LIFETIME - (time.monotonic() - started)))
    for sock in socks:
        sock.close()
    return 0


def stable_memory(pid: int, timeout: float = MEM_STABLE_TIMEOUT) -> tuple[Mem, bool]:
    """Poll the worker's memory until MEM_STABLE_READINGS readings in a row
    are within MEM_STABLE_KB (RSS and USS); (last reading, whether it settled)."""
    readings: list[Mem] = []
    deadline = time.monotonic() + timeout
    while True:
        readings.append(worker_memory(pid))
        window = readings[-MEM_STABLE_READINGS:]
        if len(window) == MEM_STABLE_READINGS and all(
                max(getattr(m, k) for m in window) - min(getattr(m, k) for m in window)
                <= MEM_STABLE_KB for k in ("rss_kb", "uss_kb")):
            return readings[-1], True
        if time.monotonic() >= deadline:
            return readings[-1], False
        time.sleep(MEM_POLL)


def read_line(stream, timeout: float) -> str:
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout=timeout):
            raise BenchError(f"the idle client reported nothing within {timeout:.0f}s")
    return stream.readline().decode(errors="replace")


def measure_idle(backend: str, args: argparse.Namespace, workdir: Path, docroot: Path,
                 quiet: Quiet, result: BackendResult) -> None:
    idle = result.idle = Idle(requested=args.idle)
    server_dir = workdir / f"{backend}-idle"
    server_dir.mkdir()
    server = Server(backend, 1, args.idle + 100, server_dir, docroot, args)
    client: subprocess.Popen | None = None
    try:
        server.start()
        idle.worker_pid = pid = server.workers()[0]
        problem = check_plaintext(*http_get(server.port, PLAINTEXT, CHECK_TIMEOUT))
        if problem:
            raise BenchError(f"GET {PLAINTEXT}: {problem}")
        # warm-up: the accept path, a request on many connections, and keep-alive
        socks, failures = open_keepalive(server.port, WARM_CONNECTIONS,
                                         time.monotonic() + CHECK_TIMEOUT)
        for sock in socks:
            sock.close()
        if failures:
            raise BenchError(f"warm-up connections failed: {dict(failures)}")
        exchange(server.port, [PLAINTEXT] * WARM_SEQUENTIAL, False)
        idle.contended = not quiet.wait(f"{backend}] [idle")
        deadline = time.monotonic() + 10
        while established(server.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        idle.before, stable_before = stable_memory(pid)
        print(f"[{backend}] idle: worker {pid} before: RSS {idle.before.rss_kb} kB, USS "
              f"{idle.before.uss_kb} kB, {idle.before.fds} fds; opening {args.idle} "
              "connections ...", file=sys.stderr)
        argv = [sys.executable, "-m", "prefork_bench.backends.cli", "--idle-client",
                str(server.port), str(args.idle)]
        client = subprocess.Popen(pin(args.wrk_cpus, argv, not args.no_pin), env=repo_env(),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=open(server_dir / "client.err", "wb"))
        line = read_line(client.stdout, IDLE_OPEN_TIMEOUT + 30)
        if not line.strip():
            err = (server_dir / "client.err").read_text(errors="replace")[-2000:]
            raise BenchError(f"the idle client exited with {client.poll()}: {err}")
        report = json.loads(line)
        idle.opened, idle.failed = report["opened"], report["failed"]
        idle.failures, idle.open_seconds = report["failures"], report["seconds"]
        print(f"[{backend}] idle: client opened {idle.opened} in {idle.open_seconds}s, "
              f"{idle.failed} failed {idle.failures or ''}", file=sys.stderr)
        deadline = time.monotonic() + 30
        while True:
            idle.established = established(server.port)
            if idle.established >= idle.opened or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        idle.after, stable_after = stable_memory(pid)
        idle.stable = stable_before and stable_after
        idle.contended = idle.contended or bool(wrk_pids())
        if not server.master_alive() or pid not in server.workers():
            raise BenchError("the worker did not survive the idle connections")
        print(f"[{backend}] idle: {idle.established} established on the server side; "
              f"worker after: RSS {idle.after.rss_kb} kB, USS {idle.after.uss_kb} kB, "
              f"{idle.after.fds} fds -> {idle.rss_per_conn:,.0f} B/conn RSS, "
              f"{idle.uss_per_conn:,.0f} B/conn USS", file=sys.stderr)
    except (BenchError, OSError, ValueError, KeyError, IndexError) as error:
        idle.failure = str(error)
        print(f"[{backend}] idle FAILED: {server.failure_text(error)}", file=sys.stderr)
    finally:
        if client is not None:
            with contextlib.suppress(OSError):
                client.stdin.write(b"close\n")
                client.stdin.flush()
            try:
                client.wait(timeout=30)
            except subprocess.TimeoutExpired:
                print(f"[{backend}] idle client {client.pid} did not exit; SIGKILL",
                      file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(client.pid, signal.SIGKILL)
                client.wait(timeout=STOP_TIMEOUT)
            for stream in (client.stdin, client.stdout):
                with contextlib.suppress(OSError):
                    stream.close()
        try:
            if idle.failure is None and server.master_alive():
                deadline = time.monotonic() + 30
                while established(server.port) and time.monotonic() < deadline:
                    time.sleep(0.2)
                idle.alive_after_close = http_ok(server.port, CHECK_TIMEOUT)
                with contextlib.suppress(OSError):
                    idle.after_close = worker_memory(idle.worker_pid)
        finally:
            server.stop()
            result.idle_left_over_workers = server.left_over
            result.idle_log_lines = server.log_problems()
            server.keep_logs(f"{backend}-idle")
