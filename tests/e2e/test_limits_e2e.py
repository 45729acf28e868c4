"""The limits doctor (``prefork-server --check-limits``) on fake /proc trees.

This file: the tests with server processes, subprocesses and sockets;
tests/unit/test_limits.py has the in-process ones."""

import resource
import subprocess
import sys
from pathlib import Path
from testkit import fake_proc


ROOT = Path(__file__).resolve().parents[2]


def test_command_on_a_fake_tree(tmp_path):
    proc = subprocess.run(["prefork-server", "--check-limits", "--connections", "1000", "--root", fake_proc(tmp_path)],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Limits for 1,000 connections: the server and a load client on this host"
    header = next(line for line in lines if line.startswith("what"))
    assert header.split() == ["what", "have", "need", "status"]
    assert any(line.startswith("system: fs.file-max") and "10,000,000" in line and line.endswith("OK")
               for line in lines)
    assert any(line.startswith("server: fds per worker") and "hard 1,048,576" in line for line in lines)
    assert "To fix:" not in proc.stdout


def test_command_on_this_machine():
    proc = subprocess.run(["prefork-server", "--check-limits", "--connections", "1000"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Limits for 1,000 connections: the server and a load client on this host"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # the child inherits these
    fds = next(line for line in lines if line.startswith("server: fds per worker"))
    if hard != resource.RLIM_INFINITY:
        assert f"hard {hard:,}" in fds
    file_max = int(Path("/proc/sys/fs/file-max").read_text())
    assert any(line.startswith("system: fs.file-max") and f"{file_max:,}" in line for line in lines)
    rows = [line for line in lines if line.split("  ")[0].rstrip() and ":" in line.split("  ")[0]
            and line.rstrip().endswith((" OK", " FIX", " note"))]
    assert len(rows) >= 12
    # the exit status follows the table: 1 exactly when some row says FIX
    assert proc.returncode == (1 if any(line.rstrip().endswith(" FIX") for line in rows) else 0)


def _check(tmp_path, text, hard=4096):
    """``prefork-server -t`` under a hard open-file limit of ``hard``."""
    path = tmp_path / "t.toml"
    path.write_text(text + '\n[[listen]]\naddress = "127.0.0.1:0"\n')
    return subprocess.run([sys.executable, "-m", "prefork.cli", "-t", "-c", str(path)], capture_output=True,
                          text=True, timeout=60, cwd=ROOT,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard)))


def test_check_says_when_the_static_cache_does_not_fit_under_the_hard_limit(tmp_path):
    """-t warns (as nginx does) naming the keys: the worker would run out of
    fds, and shed connections, before it reaches worker_connections."""
    (tmp_path / "www").mkdir()
    warning = "note: server.worker_connections: a worker needs"
    # 4,000 connections + 32 + 1 listener fit under 4,096; with the 1,024-entry file cache they do not
    fits = _check(tmp_path, "[server]\nworker_connections = 4000\n")
    assert fits.returncode == 0 and "note" not in fits.stderr, fits.stderr
    done = _check(tmp_path, f'[server]\nworker_connections = 4000\n[static]\nroot = "{tmp_path}/www"\n')
    assert done.returncode == 0, done.stderr
    assert f"{warning} 5057 open files (worker_connections 4000 + 1024 for static.cache_entries" in done.stderr
    assert "above the hard open-file limit 4096" in done.stderr
    assert "lower server.worker_connections or static.cache_entries" in done.stderr
    fits = _check(tmp_path, f'[server]\nworker_connections = 3000\n[static]\nroot = "{tmp_path}/www"\n')
    assert fits.returncode == 0 and "note" not in fits.stderr, fits.stderr
    # the database: 3 fds (SQLite: the file, -wal, -shm) per pool thread and the reactor's own
    db = f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n'
    assert warning in _check(tmp_path, "[server]\nworker_connections = 4055\nthreads = 4\n" + db).stderr
    assert "note" not in _check(tmp_path, "[server]\nworker_connections = 4055\nthreads = 0\n" + db).stderr
    # threads share one process: all the reactors count
    many = _check(tmp_path, f'[server]\nworkers = 2\nmode = "thread"\nworker_connections = 1600\n'
                            f'[static]\nroot = "{tmp_path}/www"\n')
    assert warning in many.stderr and "2 reactors x (" in many.stderr and "server.workers" in many.stderr


def test_check_notes_a_worker_rlimit_nofile_below_the_need(tmp_path):
    (tmp_path / "www").mkdir()
    done = _check(tmp_path, f'[server]\nworker_connections = 2000\nworker_rlimit_nofile = 2100\n'
                            f'[static]\nroot = "{tmp_path}/www"\n')
    assert done.returncode == 0, done.stderr
    assert "note: server.worker_rlimit_nofile: 2100 is below the 3057 open files a worker needs" in done.stderr


def test_worker_raises_its_soft_limit_for_the_static_cache_too(tmp_path):
    """A worker started under a low soft limit raises it to worker_connections
    + the open-file cache + the reserve, not worker_connections + 32 alone."""
    from conftest import Server, free_port, make_config, wait_until
    (tmp_path / "www").mkdir()
    port = free_port()
    config = make_config({"http": port}, "worker_connections = 1000") + (
        f'\n[static]\nroot = "{tmp_path}/www"\ncache_entries = 500\n')
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the server inherits
    try:
        srv = Server(tmp_path, config, {"http": port}).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        [worker] = srv.wait_workers(1)

        def worker_soft():
            with open(f"/proc/{worker}/limits") as f:
                line = next(line for line in f if line.startswith("Max open files"))
            return int(line.split()[3])

        # 1,000 connections + 500 cached files + 32 + 1 listener
        assert wait_until(lambda: worker_soft() if worker_soft() > 1024 else None, what="the raised limit") == 1533
    finally:
        srv.stop()
