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
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from string import Template

from .httpreport import (format_p99, format_round_ratios, format_transfer, median_round, report, round_ratios,
                         write_json)
from .net import HOST, URL_PATH, Launch, free_port, http_get, log_tail, running_server
from .tools import DEFAULT_VENV, REPO_ROOT, BenchError, ensure_program, ensure_uvicorn_venv, repo_env
from .wrk import (BODY, CLIENT_BOUND_PERCENT, SCENARIOS, SERVERS, STATIC_FILES, STATIC_PREFIX, Scenario,
                  WrkResult, add_client_options, parse_wrk, prepare_client, run_wrk, split_choices, takes_part,
                  wrk_command)

VERIFY_TIMEOUT = 10.0          # seconds for one verification GET of a static file
LISTEN_BACKLOG = 4096          # the same accept queue for every server


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


# --- command line -----------------------------------------------------------------


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
    add_client_options(parser)
    parser.add_argument("--uvicorn-venv", type=Path, default=DEFAULT_VENV,
                        help=f"venv for uvicorn (default: {DEFAULT_VENV})")
    args = parser.parse_args(argv)
    args.servers = split_choices(parser, "--servers", args.servers, SERVERS)
    names = [s.name for s in SCENARIOS]
    chosen = split_choices(parser, "--scenarios", args.scenarios, names)
    args.scenarios = [s for s in SCENARIOS if s.name in chosen]
    if args.workers < 1 or args.duration < 1 or args.warmup < 0 or args.wrk_threads < 1:
        parser.error("--workers, --duration and --wrk-threads must be >= 1, --warmup >= 0")
    return args


# --- the static files -------------------------------------------------------------


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


# --- one launch per server --------------------------------------------------------


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
    return Launch(argv=[sys.executable, "-m", "prefork.cli", "-c", str(config)],
                  env=repo_env(), cwd=REPO_ROOT, port=port)


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


# --- benchmarking one server ------------------------------------------------------


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


# --- main -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not prepare_client(args, files=max(s.connections for s in args.scenarios) + 100):
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
