"""ASGI benchmark: prefork against uvicorn, granian and hypercorn on one ASGI app.

Usage, from a checkout or as ``prefork-bench asgi`` with the same options::

    python bench/asgi.py [--workers 1] [--rounds 3] [--duration 5] [--connections 64]
                         [--keepalive-connections 1000] [--servers prefork,uvicorn,granian,hypercorn]
                         [--scenarios a-hello,b-fastapi,c-stream,d-keepalive] [--json FILE] [--no-pin]

Every server runs the same app object, ``prefork_bench.asgi.apps:app``, with the
same number of workers (1 by default) and backlog, from one Python (this one
when it has uvicorn, granian, hypercorn, FastAPI and Starlette, else a venv of
the bench's own, ``--venv``, filled with pip):

    prefork    backend "uvloop", the app as an ASGI route at "/"
    uvicorn    --loop uvloop --http httptools
    granian    --interface asgi --loop uvloop --http 1 --no-ws
    hypercorn  --worker-class uvloop

(keep-alive timeouts at 600 s everywhere, access logs off). The scenarios, each
``--duration`` seconds of ``wrk --latency`` after a ``--warmup`` run:

    a-hello      GET /, a raw ASGI hello world, --connections (64)
    b-fastapi    GET /items/42, a FastAPI JSON endpoint with a path parameter
    c-stream     GET /stream, a Starlette StreamingResponse of 1 MiB (16 x 64 KiB)
    d-keepalive  GET /, --keepalive-connections (1000) keep-alive connections

Rounds are interleaved: round r starts every server once, in an order rotated
by r, checks its answers to the scenarios' paths, reads its memory per idle
connection (below), then runs every scenario, and stops it. Every server
process is pinned to CPU 0 and wrk to CPU 1 (taskset; ``--no-pin`` turns it
off). The machine may be shared: the report gives the load average and the
CPU the rest of the machine used during the runs, and the ratios are the
medians of the rounds' own ratios (a round runs the servers back to back).

Reported per scenario and server: req/s (wrk's, the median round), p99, CPU
µs per request (utime+stime of every process of the server's session from
/proc/PID/stat, over the wrk run, divided by wrk's request count; the median
of the rounds), and for d-keepalive the idle bytes per keep-alive connection:
after a warm-up (64 connections with a request each, 50 requests on one
connection), the server's PSS and RSS summed over its processes, polled until
stable, then ``--keepalive-connections`` connections that have each had one
response and sit idle (checked with ``ss``), memory polled until stable again;
(after - before) / connections, PSS in the table, both in ``--json``.

Targets: a-hello >= 1.5x uvicorn and >= 1.0x granian; b-fastapi >= 1.2x
uvicorn; idle bytes per connection no more than uvicorn's. Exit status: 0 when
every server ran and the targets were met, 1 otherwise, 2 when a tool is missing.
"""
