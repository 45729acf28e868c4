"""The uvicorn side: a raw ASGI app, written into the run's directory and run by
uvicorn in its own venv, without prefork."""

UVICORN_APP = '''\
"""A raw ASGI app doing what prefork's built-in TechEmpower handlers do (bench/tfb.py).

Standalone: it runs in uvicorn's venv, where prefork is not installed."""

import asyncio
import html
import os
import random
import sqlite3
from operator import itemgetter

import orjson

KIND = os.environ["TFB_DB_KIND"]                  # sqlite or postgresql
URL = os.environ["TFB_DB_URL"]                    # a file path for sqlite
SYNCHRONOUS = os.environ.get("TFB_SQLITE_SYNCHRONOUS", "normal")
WORLD_ROWS = 10000
ADDITIONAL_FORTUNE = "Additional fortune added at request time."

PLAINTEXT = b"Hello, World!"
CT_TEXT = b"text/plain"
CT_JSON = b"application/json"
CT_HTML = b"text/html; charset=utf-8"

SELECT_WORLD_SQLITE = "SELECT id, randomNumber FROM World WHERE id = ?"
UPDATE_WORLD_SQLITE = "UPDATE World SET randomNumber = ? WHERE id = ?"
SELECT_WORLD_PG = "SELECT id, randomNumber FROM World WHERE id = %s"
UPDATE_WORLD_PG = "UPDATE World SET randomNumber = %s WHERE id = %s"
SELECT_FORTUNES = "SELECT id, message FROM Fortune"


class SQLiteDB:
    """One sqlite3 connection per worker process, used synchronously on the event loop."""

    def __init__(self, path):
        self.conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={SYNCHRONOUS.upper()}")
        self.errors = (sqlite3.Error,)

    async def world(self, wid):
        return self.conn.execute(SELECT_WORLD_SQLITE, (wid,)).fetchone()

    async def worlds(self, ids):
        conn = self.conn
        cur = conn.cursor()
        if len(ids) == 1:
            return [cur.execute(SELECT_WORLD_SQLITE, (ids[0],)).fetchone()]
        conn.execute("BEGIN")
        try:
            rows = [cur.execute(SELECT_WORLD_SQLITE, (i,)).fetchone() for i in ids]
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return rows

    async def updates(self, ids, numbers):
        conn = self.conn
        cur = conn.cursor()
        conn.execute("BEGIN IMMEDIATE")
        try:
            worlds = [cur.execute(SELECT_WORLD_SQLITE, (i,)).fetchone() for i in ids]
            new = sorted(zip([w for w, _ in worlds], numbers))
            cur.executemany(UPDATE_WORLD_SQLITE, [(n, i) for i, n in new])
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        return new

    async def fortunes(self):
        return self.conn.execute(SELECT_FORTUNES).fetchall()

    async def reset(self):
        pass


class PostgresDB:
    """One psycopg AsyncConnection per worker process, shared by all its requests."""

    def __init__(self):
        import psycopg
        self.psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.conn = None
        self.update_lock = asyncio.Lock()   # transactions on one shared connection must not nest

    async def connect(self):
        self.conn = await self.psycopg.AsyncConnection.connect(URL, autocommit=True, prepare_threshold=0)

    async def world(self, wid):
        cur = await self.conn.execute(SELECT_WORLD_PG, (wid,))
        return await cur.fetchone()

    async def worlds(self, ids):
        out = []
        async with self.conn.cursor() as cur:
            for i in ids:
                await cur.execute(SELECT_WORLD_PG, (i,))
                out.append(await cur.fetchone())
        return out

    async def updates(self, ids, numbers):
        async with self.update_lock:
            async with self.conn.transaction():
                async with self.conn.cursor() as cur:
                    worlds = []
                    for i in ids:
                        await cur.execute(SELECT_WORLD_PG, (i,))
                        worlds.append(await cur.fetchone())
                    new = sorted(zip([w for w, _ in worlds], numbers))
                    await cur.executemany(UPDATE_WORLD_PG, [(n, i) for i, n in new])
        return new

    async def fortunes(self):
        cur = await self.conn.execute(SELECT_FORTUNES)
        return await cur.fetchall()

    async def reset(self):
        if self.conn is None or self.conn.broken or self.conn.closed:
            try:
                await self.connect()
            except self.psycopg.Error:
                pass


db = None


def queries_param(query):
    for pair in query.split(b"&"):
        key, _, value = pair.partition(b"=")
        if key == b"queries":
            try:
                n = int(value)
            except ValueError:
                return 1
            return 1 if n < 1 else 500 if n > 500 else n
    return 1


_random = random.random


def dumps(obj):
    return orjson.dumps(obj)


def random_id():
    return int(_random() * WORLD_ROWS) + 1


def rollback(conn):
    try:
        conn.execute("ROLLBACK")
    except sqlite3.Error:
        pass


def render_fortunes(rows):
    rows = list(rows)
    rows.append((0, ADDITIONAL_FORTUNE))
    rows.sort(key=itemgetter(1))
    cells = "".join([f"<tr><td>{i}</td><td>{html.escape(m)}</td></tr>" for i, m in rows])
    return ("<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table>"
            f"<tr><th>id</th><th>message</th></tr>{cells}</table></body></html>").encode()


async def h_plaintext(scope):
    return 200, PLAINTEXT, CT_TEXT


async def h_json(scope):
    return 200, dumps({"message": "Hello, World!"}), CT_JSON


async def h_db(scope):
    wid, number = await db.world(random_id())
    return 200, dumps({"id": wid, "randomNumber": number}), CT_JSON


async def h_queries(scope):
    ids = [random_id() for _ in range(queries_param(scope["query_string"]))]
    return 200, dumps([{"id": w, "randomNumber": n} for w, n in await db.worlds(ids)]), CT_JSON


async def h_updates(scope):
    n = queries_param(scope["query_string"])
    ids = random.sample(range(1, WORLD_ROWS + 1), n)
    new = await db.updates(ids, [random_id() for _ in range(n)])
    return 200, dumps([{"id": w, "randomNumber": n} for w, n in new]), CT_JSON


async def h_fortunes(scope):
    return 200, render_fortunes(await db.fortunes()), CT_HTML


ROUTES = {"/plaintext": h_plaintext, "/json": h_json, "/db": h_db, "/queries": h_queries,
          "/updates": h_updates, "/fortunes": h_fortunes}
DB_ROUTES = {"/db", "/queries", "/updates", "/fortunes"}


async def lifespan(receive, send):
    global db
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                if KIND == "sqlite":
                    db = SQLiteDB(URL)
                else:
                    db = PostgresDB()
                    await db.connect()
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send):
    kind = scope["type"]
    if kind == "lifespan":
        await lifespan(receive, send)
        return
    if kind != "http":
        return
    handler = ROUTES.get(scope["path"])
    if handler is None:
        status, body, ctype = 404, b"Not Found", CT_TEXT
    elif scope["path"] in DB_ROUTES:
        try:
            status, body, ctype = await handler(scope)
        except db.errors as exc:
            print(f"ERROR database error on {scope['path']}: {exc}", flush=True)
            await db.reset()
            status, body, ctype = 503, b"503 Service Unavailable\\n", CT_TEXT
    else:
        status, body, ctype = await handler(scope)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())],
    })
    await send({"type": "http.response.body", "body": body})
'''
