"""What a trip through the thread pool costs, next to the work it would carry.

    python bench/handoff.py [--n 20000]

Runs in one process with the real pieces (``prefork.reactor.Reactor`` and
``prefork.pool.ThreadPool``) and prints a table of microseconds per operation:

* inline call        -- a trivial handler called on the reactor thread
* pool round trip    -- submit a trivial job, get its result back on the
                        reactor thread (eventfd wakeup), one at a time: the
                        latency a blocking handler adds
* pool, 64 in flight -- the same with 64 jobs outstanding: the throughput cost
* work: stat         -- os.stat of a small file (page cache warm)
* work: open+read 4K -- open, read 4 KiB, close (what a static cache miss does)
* work: sqlite read  -- one primary-key SELECT on a local SQLite file

The point: a hand-off is worth it only for work that can block for longer
than the hand-off costs (a cold disk, a database that waits on locks or the
network); short, local, cached work runs inline.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

from prefork.pool import ThreadPool
from prefork.reactor import Reactor


def per_op(fn, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def pool_round_trip(reactor: Reactor, pool: ThreadPool, n: int, in_flight: int) -> float:
    state = {"done": 0, "sent": 0}

    def job(x):
        return x

    def done(result, exc):
        state["done"] += 1
        if state["sent"] < n:
            state["sent"] += 1
            pool.submit(job, 1, done)

    start = time.perf_counter()
    for _ in range(min(in_flight, n)):
        state["sent"] += 1
        pool.submit(job, 1, done)
    while state["done"] < n:
        reactor.run_once(1.0)
    return (time.perf_counter() - start) / n * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    n = args.n
    reactor = Reactor(setsize=64)
    pool = ThreadPool(reactor.call_soon_threadsafe, args.threads, 1024)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "4k.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
        db = sqlite3.connect(os.path.join(tmp, "w.db"))
        db.execute("CREATE TABLE world (id INTEGER PRIMARY KEY, randomNumber INTEGER)")
        db.executemany("INSERT INTO world VALUES (?, ?)", [(i, i * 7 % 10000) for i in range(1, 10001)])
        db.commit()

        def handler():
            return b"Hello, World!"

        def open_read():
            fd = os.open(path, os.O_RDONLY)
            os.read(fd, 4096)
            os.close(fd)

        def sqlite_read():
            db.execute("SELECT id, randomNumber FROM world WHERE id = ?", (4242,)).fetchone()

        rows.append(("inline call", per_op(handler, n)))
        rows.append(("pool round trip (1 in flight)", pool_round_trip(reactor, pool, n, 1)))
        rows.append(("pool, 64 in flight (per job)", pool_round_trip(reactor, pool, n, 64)))
        rows.append(("work: stat", per_op(lambda: os.stat(path), n)))
        rows.append(("work: open+read 4K+close", per_op(open_read, n)))
        rows.append(("work: sqlite primary-key read", per_op(sqlite_read, n)))
        db.close()
    pool.shutdown()
    reactor.close()
    width = max(len(r[0]) for r in rows)
    print(f"{'operation':<{width}}  us/op")
    print(f"{'-' * width}  -----")
    for name, us in rows:
        print(f"{name:<{width}}  {us:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
