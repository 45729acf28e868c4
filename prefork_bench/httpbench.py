"""HTTP benchmark: prefork against nginx and uvicorn, driven by wrk.

Usage: ``prefork-bench http [options]``, or from a checkout::

    python bench/http.py [--workers N] [--duration SECONDS] [--rounds N]
                         [--servers prefork,nginx,uvicorn]
                         [--scenarios keepalive-64,keepalive-1000,close-64,pipeline16-64,
                                      static4k-64,static1m-16]
                         [--json FILE] [--no-pin]

Each server is started in turn with the same number of worker processes,
warmed up with a short wrk run, and then measured with ``wrk --latency`` in
every scenario.  The first four fetch ``GET /plaintext`` (a 13-byte
``Hello, World!`` text/plain body), the last two a static file:

    keepalive-64     keep-alive, 64 connections
    keepalive-1000   keep-alive, 1000 connections
    close-64         a new TCP connection per request (``Connection: close``),
                     64 concurrent connections
    pipeline16-64    keep-alive, 64 connections, 16 requests written at once
                     per connection (HTTP/1.1 pipelining, from a Lua script)
    static4k-64      keep-alive, 64 connections, ``GET /static/4k.bin``
                     (4 KiB of random bytes)
    static1m-16      keep-alive, 16 connections, ``GET /static/1m.bin``
                     (1 MiB of random bytes): a bandwidth test

Static files: the script writes both files into a document root in its
temporary directory.  prefork serves it with its built-in ``static`` handler
(a ``[[route]]`` for ``/static/`` next to the one for ``/plaintext``, and
``[static] root``); prefork keeps files up to 64 KiB in memory and sends
larger ones with sendfile.  nginx serves the same directory with
``location /static/ { alias DOCROOT/; }`` and is tuned the way one would
tune it for static files: ``sendfile on; tcp_nopush on;`` and
``open_file_cache max=1000 inactive=20s;`` (so neither server opens or stats
the file per request).  uvicorn takes no part in the static scenarios: a raw
ASGI app reading files would be a strawman, so its cells there show ``-``
and no prefork/uvicorn ratio is computed.  Before measuring, the script
fetches each file once from each server and compares the body with the file
byte for byte; a server that answers wrongly (status, length or content) is
reported as failed for the scenarios using that file (``FAILED`` in the
table, the reason under it) and is not measured there.

What the numbers mean:

* ``req/s`` is wrk's ``Requests/sec``: completed responses per second over
  the whole run, including non-2xx ones.  In the pipelined scenario every
  pipelined response counts as one request.
* ``p99`` is the 99th percentile of wrk's latency distribution in ms: the
  time from writing a request to reading its complete response.  wrk sends
  the next request on a connection only once the response is back (a
  closed loop) and then adds synthetic samples for stalls longer than twice
  the mean interval between responses (its coordinated-omission
  correction).  Requests that hit wrk's ``--timeout`` count as timeout
  errors, not as samples.  With pipelining wrk records one sample per
  batch of 16 but corrects as if each response were a sample, so its
  percentiles come out wrong (often ``0.00us``): the table shows ``n/a``
  for the pipelined p99, and ``--json`` keeps wrk's figures marked
  ``latency_valid: false``.
* ``prefork/nginx`` and ``prefork/uvicorn`` are the ratio of prefork's
  req/s to the other server's, from the same run (above 1.00x: prefork
  served more).
* ``MB/s`` (a footnote for static1m-16) is wrk's ``Transfer/sec``: response
  bytes, headers included, read per second; wrk's MB is 2^20 bytes.
* ``*`` after req/s marks a client-bound run: wrk itself used at least 90%
  of its CPU, so the server might have served more than wrk could ask for.
  wrk's CPU includes kernel TCP work charged to it: on loopback, softirq
  processing of the server's sends can run on wrk's CPU (seen with large
  files), so ``*`` there may mean that the server's way of sending costs
  the client's core, not that wrk's own code is the limit.
* ``errors`` sums wrk's socket errors (connect, read, write, timeout) and
  its ``Non-2xx or 3xx responses``; a footnote under the table breaks down
  every non-zero count.

By default every server process is pinned to CPU 0 and wrk (one thread) to
CPU 1 with ``taskset``, so client and server do not compete for a core;
``--no-pin`` turns that off.  Only 127.0.0.1 is ever targeted.

The tools are installed when missing: ``wrk`` and ``nginx-light`` with
apt-get (nginx runs from a generated config in a temporary directory, never
the system one), uvicorn, uvloop and httptools with pip into a venv of this
script's own (``bench/.venv-uvicorn`` by default).  prefork is run from this
repository as ``python -m prefork.cli -c CONFIG`` with a generated config.
A server that fails to start is reported with its output and shown as
``n/a``.  The script uses the Python standard library only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from string import Template
from typing import Iterator

REPO_ROOT = Path(__file__).resolve().parent.parent  # the directory that holds the prefork package
DEFAULT_VENV = (REPO_ROOT / "bench" / ".venv-uvicorn" if (REPO_ROOT / "bench").is_dir()
                else Path.home() / ".cache" / "prefork-bench" / "venv-uvicorn")

HOST = "127.0.0.1"
URL_PATH = "/plaintext"
BODY = "Hello, World!"
STATIC_PREFIX = "/static/"
STATIC_FILES = {"4k.bin": 4096, "1m.bin": 1 << 20}   # name -> size in bytes
STATIC_SERVERS = ("prefork", "nginx")                 # who takes part in the static scenarios
VERIFY_TIMEOUT = 10.0          # seconds for one verification GET of a static file
SERVERS = ("prefork", "nginx", "uvicorn")
UVICORN_PACKAGES = ("uvicorn", "uvloop", "httptools", "orjson")  # orjson: bench/tfb.py's app
LISTEN_BACKLOG = 4096          # the same accept queue for every server
READY_TIMEOUT = 60.0           # seconds for a server to answer its first request
STOP_TIMEOUT = 10.0            # seconds between SIGTERM and SIGKILL
WRK_GRACE = 30.0               # seconds wrk may overrun --duration before it is killed
LOG_TAIL_CHARS = 3000          # how much of a failed server's output to show
CLIENT_BOUND_PERCENT = 90      # wrk CPU (per thread) from which a run is marked client-bound

PIPELINE_LUA = Template("""\
-- Pipelining: every write carries $depth requests; wrk counts each response.
local batch

