"""Reload benchmark: does prefork drop requests while it reloads, loses
workers, or spreads connections unevenly?  Driven by wrk.

Usage (from anywhere), from a checkout or as ``prefork-bench reload`` with the same options::

    python bench/reload.py [--workers 2] [--duration 20] [--reloads 20] [--kills 5]
                           [--accept reuseport|shared] [--spread-connections 400]
                           [--spread-duration 4] [--seed N] [--json FILE] [--no-pin]

Part 1, reloads and kills under load.  For each mode

    keepalive   keep-alive, 64 connections
    close       a new TCP connection per request (``Connection: close``),
                64 concurrent connections

and each of two event plans

    reload-only      ``--reloads`` SIGHUPs to the master, nothing else
    reload+kill      the same SIGHUPs plus ``--kills`` SIGKILLs, each to a
                     random current worker (one that is not retiring)

a fresh prefork (``accept = "reuseport"`` unless ``--accept`` says otherwise,
``--workers`` workers) is started, warmed up with a short keep-alive wrk run,
and then wrk runs for ``--duration`` seconds on ``GET /plaintext`` while the
events are sent spread evenly over that time (event *i* of *n* at
``(i + 0.5) * duration / n``).  After every event the script polls ``/proc``
until the master again has exactly ``--workers`` children and none of them is
a worker from before the event (the retired or killed one has been reaped),
with a deadline of ``--settle-timeout`` seconds.  The table shows per row:

* ``requests``: wrk's completed responses over the measured run; ``req/s``
  the same per second.
* ``connect``, ``read``, ``write``, ``timeout``: wrk's socket errors.
  ``connect``: a connect() failed (refused or reset: nobody accepted).
  ``read``: reading a response failed or the connection was closed before a
  complete response arrived (wrk then reconnects).  ``write``: sending a
  request failed.  ``timeout``: no response within ``--wrk-timeout``
  seconds.  A SIGKILLed worker's own established keep-alive connections are
  necessarily lost, so ``reload+kill`` rows in keepalive mode show some read
  errors by design (at most about one per connection the victim held).
* ``non-2xx``: responses whose status was not 2xx or 3xx.
* ``HUP``/``KILL``: signals actually sent (an event whose time falls after
  wrk has finished is skipped and counted in ``skipped``).
* ``reloaded``: "reload complete" lines in the server's error log, i.e.
  reloads the master finished (should equal ``HUP``).
* ``settle max``: the longest time, after an event, until the master had its
  full worker count again; ``unsettled``: events after which that did not
  happen within ``--settle-timeout``.  (The master respawns a worker that
  died less than 5 s after it started only after its crash-loop back-off,
  which it checks every 0.25 s, so a kill of a young worker settles in
  0.1 to 0.6 s; ``--json`` has every event's time.)
* ``target``: ``ok`` when the row has no error at all, ``MISSED`` when a
  reload-only row of the reuseport strategy has any socket error or non-2xx
  response (the benchmark's target: reloads lose nothing), ``-`` otherwise.

Part 2, connection spread.  For ``accept = "reuseport"`` and ``accept =
"shared"`` in turn, a fresh prefork is started and wrk holds
``--spread-connections`` keep-alive connections for ``--spread-duration``
seconds.  Midway, ``ss -tnpH state established '( sport = :PORT )'`` counts
the established server-side connections per worker pid.  The table shows the
connections per worker (workers in pid order), their
total, ``min/max`` (the least loaded worker's count over the most loaded's:
1.00 is perfectly even, 0.00 means a worker got nothing) and ``CV`` (the
coefficient of variation, population standard deviation over mean: 0 is
perfectly even).

Every server runs from a generated config in a temporary directory, is
pinned to CPU 0 (wrk to CPU 1) with ``taskset`` unless ``--no-pin``, and is
stopped in a ``finally``: SIGTERM to the master by PID, SIGKILL if it has
not exited after a timeout, then every worker pid ever seen (and anything
left in the master's process group) is checked and SIGKILLed by PID if
still alive.  Only 127.0.0.1 is targeted.  ``wrk`` (and ``ss``, ``taskset``)
are installed with apt-get when missing.  Helpers are prefork_bench's,
shared with ``bench/http.py``.  The standard library only.

Exit status: 0 when the target was met, 1 when a reload-only reuseport row
had errors or could not be measured, 2 when a tool is missing.
"""
