"""WSGI apps for the tests (issue 16): a raw PEP 3333 app checked by
``wsgiref.validate.validator`` (``raw_app``) and a Flask app (``flask_app``).

The raw app counts the iterables closed in this worker (``/closed``): the
e2e tests run one worker, so the count is the server's."""

from __future__ import annotations

import io
import json
import sys
import threading
from urllib.parse import parse_qsl
from wsgiref.validate import validator

from flask import Flask, Response, jsonify, request, stream_with_context

_lock = threading.Lock()
_counts = {"closed": 0, "started": 0, "produced": 0, "file_reads": 0}  # a test fixture's per-process counters


def _count(name: str) -> None:
    with _lock:
        _counts[name] += 1


class _Body:
    """An iterable with close(): counts the closes."""

    def __init__(self, chunks):
        self._chunks = iter(chunks)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self._chunks)

    def close(self):
        _count("closed")


def _json(start_response, data, status="200 OK"):
    body = json.dumps(data).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def _raw(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/env":
        keys = ("REQUEST_METHOD", "SCRIPT_NAME", "PATH_INFO", "QUERY_STRING", "CONTENT_TYPE", "CONTENT_LENGTH",
                "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "REMOTE_ADDR", "REMOTE_PORT", "HTTP_COOKIE",
                "HTTP_X_MULTI", "wsgi.url_scheme", "wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once",
                "wsgi.input_terminated")
        data = {key: environ.get(key) for key in keys}
        data["wsgi.version"] = list(environ["wsgi.version"])
        data["body"] = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode("latin-1")
        environ["wsgi.errors"].write("env asked\n")
        return _json(start_response, data)
    if path == "/input":
        stream = environ["wsgi.input"]
        first = stream.read(3)
        line = stream.readline(4)
        rest_line = stream.readline()
        lines = stream.readlines()
        after = stream.read(10)
        stream.read(0)
        return _json(start_response, {"first": first.decode(), "line": line.decode(), "rest_line": rest_line.decode(),
                                      "lines": [x.decode() for x in lines], "after": after.decode()})
    if path == "/iter-input":
        return _json(start_response, {"lines": [x.decode() for x in environ["wsgi.input"]]})
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return _Body([b"then ", b"iterated"])
    if path == "/chunks":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Body([b"a", b"bb", b"", b"ccc"])
    if path == "/one":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _Body([b"just one"])
    if path == "/short":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return _Body([b"12345"])
    if path == "/fail-before":
        raise RuntimeError("the app failed before start_response")
    if path == "/exc-info":  # an error page in place of the response not yet sent
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise ValueError("oops")
        except ValueError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"error page"]
    if path == "/exc-info-late":  # too late: the head is out, start_response re-raises
        return _late(start_response)
    if path == "/fail-mid":
        return _fail_mid(start_response)
    if path == "/nocontent":
        start_response("204 No Content", [])
        return [b""]
    if path == "/big":  # n chunks of 64 KiB
        n = int(environ["QUERY_STRING"] or "16")
        _count("started")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return _Body(_produce(n))
    if path == "/closed":
        with _lock:
            return _json(start_response, dict(_counts))
    return _json(start_response, {"error": "not found"}, "404 Not Found")


def _produce(n: int):
    for _ in range(n):
        _count("produced")
        yield b"x" * 65536


def _late(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"begun"
    try:
        raise ValueError("late")
    except ValueError:
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
    yield b"never"


def _fail_mid(start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"part one"
    yield b"part two"
    raise RuntimeError("failed mid-response")


raw_app = validator(_raw)


def make_raw_app():
    """A factory (wsgi_factory = true)."""
    return raw_app


class CountingFile(io.FileIO):
    """A file whose reads are counted: a file sent with sendfile is never read by the app's thread."""

    def read(self, size=-1):
        _count("file_reads")
        return super().read(size)

    def readinto(self, buffer):
        _count("file_reads")
        return super().readinto(buffer)


def file_app(environ, start_response):
    """``/files/?PATH[&skip=N]``: the file at PATH (test-only), through wsgi.file_wrapper."""
    if environ["PATH_INFO"] == "/reads":
        return _json(start_response, dict(_counts))
    query = dict(parse_qsl(environ["QUERY_STRING"]))
    f = CountingFile(query["path"], "r")
    if "skip" in query:
        f.seek(int(query["skip"]))
    headers = [("Content-Type", "application/octet-stream")]
    if "length" in query:
        headers.append(("Content-Length", query["length"]))
    start_response("200 OK", headers)
    return environ["wsgi.file_wrapper"](f, 8192)


# --- Flask -----------------------------------------------------------------------------------

flask_app = Flask(__name__)


class Teapot(Exception):
    pass


@flask_app.errorhandler(Teapot)
def _teapot(exc):
    return jsonify(error="teapot", detail=str(exc)), 418


@flask_app.get("/json")
def _flask_json():
    return jsonify(hello="flask", args=request.args.to_dict(), root=request.script_root, path=request.path)


@flask_app.post("/upload")
def _flask_upload():
    f = request.files["file"]
    data = f.read()
    return jsonify(name=request.form.get("name"), filename=f.filename, size=len(data), head=data[:5].decode())


@flask_app.post("/echo")
def _flask_echo():
    return jsonify(got=request.get_json())


@flask_app.get("/stream")
def _flask_stream():
    def lines():
        for i in range(5):
            yield f"line {i}\n"
    return Response(stream_with_context(lines()), mimetype="text/plain")


@flask_app.get("/teapot")
def _flask_teapot():
    raise Teapot("short and stout")


@flask_app.get("/crash")
def _flask_crash():
    raise RuntimeError("unhandled")


def hold_app(environ, start_response):
    """A small raw app for the slow-client and threads-busy tests: "/hold?<path>"
    keeps its pool thread until the file <path> exists (20 s at most), so
    /status shows a busy thread; anything else answers "ok" at once."""
    if environ["PATH_INFO"].endswith("/hold"):
        import os
        import time

        flag, deadline = environ["QUERY_STRING"], time.monotonic() + 20
        while not os.path.exists(flag) and time.monotonic() < deadline:
            time.sleep(0.01)  # the app's own work: waiting for the test's go
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(2 + len(body)))])
    return [b"ok" + body]