function init(args)
   local requests = {}
   for i = 1, $depth do
      requests[i] = wrk.format("GET", "$path")
   end
   batch = table.concat(requests)
end

function request()
   return batch
end
""")

UVICORN_APP = Template("""\
\"\"\"A raw ASGI app for the benchmark: /plaintext says Hello, World!\"\"\"

BODY = b"$body"
NOT_FOUND = b"Not Found"


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    if scope["path"] == "$path":
        status, body = 200, BODY
    else:
        status, body = 404, NOT_FOUND
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"text/plain"),
            (b"content-length", str(len(body)).encode()),
        ],
    })
    await send({"type": "http.response.body", "body": body})
""")


@dataclass(frozen=True)
class Scenario:
    name: str
    connections: int
    description: str
    close: bool = False         # send "Connection: close": one connection per request
    pipeline: int = 1           # requests written at once per connection
    path: str = URL_PATH        # what every request fetches
    static_file: str = ""       # the file under STATIC_PREFIX this scenario fetches, if any
    show_transfer: bool = False  # a bandwidth test: report wrk's Transfer/sec too

    @property
    def is_static(self) -> bool:
        return bool(self.static_file)


def _static(name: str, connections: int, file: str, description: str,
            show_transfer: bool = False) -> Scenario:
    return Scenario(name, connections, description, path=STATIC_PREFIX + file,
                    static_file=file, show_transfer=show_transfer)


SCENARIOS = (
    Scenario("keepalive-64", 64, "keep-alive, 64 connections"),
    Scenario("keepalive-1000", 1000, "keep-alive, 1000 connections"),
    Scenario("close-64", 64, "new connection per request, 64 connections", close=True),
    Scenario("pipeline16-64", 64, "16-deep pipelining, 64 connections", pipeline=16),
    _static("static4k-64", 64, "4k.bin", "keep-alive, 64 connections, GET /static/4k.bin"),
    _static("static1m-16", 16, "1m.bin", "keep-alive, 16 connections, GET /static/1m.bin",
            show_transfer=True),
)


def takes_part(server: str, scenario: Scenario) -> bool:
    """Whether a server is measured in a scenario (uvicorn sits out the static ones)."""
    return not scenario.is_static or server in STATIC_SERVERS


@dataclass
class WrkResult:
    requests_per_sec: float
    requests: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    connect_errors: int = 0
    read_errors: int = 0
    write_errors: int = 0
    timeout_errors: int = 0
    non_2xx: int = 0
    latency_valid: bool = True  # False where wrk's percentiles are known to be wrong
    transfer_bytes_per_sec: float | None = None  # wrk's Transfer/sec, in bytes
    wrk_cpu_percent: float | None = None  # wrk's CPU time over the run, % of one core
    client_bound: bool = False  # wrk was (nearly) saturated: the limit may be the client

    @property
    def socket_errors(self) -> int:
        return self.connect_errors + self.read_errors + self.write_errors + self.timeout_errors

    @property
    def all_errors(self) -> int:
        return self.socket_errors + self.non_2xx


@dataclass(frozen=True)
class Launch:
    """How to start one server: its command line, environment, directory and port."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int


class BenchError(Exception):
    """A server or tool could not be prepared, started or measured."""


