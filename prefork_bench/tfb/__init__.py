"""TechEmpower-style benchmark: prefork against uvicorn on the six TechEmpower
test types, with SQLite and with PostgreSQL, driven by wrk.

Usage (from anywhere), from a checkout or as ``prefork-bench tfb`` with the same options::

    python bench/tfb.py [--workers 2] [--duration 10] [--warmup 2]
                        [--tests plaintext,json,db,queries,updates,fortunes]
                        [--backends sqlite,postgresql]
                        [--pg-url postgresql://postgres@127.0.0.1:54329/tfb_bench]
                        [--json FILE] [--no-pin]

Servers ("targets"), each with ``--workers`` worker processes, run one after
the other in this order::

    prefork-sqlite      python -m prefork.cli -c CONFIG, [database] url = sqlite:////TMP/world.db
    uvicorn-sqlite      uvicorn + uvloop + httptools, a raw ASGI app, the same SQLite file
    prefork-postgresql  prefork, [database] url = the --pg-url database
    uvicorn-postgresql  uvicorn, the same PostgreSQL database

Test types (as TechEmpower runs them; TechEmpower sweeps the connection count,
this script runs one level sized for a 2-core box)::

    plaintext  GET /plaintext            256 connections, 16 requests pipelined per write
    json       GET /json                 256 connections, keep-alive
    db         GET /db                   256 connections, keep-alive
    queries    GET /queries?queries=20   256 connections, keep-alive
    updates    GET /updates?queries=20   256 connections, keep-alive
    fortunes   GET /fortunes             256 connections, keep-alive

Every request carries TechEmpower's ``Accept`` header for its test type and
``Connection: keep-alive``.

The uvicorn app (written into the temporary directory) does what prefork's
built-in handlers do (``prefork/apps/db.py``): the same SQL statements, one
query per row for /queries and /updates, /queries' N reads in one read
transaction (SQLite), /updates reading N distinct rows and writing them in
one write transaction ordered by id, the same JSON (``orjson``, compact), the
same random ids, and the same fortunes HTML (``html.escape``, the extra fortune
with id 0, sorted by message).  It keeps one database connection per worker
process: a ``sqlite3`` connection used synchronously on the event loop (WAL,
``synchronous`` as for prefork, 5 s busy timeout), or one psycopg 3
``AsyncConnection`` (autocommit, ``prepare_threshold=0`` as prefork).  On one
shared async connection, concurrent transactions would nest, so /updates holds
a per-process ``asyncio.Lock`` around its transaction; reads never wait for
it.  prefork opens one connection per thread that touches the database: with
SQLite the reactor thread (reads) and the pool threads (updates); with
PostgreSQL only its pool threads (``[server] threads``, 4 by default), so it
holds up to 4 connections per worker against uvicorn's 1.

Databases: the script creates and seeds them itself before any server starts
(World: 10,000 rows, Fortune: the 12 TechEmpower rows; prefork's master finds
them present): the SQLite file in the temporary directory, and the database
named in ``--pg-url`` (``tfb_bench`` by default, created when missing and left
in place).  ``synchronous`` (default ``normal``) is prefork's ``[database]
synchronous`` and the uvicorn app's PRAGMA; PostgreSQL's own ``fsync`` and
``synchronous_commit`` are whatever the cluster has (printed).  If nothing
answers at ``--pg-url``, a throwaway cluster is started with
``.ci/postgres.sh`` in a directory of the script's own and stopped at the end.
Before each PostgreSQL target, ``VACUUM ANALYZE`` World and Fortune; before
each SQLite target, a WAL checkpoint: each server starts from the same state.

Before measuring, each test type is fetched once from each server and
checked: status 200, Content-Type, the exact body for plaintext/json, the JSON
shape and id range for db/queries/updates (``queries=20`` gives 20 rows, and
``queries=0`` / ``queries=foo`` / ``queries=501`` give 1 / 1 / 500),
/updates' new values read back from the database, and /fortunes' 13 rows
(the additional fortune among them) in order and escaped.  A test type that
fails is not measured for that server: ``FAILED`` in the table, the reason
under it.

Each measurement: a ``--warmup`` seconds wrk run, then ``--duration``
seconds of ``wrk -t1 --latency --timeout 8s``.  Before each wrk run the
script waits until no ``wrk`` process is running (another benchmark may be
using the machine), polling /proc every second, for at most ``--wait-max``
seconds in total over the whole run; a run measured while another wrk was
running (seen by a 0.5 s poll during the run, or because the waiting budget
ran out) is measured again after waiting, up to ``--retries`` times (default 1), and
marked ``!`` if it still was.

What the numbers mean:

* req/s is wrk's ``Requests/sec``: responses completed per second, non-2xx
  included (pipelined responses count one each).
* ``pf/uv`` is prefork's req/s over uvicorn's, same test type, same backend.
* CPU% is the server's CPU share during the measured run: the utime+stime
  (plus cutime+cstime: children reaped during the run) of every process in
  the server's session (prefork's master and workers; uvicorn's supervisor
  and workers), read from /proc before and after, over the wall time; 100%
  is one full core.  With pinning the server has one core, so ~100% means
  the server was CPU-bound.  The CPU table also shows the PostgreSQL backend
  processes serving the benchmark database (``postgres: ... DBNAME ...``,
  not pinned: they run on either core), wrk's own CPU (from wait4's
  rusage), and ``other``: the CPU time of every other process on the
  machine (the cores' busy time in /proc/stat, interrupts included since a
  task's stime includes those it took, less the server, the backends and
  wrk), a measure of how shared the machine was.  ``--json`` also has each core's
  busy share and the interrupt and steal time.
* ``~`` after req/s: other processes used >= 20% of a core during the run.
* ``*`` after req/s: wrk used >= 90% of its CPU (client-bound, the server
  might have served more).
* errors: wrk's socket errors (connect, read, write, timeout) plus its
  non-2xx/3xx responses; broken down under the table.  ERROR/WARNING lines
  that the server logged during each run are counted and excerpted too.

The servers are pinned to CPU 0 and wrk to CPU 1 with ``taskset`` unless
``--no-pin``.  Only 127.0.0.1 is targeted (``--pg-url`` must be loopback).
Each server runs in its own session and is stopped by its process group
(SIGTERM, then SIGKILL) in a ``finally``; every wrk has a deadline of
``--duration`` + 30 s.  Helpers are prefork_bench's, shared with ``bench/http.py``;
uvicorn's venv is that script's (``bench/.venv-uvicorn``),
with ``psycopg[binary]`` added when PostgreSQL is benchmarked.  The standard
library only, plus psycopg 3 (prefork's ``postgresql`` extra) for the
PostgreSQL backend.

Exit status: 0 when every server and test ran, verified, and every target
below was met; 1 otherwise; 2 when a tool is missing.  Targets: >= 50,000
responses/s on /json and /db from prefork-sqlite; prefork >= 1.5x uvicorn on
every test type, with each backend.
"""
