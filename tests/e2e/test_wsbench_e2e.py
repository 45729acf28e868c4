"""prefork-bench websocket at a small scale: the real client processes
against a real prefork server (and, in the comparison, uvicorn and the
websockets server on the bench's broadcast app). Pure parts:
tests/unit/test_wsbench.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import ROOT, Server, free_port, make_config


def bench(*argv: str, cwd, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prefork_bench", "websocket", "--no-pin", *argv], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")))


FIELDS = ("connect_rate", "fanout_p50_s", "fanout_max_s", "delivered_per_s", "delivered", "expected", "lost",
          "duplicates", "errors", "server_cpu_idle", "server_cpu_publish", "server_cpu_us_per_delivery",
          "server_bytes_per_connection", "server_rss_peak", "per_message", "samples")


def test_prefork_broadcast_reaches_every_subscriber_once(tmp_path):
    out = tmp_path / "ws.json"
    done = bench("--clients", "200", "--processes", "2", "--messages", "3", "--every", "0.3", "--idle", "0.5",
                 "--publish", "post", "--json", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(out.read_text())
    assert data["settings"]["clients"] == 200 and data["settings"]["publish"] == "post"
    (r,) = data["results"]
    assert all(key in r for key in FIELDS), sorted(set(FIELDS) - set(r))
    assert r["server"] == "prefork" and r["client_processes"] == 2 and r["source_addresses"] >= 2
    assert r["established"] == 200 and r["failed"] == 0 and r["dropped"] == 0 and r["errors"] == {}
    assert r["expected"] == r["delivered"] == 600 and r["lost"] == 0 and r["duplicates"] == 0 and r["extra"] == 0
    assert [m["received"] for m in r["per_message"]] == [200, 200, 200]
    assert all(0 < m["fanout_s"] < 5 for m in r["per_message"])
    assert r["server_processes"] == 2 and r["server_rss_peak"] > 0
    assert "delivered / expected" in done.stdout and "600 / 600" in done.stdout
    assert (tmp_path / "ws.png").stat().st_size > 10_000


def test_the_comparison_servers_run_the_same_broadcast(tmp_path):
    out = tmp_path / "cmp.json"
    done = bench("--servers", "prefork,uvicorn,websockets", "--clients", "100", "--messages", "2", "--every", "0.2",
                 "--idle", "0.3", "--json", str(out), cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())["results"]
    assert [r["server"] for r in results] == ["prefork", "uvicorn", "websockets"]
    for r in results:
        assert r["delivered"] == r["expected"] == 200 and r["lost"] == 0 and r["errors"] == {}, r["server"]
    assert "uvicorn: no: a publish reaches the subscribers of the worker that got it" in done.stdout


def test_a_server_already_running_as_the_target(tmp_path):
    """--target: no server started; CPU and memory from the server's pid file."""
    port = free_port()
    routes = ('\n[[route]]\npath = "/ws/"\nhandler = "pubsub"\n'
              '[[route]]\npath = "/publish/"\nhandler = "publish"\n')
    srv = Server(tmp_path, make_config({"http": port}, server="workers = 2") + routes, {"http": port}).start()
    try:
        srv.wait_workers(2)
        out = tmp_path / "t.json"
        done = bench("--target", f"127.0.0.1:{port}", "--pid-file", str(srv.pid_path), "--clients", "100",
                     "--messages", "2", "--every", "0.2", "--idle", "0.3", "--json", str(out), cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        (r,) = json.loads(out.read_text())["results"]
        assert r["server"] == "target" and r["delivered"] == r["expected"] == 200 and r["lost"] == 0
        assert r["server_processes"] == 3 and r["server_cpu_publish"] is not None
        assert r["workers"] == 2  # the running server's, not the --workers default
        assert srv.proc.poll() is None   # the bench leaves a server it did not start running
    finally:
        srv.stop()
    assert "--target: a loopback" in bench("--target", "10.0.0.1:80", cwd=tmp_path).stderr