# --- command line ---------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark prefork, nginx and uvicorn with wrk on GET /plaintext "
                    "and on static files.")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes per server (default: 2)")
    parser.add_argument("--duration", type=int, default=5,
                        help="seconds of measurement per scenario (default: 5)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every server this many times, interleaved (A B A B ...), and "
                             "report each one's median round: steadier ratios on a noisy "
                             "machine (default: 1)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of wrk warm-up per server, 0 for none (default: 1)")
    parser.add_argument("--servers", default=",".join(SERVERS),
                        help=f"comma-separated, run in this order (default: {','.join(SERVERS)})")
    parser.add_argument("--scenarios", default=",".join(s.name for s in SCENARIOS),
                        help="comma-separated scenario names (default: all)")
    parser.add_argument("--json", metavar="FILE", help="also write the raw numbers to FILE")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin servers and wrk to CPUs with taskset")
    parser.add_argument("--server-cpus", default="0",
                        help="taskset CPU list for the servers (default: 0)")
    parser.add_argument("--wrk-cpus", default="1",
                        help="taskset CPU list for wrk (default: 1)")
    parser.add_argument("--wrk-threads", type=int, default=1,
                        help="wrk threads (default: 1, one per wrk CPU)")
    parser.add_argument("--wrk-timeout", type=int, default=5,
                        help="seconds before wrk counts a request as timed out (default: 5)")
    parser.add_argument("--uvicorn-venv", type=Path, default=DEFAULT_VENV,
                        help=f"venv for uvicorn (default: {DEFAULT_VENV})")
    args = parser.parse_args(argv)
    args.servers = _split_choices(parser, "--servers", args.servers, SERVERS)
    names = [s.name for s in SCENARIOS]
    chosen = _split_choices(parser, "--scenarios", args.scenarios, names)
    args.scenarios = [s for s in SCENARIOS if s.name in chosen]
    if args.workers < 1 or args.duration < 1 or args.warmup < 0 or args.wrk_threads < 1:
        parser.error("--workers, --duration and --wrk-threads must be >= 1, --warmup >= 0")
    return args


def _split_choices(parser: argparse.ArgumentParser, option: str, text: str,
                   choices: tuple[str, ...] | list[str]) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in choices]
    if unknown or not items:
        parser.error(f"{option}: expected some of {', '.join(choices)}, got {text!r}")
    return list(dict.fromkeys(items))


# --- environment and tools -------------------------------------------------


def raise_nofile_limit() -> int:
    """Raise the soft open-file limit to the hard one; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def find_program(name: str) -> str | None:
    """Find a program on PATH or in the sbin directories (nginx lives there)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin:/sbin")


def apt_install(package: str) -> None:
    """apt-get install a package; refresh the package lists only if that fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    command = ["apt-get", "install", "-y", "--no-install-recommends", package]
    print(f"installing {package} with apt-get ...", file=sys.stderr)
    if subprocess.run(command, env=env).returncode == 0:
        return
    subprocess.run(["apt-get", "update"], env=env)
    if subprocess.run(command, env=env).returncode != 0:
        raise BenchError(f"apt-get install {package} failed")


def ensure_program(name: str, package: str) -> str:
    path = find_program(name)
    if path is None:
        apt_install(package)
        path = find_program(name)
    if path is None:
        raise BenchError(f"{name} not found even after installing {package}")
    return path


def ensure_uvicorn_venv(venv: Path) -> Path:
    """Create the uvicorn venv and install its packages when missing."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating venv {venv} ...", file=sys.stderr)
        run_checked([sys.executable, "-m", "venv", str(venv)], "python -m venv")
    probe = [str(python), "-c", "import " + ", ".join(UVICORN_PACKAGES)]
    if subprocess.run(probe, capture_output=True).returncode != 0:
        print(f"installing {' '.join(UVICORN_PACKAGES)} into {venv} ...", file=sys.stderr)
        run_checked([str(python), "-m", "pip", "install", "--quiet", *UVICORN_PACKAGES],
                    "pip install")
    return python


def run_checked(argv: list[str], what: str) -> None:
    if subprocess.run(argv).returncode != 0:
        raise BenchError(f"{what} failed: {' '.join(argv)}")


def pin(cpus: str, argv: list[str], enabled: bool) -> list[str]:
    return ["taskset", "-c", cpus, *argv] if enabled else argv


