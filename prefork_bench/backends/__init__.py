"""Backend benchmark: prefork's own epoll reactor against uvloop and the
standard-library asyncio loop, the same server otherwise, driven by wrk.

Usage (from anywhere), from a checkout or as ``prefork-bench backends`` with the same options::

    python bench/backends.py [--workers 2] [--duration 5] [--idle 15000]
                             [--json FILE] [--no-pin]

``[server] backend`` selects the event loop of prefork's workers: ``epoll``
(prefork's reactor), ``uvloop`` or ``asyncio``.  Everything else -- the
sans-IO HTTP code, the handlers, the accept path -- is the same, so this
benchmark isolates the cost of the loop and of the asyncio.Protocol adapter.

Part 1, throughput.  For each backend in turn a fresh prefork with
``--workers`` workers is started from a generated config (routes
``/plaintext``, ``/db`` on a SQLite file the master seeds, ``/static/`` on a
document root with a 4 KiB file; keep-alive limits and timeouts high enough
never to interfere), checked, warmed up with a 1 s wrk run, and measured with
``--duration`` seconds of ``wrk -t1 --latency`` per scenario:

    keepalive-1000   GET /plaintext, keep-alive, 1000 connections
    pipeline16-64    GET /plaintext, 64 connections, 16 requests written at
                     once per connection (the Lua script of bench/http.py)
    close-64         GET /plaintext, a new TCP connection per request
                     (``Connection: close``), 64 connections
    db-64            GET /db (one SQLite primary-key read), keep-alive, 64
    static4k-64      GET /static/4k.bin, keep-alive, 64 connections

The checks before measuring: /plaintext answers 200 ``Hello, World!``
text/plain; /db answers 200 application/json ``{"id": N, "randomNumber": M}``
with N in 1..10000 and M equal to the row in the SQLite file (read by this
script); /static/4k.bin answers 200 with the file's bytes; the three on one
keep-alive connection one after the other; and 16 pipelined /plaintext
requests in one write get 16 correct responses.  A scenario whose check
failed is not measured (``FAILED`` in the table, the reason under it).

Part 2, bytes per idle connection.  For each backend a fresh prefork with
``workers = 1`` and ``worker_connections = --idle + 100`` is started.  After
warm-up (64 connections with one request each, closed again, and 50
requests on one keep-alive connection) the worker's memory is read: RSS
(``VmRSS`` of /proc/PID/status) and USS (``Private_Clean + Private_Dirty`` of
/proc/PID/smaps_rollup), polled until it is stable.  Then a client process
of this script's own (``--idle-client``, pinned with wrk's CPU, its soft
RLIMIT_NOFILE raised to the hard limit) opens ``--idle`` TCP connections,
non-blocking, in batches of 500, sends one ``GET /plaintext`` on each and
reads the response, so every connection has been through a full request and
sits idle in keep-alive.  Once the client reports, the script checks with
``ss`` that the server side has that many established connections, polls the
worker's memory until it is stable again, and reports
(after - before) / connections, RSS-based and USS-based, in bytes.  The
client then closes everything and exits (it is killed by PID if it does not;
it also exits by itself if this script dies).  The worker's open-fd count
before and after is shown as a cross-check of the connections it holds.

What the numbers mean:

* req/s is wrk's ``Requests/sec``: responses completed per second over the
  run, non-2xx included; in the pipelined scenario every response counts.
* ``uvloop/epoll`` and ``asyncio/epoll``: that backend's req/s over epoll's
  (below 1.00x: epoll served more).  For the idle rows the same ratio of
  bytes per connection (above 1.00x: that backend uses more memory than
  epoll per idle connection).
* ``*`` after req/s: wrk used >= 90% of its CPU (client-bound: the server
  might have served more).  ``!``: another wrk process ran during the
  measurement (the script waits for other wrk runs to finish before each
  measurement, up to ``--wait-max`` seconds in total).  ``~``: something
  else used >= 20% of a core during the run: the machine's busy time
  (/proc/stat user+nice+system+irq+softirq) less this server, wrk and this
  script -- other processes, or softirq work not charged to any of them
  (about 5-10% on loopback even when the machine is otherwise quiet).  The
  log lines (stderr) and ``--json`` name the busiest other processes, and
  show each core's busy and softirq share, the server's CPU per process and
  the workers' context switches per 1000 responses.
* RSS vs USS: RSS also counts the pages a worker still shares with its
  master (inherited at fork).  A write into one -- new objects placed in
  free heap space inherited from the master -- makes a private copy, which
  grows USS but not RSS; so RSS can understate the new memory, and USS is
  the closer measure.  ``!`` on an idle row: another wrk ran meanwhile (CPU
  contention does not change memory much); ``?``: the worker's memory had
  not settled within 30 s.
* errors: wrk's socket errors (connect, read, write, timeout) and non-2xx/3xx
  responses, broken down under the table; for the idle rows, connections
  that failed to open or to get a correct response.  WARNING/ERROR/CRITICAL
  lines in each server's error log are counted and quoted under the table.

Target: the epoll backend serves at least as many req/s as uvloop on
keep-alive /plaintext (keepalive-1000), and uses no more memory per idle
connection (RSS- and USS-based).

Servers are pinned to CPU 0 and wrk (and the idle client) to CPU 1 with
``taskset`` unless ``--no-pin``.  Only 127.0.0.1 is targeted.  Each server
runs in its own session and is stopped in a ``finally``: SIGTERM to the
master by PID, SIGKILL after a timeout, then every worker PID ever seen is
checked and SIGKILLed by PID if it outlived its master (reported).  Helpers
are prefork_bench's, shared with ``bench/http.py``.  The standard
library only (uvloop must be importable for the uvloop backend).

Exit status: 0 when everything ran and verified and the target was met, 1
otherwise, 2 when a tool is missing.
"""
