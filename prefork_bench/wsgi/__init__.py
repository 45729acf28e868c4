"""WSGI benchmark: prefork against gunicorn (gthread and sync) and granian on one WSGI app.

Usage, from a checkout or as ``prefork-bench wsgi`` with the same options::

    python bench/wsgi.py [--workers 1] [--threads 4] [--rounds 3] [--duration 5]
                         [--connections 64] [--slow 1000] [--servers prefork,gunicorn-gthread,...]
                         [--scenarios a-hello,b-flask,c-django,d-slowloris] [--json FILE] [--no-pin]

Every server runs the same callable, ``prefork_bench.wsgi.apps:app``, with the
same workers (1) and threads (4) per worker, backlog and keep-alive:

    prefork           backend "epoll", the app as a ``wsgi`` route at "/", [server] threads
    gunicorn-gthread  -k gthread --threads
    gunicorn-sync     -k sync (one request at a time per worker; --threads does nothing)
    granian           --interface wsgi --blocking-threads

The scenarios, each ``--duration`` seconds of ``wrk --latency`` after a ``--warmup`` run:

    a-hello       GET /, a raw WSGI hello world
    b-flask       GET /flask/items/42, a Flask JSON endpoint with a path parameter
    c-django      GET /django/items/42, a Django view (settings in code, no database)
    d-slowloris   GET / while ``--slow`` (1000) slowloris connections are held open by a
                  thread of the bench: each sends a partial request head, then one byte
                  every 3 s; opened before the warm-up, all closed after the run

Rounds are interleaved and pinned, and the servers' CPU per request measured,
exactly as in ``bench/asgi.py`` (its ``measure.bench_turn`` runs each turn here).
d-slowloris is reported against a-hello of the same round (with/without).

Targets: a-hello >= 3x gunicorn-gthread and >= 1.0x granian; prefork's
d-slowloris req/s within 10% of its own a-hello. Exit status: 0 when every
server ran and the targets were met, 1 otherwise, 2 when a tool is missing.
"""
