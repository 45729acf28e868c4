"""Checking each test type's answer before measuring it."""

from __future__ import annotations

import argparse
import html
import json
import re
from pathlib import Path

from ..net import http_get
from .db import pg_fortunes, pg_rows, sqlite_fortunes, sqlite_rows
from .model import ADDITIONAL_FORTUNE, QUERIES, Target, TestType, VERIFY_TIMEOUT, WORLD_ROWS


class Bad(Exception):
    """A verification failure."""


def get_ok(port: int, path: str, content_type: str) -> bytes:
    status, headers, body = http_get(port, path, VERIFY_TIMEOUT)
    if status != 200:
        raise Bad(f"GET {path}: status {status}, body {body[:200]!r}")
    got = headers.get("content-type", "")
    if got.replace(" ", "").lower() != content_type.replace(" ", "").lower():
        raise Bad(f"GET {path}: Content-Type {got!r}, expected {content_type!r}")
    return body


def world_list(path: str, body: bytes, count: int) -> list[tuple[int, int]]:
    try:
        data = json.loads(body)
    except ValueError:
        raise Bad(f"GET {path}: not JSON: {body[:200]!r}") from None
    if not isinstance(data, list) or len(data) != count:
        raise Bad(f"GET {path}: expected a JSON array of {count}, got {body[:200]!r}")
    return [world_object(path, item) for item in data]


def world_object(path: str, item) -> tuple[int, int]:
    if (not isinstance(item, dict) or set(item) != {"id", "randomNumber"}
            or not all(type(item[k]) is int and 1 <= item[k] <= WORLD_ROWS for k in item)):
        raise Bad(f"GET {path}: not a World object with id and randomNumber in 1..{WORLD_ROWS}: {item!r}")
    return item["id"], item["randomNumber"]


def verify_test(test: TestType, port: int, target: Target, args: argparse.Namespace,
                sqlite_path: Path) -> None:
    """Raise Bad saying what is wrong with the server's answer for this test type."""
    body = get_ok(port, test.path, test.content_type)
    if test.name == "plaintext":
        if body != b"Hello, World!":
            raise Bad(f"GET {test.path}: body {body[:200]!r}")
    elif test.name == "json":
        try:
            if json.loads(body) != {"message": "Hello, World!"}:
                raise ValueError
        except ValueError:
            raise Bad(f"GET {test.path}: body {body[:200]!r}") from None
    elif test.name == "db":
        try:
            data = json.loads(body)
        except ValueError:
            raise Bad(f"GET {test.path}: not JSON: {body[:200]!r}") from None
        world_object(test.path, data)
    elif test.name in ("queries", "updates"):
        base = test.path.partition("?")[0]
        rows = world_list(test.path, body, QUERIES)
        if test.name == "updates":
            ids = [i for i, _ in rows]
            if len(set(ids)) != len(ids):
                raise Bad(f"GET {test.path}: ids not distinct: {ids}")
            stored = (sqlite_rows(sqlite_path, ids) if target.backend == "sqlite"
                      else pg_rows(args.pg_url, ids))
            wrong = [(i, n, stored[i]) for i, n in rows if stored[i] != n]
            if wrong:
                raise Bad(f"GET {test.path}: {len(wrong)} of {len(rows)} returned values are not "
                          f"in the database, e.g. (id, returned, stored) {wrong[:3]}")
        for query, count in (("queries=0", 1), ("queries=foo", 1), ("queries=501", 500), ("", 1)):
            path = f"{base}?{query}" if query else base
            world_list(path, get_ok(port, path, test.content_type), count)
    elif test.name == "fortunes":
        text = body.decode("utf-8", errors="replace")
        if ADDITIONAL_FORTUNE not in text:
            raise Bad(f"GET {test.path}: the additional fortune is missing: {text[:300]!r}")
        if "<script>" in text:
            raise Bad(f"GET {test.path}: fortune 11 is not escaped")
        cells = re.findall(r"<tr>\s*<td>\s*(\d+)\s*</td>\s*<td>(.*?)</td>\s*</tr>", text, re.S)
        got = [(int(i), html.unescape(m)) for i, m in cells]
        stored = sqlite_fortunes(sqlite_path) if target.backend == "sqlite" else pg_fortunes(args.pg_url)
        expected = sorted(stored + [(0, ADDITIONAL_FORTUNE)], key=lambda r: r[1])
        if got != expected:
            raise Bad(f"GET {test.path}: rows {got[:3]}... ({len(got)}), expected {len(expected)} "
                      f"rows sorted by message")
