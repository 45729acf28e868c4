"""``/status`` (what nginx's stub_status shows, plus a line per worker) and
``/metrics`` (the same counters in Prometheus text format).

Each worker writes its counters into its scoreboard record once a second (and
right before it answers a status request); the answer adds up every live
record, so it covers all workers whichever one serves it. Only addresses in
``[status] allow`` may ask (``"unix"`` for unix-socket clients); others get 403.
"""

from __future__ import annotations

import ipaddress
import os

from ..messages import Request, Response
from ..scoreboard import (ACCEPTED, ACTIVE, BUSY, FIELDS, GENERATION, HANDLED, PID, READING, REQUESTS, SLOT,
                          WAITING, WRITING)

_NAMES = {ACTIVE: "active", ACCEPTED: "accepted", HANDLED: "handled", REQUESTS: "requests",
          READING: "reading", WRITING: "writing", WAITING: "waiting", BUSY: "busy"}


class _Access:
    def __init__(self, allow: tuple[str, ...]):
        self.unix = "unix" in allow
        self.networks = [ipaddress.ip_network(a, strict=False) for a in allow if a != "unix"]

    def allowed(self, peer) -> bool:
        if not isinstance(peer, tuple):
            # a unix socket: maybe a reverse proxy's, relaying anyone, so only when listed
            return self.unix
        try:
            address = ipaddress.ip_address(peer[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks)


def _forbidden() -> Response:
    return Response(403, b"403 Forbidden\n", b"text/plain")


def collect(app) -> tuple[dict[str, int], list[dict[str, int]]]:
    """Totals and per-worker rows, from the scoreboard (or this worker alone)."""
    worker = app.worker
    board = app.scoreboard
    rows = []
    if board is not None and worker is not None and worker.supervisor is not None:
        worker.supervisor.update(worker)  # this worker's numbers: fresh, not a second old
        cells = board.cells
        for rec in board.live():
            base = rec * FIELDS
            row = {name: cells[base + field] for field, name in _NAMES.items()}
            row.update(pid=cells[base + PID], generation=cells[base + GENERATION], slot=cells[base + SLOT])
            rows.append(row)
    elif worker is not None:
        counters = worker.counters()
        row = {name: counters[field] for field, name in _NAMES.items()}
        row.update(pid=0, generation=0, slot=worker.index)
        rows.append(row)
    for row in rows:
        if row["pid"] in (0, os.getpid()) and row["slot"] == worker.index and row["waiting"] > 0:
            # the request being answered has been read (its connection is
            # counted as idle until the answer is queued): it is writing now,
            # as nginx counts it
            row["waiting"] -= 1
            row["writing"] += 1
            break
    totals = {name: sum(r[name] for r in rows) for name in _NAMES.values()}
    return totals, sorted(rows, key=lambda r: (r["slot"], r["generation"]))


def _endpoint(app, render):
    """A handler answering ``render(totals, rows)`` to allowed addresses, 403 to others."""
    access = _Access(app.config.status.allow)

    def handler(request: Request) -> Response:
        if not access.allowed(request.peer):
            return _forbidden()
        return render(*collect(app))

    return handler


def _thread_lines(app) -> list[str]:
    """``mode = "thread"``: one scoreboard record covers the process, so each
    reactor thread's own numbers are read here (they are all in this process)."""
    worker = app.worker
    if worker is None or len(worker.group) < 2:
        return []
    return [f"reactor thread {w.index}: active {w.active} accepted {w.accepted} requests {w.http.requests}"
            for w in worker.group]


def _render_status(t: dict[str, int], rows: list[dict[str, int]], extra: list[str] = ()) -> Response:
    lines = [
        f"Active connections: {t['active']} ",
        "server accepts handled requests",
        f" {t['accepted']} {t['handled']} {t['requests']} ",
        f"Reading: {t['reading']} Writing: {t['writing']} Waiting: {t['waiting']} ",
        f"Threads busy: {t['busy']} ",
    ]
    for r in rows:
        lines.append(f"worker {r['slot']} pid {r['pid']} generation {r['generation']}: active {r['active']} "
                     f"accepted {r['accepted']} handled {r['handled']} requests {r['requests']} "
                     f"reading {r['reading']} writing {r['writing']} waiting {r['waiting']} busy {r['busy']}")
    lines += extra
    return Response(200, ("\n".join(lines) + "\n").encode(), b"text/plain")


def make_status(app, prefix: str):
    return _endpoint(app, lambda totals, rows: _render_status(totals, rows, _thread_lines(app)))


_METRICS = (
    ("active", "prefork_connections_active", "gauge", "Open client connections."),
    ("accepted", "prefork_connections_accepted_total", "counter", "Connections accepted."),
    ("handled", "prefork_connections_handled_total", "counter", "Accepted connections that were served."),
    ("requests", "prefork_requests_total", "counter", "HTTP requests answered."),
    ("reading", "prefork_connections_reading", "gauge", "Connections receiving a request."),
    ("writing", "prefork_connections_writing", "gauge", "Connections with a response in progress."),
    ("waiting", "prefork_connections_waiting", "gauge", "Idle keep-alive connections."),
    ("busy", "prefork_threads_busy", "gauge", "Pool threads running application code."),
)


def _render_metrics(t: dict[str, int], rows: list[dict[str, int]]) -> Response:
    out = []
    for key, name, kind, text in _METRICS:
        out += [f"# HELP {name} {text} (per worker: sum over slot for the server)", f"# TYPE {name} {kind}"]
        for r in rows:
            out.append(f'{name}{{slot="{r["slot"]}",pid="{r["pid"]}"}} {r[key]}')
    out += ["# HELP prefork_workers Worker processes running.", "# TYPE prefork_workers gauge",
            f"prefork_workers {len(rows)}"]
    return Response(200, ("\n".join(out) + "\n").encode(), b"text/plain; version=0.0.4")


def make_metrics(app, prefix: str):
    return _endpoint(app, _render_metrics)
