"""prefork-bench, the load client: its pure parts, then the real thing at a
small scale against a real server (a few thousand connections over two
source addresses; the accept comparison with short runs).

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_loadgen.py has the in-process ones."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, Server, free_port, make_config, wait_until


def bench(*argv: str, cwd, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_bench", *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")))


@pytest.fixture
def server(tmp_path):
    """One epoll server: the load client is the subject here (the backends are tested elsewhere)."""
    port = free_port()
    srv = Server(tmp_path, make_config({"http": port}, "workers = 2\nworker_connections = 4000"),
                 {"http": port}).start()
    srv.wait_workers(2)
    yield srv
    srv.stop()


def test_connections_held_and_answered(server, tmp_path):
    srv = server
    out = tmp_path / "run.json"
    done = bench("connections", "--target", f"127.0.0.1:{srv.port}", "--count", "3000", "--rate", "3000",
                 "--hold", "3", "--request-every", "1", "--sources", "127.0.0.2-127.0.0.3",
                 "--processes", "2", "--pid-file", str(srv.pid_path), "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    assert result["established"] == result["established_max"] == 3000
    assert result["errors"] == {} and result["failed"] == 0 and result["dropped"] == 0
    assert result["client_processes"] == 2 and result["source_addresses"] == 2
    # every connection asked about once a second for ~3 s, and every request was answered
    assert result["responses"] == result["requests_sent"] >= 3000 and result["non_2xx"] == 0
    assert result["hold_responses_per_s"] > 1000
    assert result["latency_p99_s"] is not None and result["connect_p50_s"] is not None
    assert result["server_processes"] == 3 and result["server_rss_peak"] > 0
    assert result["server_bytes_per_connection"]["rss"] > 0
    assert 0 < result["mem_used_peak_percent"] < 100
    assert len(result["samples"]) >= 4 and result["samples"][0]["established"] == 0
    assert (tmp_path / "run.png").stat().st_size > 10_000
    assert "established (peak open)            3,000 (3,000)" in done.stdout
    # the client closed everything it opened: the server is back to no connections
    wait_until(lambda: _active(srv.port) == 1, what="the server to see every connection closed")


def _active(port: int) -> int:
    from conftest import http_get
    return int(http_get(port, "/status")[2].decode().split()[2])


def test_connections_report_refused_connections(tmp_path):
    port = free_port()  # nobody listens here
    done = bench("connections", "--target", f"127.0.0.1:{port}", "--count", "50", "--rate", "1000",
                 "--hold", "0", "--sources", "none", "--json", str(tmp_path / "r.json"), cwd=tmp_path)
    assert done.returncode == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["errors"] == {"ECONNREFUSED": 50} and result["established"] == 0


def test_accept_compares_the_strategies(tmp_path):
    done = bench("accept", "--duration", "1", "--workers", "2", "--clients", "1", "--concurrency", "8",
                 "--json", str(tmp_path / "a.json"), cwd=tmp_path, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "a.json").read_text())["results"]
    assert [r["strategy"] for r in results] == ["one", "threads", "shared", "reuseport"]
    for r in results:
        assert r["completed"] > 100 and r["per_second"] > 0, r
        assert sum(r["errors"].values()) == 0, r
    by = {r["strategy"]: r for r in results}
    assert len(by["one"]["per_worker"]) == 1 and len(by["threads"]["per_worker"]) == 2
    assert len(by["reuseport"]["per_worker"]) == 2 and len(by["shared"]["per_worker"]) == 2
    # the server counted what the clients did, give or take the connections in
    # flight at the end (8) and the status requests themselves
    assert 0 <= sum(by["reuseport"]["per_worker"]) - by["reuseport"]["completed"] <= 8 + 10
    assert "N processes, SO_REUSEPORT socket each" in done.stdout
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_the_server_package_holds_no_load_tools():
    """The load tools are a package of their own: nothing under prefork/ names
    prefork_bench or runs apt-get or pip, and importing every server module
    loads no prefork_bench module."""
    for path in (ROOT / "prefork").rglob("*.py"):
        text = path.read_text()
        assert "prefork_bench" not in text, path
        assert '"apt-get"' not in text and '"pip"' not in text, path
    code = ("import importlib, pkgutil, sys, prefork\n"
            "for m in pkgutil.walk_packages(prefork.__path__, 'prefork.'):\n"
            "    importlib.import_module(m.name)\n"
            "print(sorted(n for n in sys.modules if n.startswith('prefork')))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    loaded = eval(done.stdout)
    assert "prefork.cli" in loaded and "prefork.worker" in loaded
    assert not [name for name in loaded if name.startswith("prefork_bench")]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_bench_scripts_are_entry_points_over_the_package(script):
    """bench/*.py import prefork_bench as installed (no sys.path edits) and start."""
    path = ROOT / "bench" / script
    assert not re.search(r"sys\.path\.(insert|append)|sys\.path\[", path.read_text())
    done = subprocess.run([sys.executable, str(path), "--help"], cwd=ROOT.parent, capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr


@pytest.mark.parametrize("program", ["tfb", "backends", "reload"])
def test_prefork_bench_runs_the_bench_programs(program):
    """prefork-bench tfb|backends|reload are bench/tfb.py, backends.py, reload.py: the same options."""
    script = subprocess.run([sys.executable, str(ROOT / "bench" / f"{program}.py"), "--help"], cwd=ROOT.parent,
                            capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    done = bench(program, "--help", cwd=ROOT, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage:"), done.stderr
    options = set(re.findall(r"--[a-z][a-z-]+", done.stdout))
    assert "--workers" in options and options == set(re.findall(r"--[a-z][a-z-]+", script.stdout))


TFB_APP_DRIVER = r"""
import asyncio, importlib.util, json, sys
sys.modules["prefork"] = sys.modules["prefork_bench"] = None   # the app must not need them
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
spec.loader.exec_module(app)

async def main():
    inbox, outbox = asyncio.Queue(), asyncio.Queue()
    life = asyncio.ensure_future(app.app({"type": "lifespan"}, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    out = {}
    for target in sys.argv[2:]:
        path, _, query = target.partition("?")
        sent = []
        async def send(message):
            sent.append(message)
        await app.app({"type": "http", "path": path, "query_string": query.encode()}, None, send)
        out[target] = [sent[0]["status"], dict(sent[0]["headers"])[b"content-type"].decode(),
                       sent[1]["body"].decode()]
    await inbox.put({"type": "lifespan.shutdown"})
    await life
    print(json.dumps(out))

asyncio.run(main())
"""


def test_tfb_uvicorn_app_answers_without_prefork(tmp_path):
    """The comparison app of prefork-bench tfb is standalone (uvicorn's venv has no
    prefork): with prefork unimportable, over a database seeded as tfb seeds it, it
    answers every test type as tfb's verification expects."""
    from prefork_bench.tfb import db, uvicorn_app
    db.seed_sqlite(tmp_path / "world.db", "normal")
    (tmp_path / "app.py").write_text(uvicorn_app.UVICORN_APP)
    env = dict(os.environ, TFB_DB_KIND="sqlite", TFB_DB_URL=str(tmp_path / "world.db"))
    env.pop("PYTHONPATH", None)
    paths = ["/plaintext", "/json", "/db", "/queries?queries=3", "/queries?queries=foo", "/updates?queries=2",
             "/fortunes", "/nowhere"]
    done = subprocess.run([sys.executable, "-c", TFB_APP_DRIVER, str(tmp_path / "app.py"), *paths],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["/plaintext"] == [200, "text/plain", "Hello, World!"]
    assert got["/json"][:2] == [200, "application/json"] and json.loads(got["/json"][2]) == {"message": "Hello, World!"}
    assert set(json.loads(got["/db"][2])) == {"id", "randomNumber"}
    assert len(json.loads(got["/queries?queries=3"][2])) == 3 and len(json.loads(got["/queries?queries=foo"][2])) == 1
    updated = json.loads(got["/updates?queries=2"][2])
    assert len({row["id"] for row in updated}) == 2
    status, ctype, page = got["/fortunes"]
    assert (status, ctype) == (200, "text/html; charset=utf-8")
    assert page.count("<tr><td>") == 13 and "Additional fortune added at request time." in page
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert got["/nowhere"][0] == 404