def free_port() -> int:
    """A port the kernel had free a moment ago (bind to port 0, then close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- the static files ------------------------------------------------------


def make_docroot(workdir: Path) -> Path:
    """Write the static files (random bytes) into workdir/docroot.

    The directories are made world-readable: nginx's workers run as an
    unprivileged user and must reach the files through the (0700) temp dir.
    """
    docroot = workdir / "docroot"
    docroot.mkdir()
    for name, size in STATIC_FILES.items():
        (docroot / name).write_bytes(os.urandom(size))
        (docroot / name).chmod(0o644)
    for directory in (workdir, docroot):
        directory.chmod(0o755)
    return docroot


def http_get(port: int, path: str, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """One GET over a fresh connection: (status, headers lower-cased, body).

    A raw socket, not http.client: this file is itself named http.py, so
    ``import http.client`` would find it first when run as a script.  The
    request says ``Connection: close`` and the response is read to EOF; the
    body is cut to Content-Length, or de-chunked.
    """
    request = (f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n"
               "Connection: close\r\n\r\n").encode()
    chunks = []
    with socket.create_connection((HOST, port), timeout=timeout) as sock:
        sock.sendall(request)
        while data := sock.recv(1 << 16):
            chunks.append(data)
    raw = b"".join(chunks)
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise BenchError(f"GET {path}: incomplete response head ({len(raw)} bytes)")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split()
    if len(status_line) < 2 or not status_line[1].isdigit():
        raise BenchError(f"GET {path}: bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = dechunk(body)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(body) < length:
            raise BenchError(f"GET {path}: connection closed after {len(body)} of "
                             f"{length} body bytes")
        body = body[:length]
    return int(status_line[1]), headers, body


def dechunk(data: bytes) -> bytes:
    out, pos = [], 0
    while True:
        line_end = data.index(b"\r\n", pos)
        size = int(data[pos:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[line_end + 2:line_end + 2 + size])
        pos = line_end + 2 + size + 2


def verify_static(port: int, docroot: Path) -> dict[str, str]:
    """Fetch every static file once; {file name: what was wrong} for the bad ones."""
    problems = {}
    for name in STATIC_FILES:
        expected = (docroot / name).read_bytes()
        path = STATIC_PREFIX + name
        try:
            status, headers, body = http_get(port, path, VERIFY_TIMEOUT)
        except (OSError, ValueError, BenchError) as error:
            problems[name] = f"GET {path}: {type(error).__name__}: {error}"
            continue
        if status != 200:
            problems[name] = f"GET {path}: status {status}, body {body[:200]!r}"
        elif body != expected:
            mismatch = next((i for i, (a, b) in enumerate(zip(body, expected)) if a != b),
                            min(len(body), len(expected)))
            problems[name] = (f"GET {path}: wrong body: {len(body)} bytes "
                              f"(Content-Length {headers.get('content-length', 'absent')}), "
                              f"expected {len(expected)}; first difference at byte {mismatch}")
    return problems


# --- one launch per server -------------------------------------------------


def prepare_prefork(workdir: Path, port: int, workers: int, docroot: Path) -> Launch:
    config = workdir / "prefork.toml"
    config.write_text(
        "[server]\n"
        f"workers = {workers}\n"
        "worker_connections = 10000\n"
        'backend = "epoll"\n'
        "\n[[listen]]\n"
        f'address = "{HOST}:{port}"\n'
        'protocol = "http"\n'
        "\n[http]\n"
        "keepalive_requests = 1000000\n"
        # With [[route]] tables only these routes exist.
        "\n[[route]]\n"
        f'path = "{URL_PATH}"\n'
        'handler = "plaintext"\n'
        "\n[[route]]\n"
        f'path = "{STATIC_PREFIX}"\n'
        'handler = "static"\n'
        "\n[static]\n"
        f"root = {json.dumps(str(docroot))}\n")
    if not (REPO_ROOT / "prefork" / "cli.py").exists():
        raise BenchError(f"{REPO_ROOT / 'prefork' / 'cli.py'} does not exist yet")
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return Launch(argv=[sys.executable, "-m", "prefork.cli", "-c", str(config)],
                  env=dict(os.environ, PYTHONPATH=pythonpath), cwd=REPO_ROOT, port=port)


def nginx_temp_directives(nginx: str, workdir: Path) -> list[str]:
    """Temp-path directives for the modules this nginx has, pointed at workdir.

    Otherwise nginx would create its compiled-in /var/lib/nginx/* directories.
    """
    built = subprocess.run([nginx, "-V"], capture_output=True, text=True)
    directives = []
    for kind in re.findall(r"--http-([a-z-]+)-temp-path=", built.stdout + built.stderr):
        name = kind.replace("-", "_")
        directives.append(f"{name}_temp_path {workdir / ('temp_' + name)};")
    return directives


def prepare_nginx(workdir: Path, port: int, workers: int, docroot: Path) -> Launch:
    nginx = ensure_program("nginx", "nginx-light")
    temp_paths = "\n    ".join(nginx_temp_directives(nginx, workdir))
    config = workdir / "nginx.conf"
    config.write_text(f"""\
daemon off;
master_process on;
worker_processes {workers};
pid {workdir / 'nginx.pid'};
error_log {workdir / 'error.log'} warn;

events {{
    worker_connections 10000;
}}

http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=20s;
    {temp_paths}

    server {{
        listen {HOST}:{port} backlog={LISTEN_BACKLOG};
        location = {URL_PATH} {{
            default_type text/plain;
            return 200 "{BODY}";
        }}
        location {STATIC_PREFIX} {{
            alias {docroot}/;
            default_type application/octet-stream;
        }}
        location / {{
            return 404;
        }}
    }}
}}
""")
    return Launch(argv=[nginx, "-p", str(workdir), "-c", str(config)],
                  env=dict(os.environ), cwd=workdir, port=port)


def prepare_uvicorn(workdir: Path, port: int, workers: int, venv: Path) -> Launch:
    python = ensure_uvicorn_venv(venv)
    (workdir / "app.py").write_text(UVICORN_APP.substitute(body=BODY, path=URL_PATH))
    argv = [str(python), "-m", "uvicorn", "app:app", "--app-dir", str(workdir),
            "--host", HOST, "--port", str(port), "--workers", str(workers),
            "--loop", "uvloop", "--http", "httptools", "--backlog", str(LISTEN_BACKLOG),
            "--no-access-log", "--log-level", "warning"]
    return Launch(argv=argv, env=dict(os.environ), cwd=workdir, port=port)


def prepare_server(name: str, workdir: Path, port: int, args: argparse.Namespace,
                   docroot: Path) -> Launch:
    if name == "prefork":
        return prepare_prefork(workdir, port, args.workers, docroot)
    if name == "nginx":
        return prepare_nginx(workdir, port, args.workers, docroot)
    return prepare_uvicorn(workdir, port, args.workers, args.uvicorn_venv)


# --- running a server -----------------------------------------------------


def http_ok(port: int, timeout: float) -> bool:
    """True when GET /plaintext on the port answers with status 200."""
    request = f"GET {URL_PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n"
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(request.encode())
            head = sock.recv(64)
    except OSError:
        return False
    return head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))


def wait_ready(proc: subprocess.Popen, port: int, timeout: float) -> None:
    """Poll the port until the server answers, it exits, or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"exited with status {proc.returncode} before answering")
        if http_ok(port, timeout=1.0):
            return
        time.sleep(0.05)
    raise BenchError(f"did not answer GET {URL_PATH} on port {port} within {timeout:.0f}s")


def stop_process_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (its own session), SIGKILL on timeout."""
    for sig, timeout in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, STOP_TIMEOUT)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=timeout)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers of a leader that exited first still share its process group.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_server(launch: Launch, log_path: Path, cpus: str,
                   pin_cpus: bool) -> Iterator[subprocess.Popen]:
    """Start a server in its own session, wait until it answers, always stop it."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(pin(cpus, launch.argv, pin_cpus), cwd=launch.cwd,
                                env=launch.env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(proc, launch.port, READY_TIMEOUT)
        yield proc
    finally:
        stop_process_group(proc)


def log_tail(*paths: Path) -> str:
    parts = []
    for path in paths:
        if path.exists() and path.stat().st_size:
            text = path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            parts.append(f"--- {path.name} ---\n{text.rstrip()}")
    return "\n".join(parts) or "(no output)"


# --- wrk ------------------------------------------------------------------


def write_pipeline_script(workdir: Path, depth: int) -> Path:
    path = workdir / f"pipeline{depth}.lua"
    path.write_text(PIPELINE_LUA.substitute(depth=depth, path=URL_PATH))
    return path


def wrk_command(scenario: Scenario, port: int, duration: int, args: argparse.Namespace,
                workdir: Path) -> list[str]:
    argv = ["wrk", f"-t{args.wrk_threads}", f"-c{max(scenario.connections, args.wrk_threads)}",
            f"-d{duration}s", f"--timeout={args.wrk_timeout}s", "--latency"]
    if scenario.close:
        argv += ["-H", "Connection: close"]
    if scenario.pipeline > 1:
        argv += ["-s", str(write_pipeline_script(workdir, scenario.pipeline))]
    argv.append(f"http://{HOST}:{port}{scenario.path}")
    return pin(args.wrk_cpus, argv, not args.no_pin)


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_wrk(argv: list[str], duration: int) -> tuple[str, float]:
    """Run wrk: (its report, the CPU it used in percent of one core).

    wrk is the only child reaped while a server runs, so the growth of the
    children's CPU time over the run is wrk's.
    """
    cpu_before, wall_before = children_cpu_seconds(), time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=duration + WRK_GRACE)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wrk did not finish within {duration + WRK_GRACE:.0f}s") from None
    cpu_percent = (100 * (children_cpu_seconds() - cpu_before)
                   / max(time.monotonic() - wall_before, 1e-6))
    if done.returncode != 0:
        raise BenchError(f"wrk exited with {done.returncode}: "
                         f"{done.stderr.strip() or done.stdout.strip()}")
    return done.stdout, cpu_percent


_BYTE_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}  # wrk's: binary
_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def parse_duration_ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text.strip())
    if not match:
        raise BenchError(f"cannot read wrk latency {text!r}")
    return float(match.group(1)) * _TIME_UNITS_MS[match.group(2)]


def parse_wrk(output: str) -> WrkResult:
    """Read the numbers out of wrk's --latency report."""
    rps = re.search(r"^Requests/sec:\s*([\d.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ", output, re.M)
    if not rps or not total:
        raise BenchError(f"unexpected wrk output:\n{output}")
    percentiles = dict(re.findall(r"^\s*(50|90|99)%\s+(\S+)\s*$", output, re.M))
    latency = {p: parse_duration_ms(v) for p, v in percentiles.items()}
    result = WrkResult(requests_per_sec=float(rps.group(1)), requests=int(total.group(1)),
                       p50_ms=latency.get("50"), p90_ms=latency.get("90"),
                       p99_ms=latency.get("99"))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                       output)
    if errors:
        (result.connect_errors, result.read_errors,
         result.write_errors, result.timeout_errors) = map(int, errors.groups())
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        result.non_2xx = int(non_2xx.group(1))
    transfer = re.search(r"^Transfer/sec:\s*([\d.]+)([KMGT]?B)\s*$", output, re.M)
    if transfer:
        result.transfer_bytes_per_sec = float(transfer.group(1)) * _BYTE_UNITS[transfer.group(2)]
    return result


# --- benchmarking one server ----------------------------------------------


def bench_server(name: str, args: argparse.Namespace, workdir: Path, docroot: Path
                 ) -> tuple[dict[str, WrkResult], str | None, dict[str, str]]:
    """Run the scenarios this server takes part in.

    Returns (results by scenario, failure of the whole server or None,
    {scenario: reason} for scenarios it failed its static-file check in).
    """
    scenarios = [s for s in args.scenarios if takes_part(name, s)]
    results: dict[str, WrkResult] = {}
    failed: dict[str, str] = {}
    if not scenarios:
        print(f"[{name}] skipped: in none of the chosen scenarios", file=sys.stderr)
        return results, None, failed
    server_dir = workdir / name
    server_dir.mkdir()
    log_path = server_dir / "server.log"
    try:
        port = free_port()
        launch = prepare_server(name, server_dir, port, args, docroot)
        print(f"[{name}] starting on {HOST}:{port}: {' '.join(launch.argv)}", file=sys.stderr)
        with running_server(launch, log_path, args.server_cpus, not args.no_pin) as proc:
            problems = {}
            if any(s.is_static for s in scenarios):
                problems = verify_static(port, docroot)
                for file in STATIC_FILES:
                    print(f"[{name}] verify {STATIC_PREFIX}{file}: "
                          f"{problems.get(file, 'ok, bytes match the file')}", file=sys.stderr)
            warm_up(name, port, args, workdir)
            for scenario in scenarios:
                if scenario.static_file in problems:
                    failed[scenario.name] = problems[scenario.static_file]
                    print(f"[{name}] {scenario.name}: FAILED, not measured: "
                          f"{failed[scenario.name]}", file=sys.stderr)
                    continue
                results[scenario.name] = measure(name, scenario, port, args, workdir)
                if proc.poll() is not None:
                    raise BenchError(f"exited with status {proc.returncode} during "
                                     f"{scenario.name}")
    except (BenchError, OSError) as error:
        reason = f"{error}\n{log_tail(log_path, server_dir / 'error.log')}"
        print(f"[{name}] FAILED: {reason}", file=sys.stderr)
        return results, str(error), failed
    return results, None, failed


def warm_up(name: str, port: int, args: argparse.Namespace, workdir: Path) -> None:
    if args.warmup:
        print(f"[{name}] warm-up {args.warmup}s", file=sys.stderr)
        run_wrk(wrk_command(SCENARIOS[0], port, args.warmup, args, workdir), args.warmup)


def measure(name: str, scenario: Scenario, port: int, args: argparse.Namespace,
            workdir: Path) -> WrkResult:
    print(f"[{name}] {scenario.name}: {scenario.description}, {args.duration}s", file=sys.stderr)
    output, wrk_cpu = run_wrk(wrk_command(scenario, port, args.duration, args, workdir),
                              args.duration)
    result = parse_wrk(output)
    result.latency_valid = scenario.pipeline == 1
    result.wrk_cpu_percent = round(wrk_cpu, 1)
    result.client_bound = wrk_cpu >= CLIENT_BOUND_PERCENT * args.wrk_threads
    transfer = ("" if result.transfer_bytes_per_sec is None
                else f", {format_transfer(result)}")
    print(f"[{name}] {scenario.name}: {result.requests_per_sec:,.0f} req/s, "
          f"p99 {format_p99(result)}, errors {result.all_errors}, "
          f"wrk CPU {result.wrk_cpu_percent:.0f}%{transfer}", file=sys.stderr)
    return result


# --- report ---------------------------------------------------------------


def format_rps(result: WrkResult) -> str:
    return f"{result.requests_per_sec:,.0f}" + ("*" if result.client_bound else "")


def format_p99(result: WrkResult) -> str:
    if result.p99_ms is None or not result.latency_valid:
        return "n/a"
    return f"{result.p99_ms:.2f} ms"


def format_transfer(result: WrkResult) -> str:
    if result.transfer_bytes_per_sec is None:
        return "n/a"
    return f"{result.transfer_bytes_per_sec / (1 << 20):,.1f} MB/s"


def format_ratio(ours: WrkResult | None, theirs: WrkResult | None) -> str:
    if ours is None or theirs is None or not theirs.requests_per_sec:
        return "n/a"
    return f"{ours.requests_per_sec / theirs.requests_per_sec:.2f}x"


def table_rows(servers: list[str], scenarios: list[Scenario],
               results: dict[str, dict[str, WrkResult]],
               scenario_failures: dict[str, dict[str, str]]) -> list[list[str]]:
    others = [s for s in servers if s != "prefork"] if "prefork" in servers else []
    header = ["scenario"]
    for server in servers:
        header += [f"{server} req/s", f"{server} p99"]
    header += [f"prefork/{other}" for other in others] + ["errors"]
    rows = [header]
    for scenario in scenarios:
        cells = {s: results.get(s, {}).get(scenario.name) for s in servers}
        row = [scenario.name]
        for server in servers:
            result = cells[server]
            if not takes_part(server, scenario):
                row += ["-", "-"]
            elif scenario.name in scenario_failures.get(server, {}):
                row += ["FAILED", "-"]
            else:
                row.append("n/a" if result is None else format_rps(result))
                row.append("n/a" if result is None else format_p99(result))
        row += ["-" if not takes_part(other, scenario)
                else format_ratio(cells["prefork"], cells[other]) for other in others]
        errors = [f"{s} {r.all_errors}" for s, r in cells.items() if r and r.all_errors]
        row.append(", ".join(errors) or "-")
        rows.append(row)
    return rows


def render_table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) if col in (0, len(row) - 1) else cell.rjust(width)
                 for col, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def error_footnotes(servers: list[str], scenarios: list[Scenario],
                    results: dict[str, dict[str, WrkResult]]) -> list[str]:
    notes = []
    for scenario in scenarios:
        for server in servers:
            result = results.get(server, {}).get(scenario.name)
            if result and result.all_errors:
                notes.append(f"  {scenario.name} {server}: socket errors connect "
                             f"{result.connect_errors}, read {result.read_errors}, write "
                             f"{result.write_errors}, timeout {result.timeout_errors}; "
                             f"non-2xx/3xx {result.non_2xx}")
    return notes


def report(args: argparse.Namespace, results: dict[str, dict[str, WrkResult]],
           failures: dict[str, str], scenario_failures: dict[str, dict[str, str]]) -> str:
    pinning = ("off" if args.no_pin
               else f"servers on CPU {args.server_cpus}, wrk on CPU {args.wrk_cpus}")
    legend = ("req/s: responses per second; p99: 99th percentile latency "
              "(n/a for pipelining, where wrk's percentiles are wrong)")
    if "prefork" in args.servers and len(args.servers) > 1:
        legend += "; prefork/X: prefork's req/s over X's"
    static = [s for s in args.scenarios if s.is_static]
    sitting_out = [server for server in args.servers if server not in STATIC_SERVERS]
    if static and sitting_out:
        legend += f"; -: {', '.join(sitting_out)} not run on static files"
    if static and "nginx" in args.servers:
        legend += ".\nStatic files: nginx with sendfile, tcp_nopush and open_file_cache"
    paths = ", ".join(dict.fromkeys(s.path for s in args.scenarios))
    lines = [
        f"GET {paths}; {args.workers} worker(s) per server, {args.duration}s per scenario"
        + (f", median of {args.rounds} interleaved rounds" if args.rounds > 1 else "") + ", "
        f"wrk -t{args.wrk_threads}, pinning {pinning}",
        "",
        render_table(table_rows(args.servers, args.scenarios, results, scenario_failures)),
        "",
        legend + ".",
    ]
    for scenario in args.scenarios:
        if not scenario.show_transfer:
            continue
        rates = [f"{server} {format_transfer(by_scenario[scenario.name])}"
                 for server, by_scenario in results.items() if scenario.name in by_scenario]
        if rates:
            lines.append(f"{scenario.name} transfer (wrk Transfer/sec, MB = 2^20 bytes): "
                         + ", ".join(rates))
    if any(r.client_bound for by_scenario in results.values() for r in by_scenario.values()):
        lines.append(f"*: wrk used >= {CLIENT_BOUND_PERCENT}% of its CPU, so the client may "
                     "have been the limit, not the server.")
    notes = error_footnotes(args.servers, args.scenarios, results)
    if notes:
        lines += ["errors (wrk socket errors and non-2xx/3xx responses):", *notes]
    else:
        lines.append("errors: none (wrk socket errors and non-2xx/3xx responses)")
    lines += [f"{server} failed: {reason}" for server, reason in failures.items()]
    lines += [f"{server} FAILED {scenario} (static-file check, not measured): {reason}"
              for server, by_scenario in scenario_failures.items()
              for scenario, reason in by_scenario.items()]
    return "\n".join(lines)


def round_ratios(rounds: dict[str, list[dict[str, WrkResult]]],
                 scenarios: list[Scenario]) -> dict[str, dict[str, list[float]]]:
    """prefork's req/s over each other server's, round by round: a round runs
    the servers back to back, so its ratio moves less with the machine's
    drift than a ratio of medians. {other: {scenario: [ratio per round]}}."""
    ours = rounds.get("prefork")
    if not ours:
        return {}
    out: dict[str, dict[str, list[float]]] = {}
    for other, theirs in rounds.items():
        if other == "prefork":
            continue
        for scenario in scenarios:
            ratios = [mine[scenario.name].requests_per_sec / them[scenario.name].requests_per_sec
                      for mine, them in zip(ours, theirs)
                      if scenario.name in mine and scenario.name in them
                      and them[scenario.name].requests_per_sec]
            if len(ratios) > 1:
                out.setdefault(other, {})[scenario.name] = ratios
    return out


def format_round_ratios(ratios: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = []
    for other, by_scenario in ratios.items():
        lines.append(f"prefork/{other} round by round (each round runs the servers back to back):")
        width = max(len(name) for name in by_scenario)
        for name, values in by_scenario.items():
            lines.append(f"  {name.ljust(width)}  " + " ".join(f"{v:.2f}" for v in values)
                         + f"  (median {statistics.median(values):.2f}, min {min(values):.2f})")
    return lines


def median_round(runs: list[dict[str, WrkResult]]) -> dict[str, WrkResult]:
    """Per scenario, the round with the median req/s; errors are summed over
    every round, so none is hidden by the choice."""
    merged: dict[str, WrkResult] = {}
    for name in {name for run in runs for name in run}:
        results = sorted((run[name] for run in runs if name in run), key=lambda r: r.requests_per_sec)
        middle = results[(len(results) - 1) // 2]
        merged[name] = replace(middle, **{field: sum(getattr(r, field) for r in results) for field in
                                          ("connect_errors", "read_errors", "write_errors",
                                           "timeout_errors", "non_2xx")})
    return merged


def write_json(path: str, args: argparse.Namespace, results: dict[str, dict[str, WrkResult]],
               failures: dict[str, str], scenario_failures: dict[str, dict[str, str]],
               round_ratios: dict[str, dict[str, list[float]]] | None = None) -> None:
    data = {
        "workers": args.workers,
        "duration_s": args.duration,
        "pinned": not args.no_pin,
        "server_cpus": args.server_cpus,
        "wrk_cpus": args.wrk_cpus,
        "wrk_threads": args.wrk_threads,
        "scenarios": {s.name: asdict(s) for s in args.scenarios},
        "results": {server: {name: asdict(r) for name, r in by_scenario.items()}
                    for server, by_scenario in results.items()},
        "failures": failures,
        "scenario_failures": scenario_failures,
        "round_ratios": round_ratios or {},
    }
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


# --- main -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile_limit()
    if nofile < max(s.connections for s in args.scenarios) + 100:
        print(f"warning: only {nofile} open files allowed", file=sys.stderr)
    try:
        ensure_program("wrk", "wrk")
        if not args.no_pin:
            ensure_program("taskset", "util-linux")
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    results: dict[str, dict[str, WrkResult]] = {}
    failures: dict[str, str] = {}
    scenario_failures: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory(prefix="prefork-bench-") as tmp:
        docroot = make_docroot(Path(tmp))
        rounds: dict[str, list[dict[str, WrkResult]]] = {server: [] for server in args.servers}
        for number in range(args.rounds):
            for server in args.servers:
                if server in failures:
                    continue
                workdir = Path(tmp) / f"round{number}"
                workdir.mkdir(exist_ok=True)
                by_scenario, failure, failed = bench_server(server, args, workdir, docroot)
                rounds[server].append(by_scenario)
                if failure:
                    failures[server] = failure
                if failed:
                    scenario_failures[server] = failed
        results = {server: median_round(runs) for server, runs in rounds.items()}
        ratios = round_ratios(rounds, args.scenarios)
    print("\n".join([report(args, results, failures, scenario_failures), *format_round_ratios(ratios)]))
    if args.json:
        write_json(args.json, args, results, failures, scenario_failures, ratios)
    return 1 if failures or scenario_failures else 0


if __name__ == "__main__":
    sys.exit(main())
