"""The master process: real processes, real signals, real sockets."""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import (ROOT, Client, cmdline, free_port, http_get, listening_on, make_config, pid_alive,
                      wait_until)
from testkit import all_listening_inodes, listening_inodes

GET = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


def test_titles_and_one_socket_per_slot(start_server):
    srv = start_server(server="workers = 3", names=("http",))
    workers = srv.wait_workers(3)
    assert cmdline(srv.pid) == f"prefork-server: master process -c {srv.path}"
    titles = sorted(cmdline(p) for p in workers)
    assert titles == [f"prefork-server: worker process {i}" for i in range(3)]
    master_socks = listening_inodes(srv.pid)
    assert len(master_socks) == 3  # one SO_REUSEPORT socket per slot, owned by the master
    worker_socks = [listening_inodes(p) for p in workers]
    assert all(len(s) == 1 for s in worker_socks)  # each worker polls only its own slot
    assert set().union(*worker_socks) == master_socks
    assert srv.pid_path.read_text().strip() == str(srv.pid)


def test_shared_accept_one_socket_for_all(start_server):
    srv = start_server(server='workers = 2\naccept = "shared"', names=("http",))
    workers = srv.wait_workers(2)
    master_socks = listening_inodes(srv.pid)
    assert len(master_socks) == 1
    assert all(listening_inodes(p) == master_socks for p in workers)
    for _ in range(10):
        assert http_get(srv.port)[0] == 200


def test_thread_mode_one_process_many_reactors(start_server):
    srv = start_server(server='workers = 3\nmode = "thread"', names=("http",))
    [worker] = srv.wait_workers(1)
    wait_until(lambda: len(os.listdir(f"/proc/{worker}/task")) >= 3, what="3 reactor threads")
    assert len(listening_inodes(worker)) == 3  # a reuseport socket per reactor thread
    for _ in range(20):
        assert http_get(srv.port)[0] == 200


def test_thread_mode_status_counts_every_reactor(start_server):
    """Whichever reactor thread answers /status, it reports the whole process."""
    srv = start_server(server='workers = 2\nmode = "thread"', names=("http",))
    srv.wait_workers(1)
    made = 0
    for _ in range(8):
        for _ in range(10):
            assert http_get(srv.port)[0] == 200
        made += 10
        status, _, body = http_get(srv.port, "/status")
        made += 1
        assert status == 200
        accepted = int(body.decode().splitlines()[2].split()[0])
        assert accepted >= made, body.decode()
        # and a line per reactor thread, adding up to the total
        threads = [line for line in body.decode().splitlines() if line.startswith("reactor thread ")]
        assert len(threads) == 2, body.decode()
        assert sum(int(line.split(" accepted ")[1].split()[0]) for line in threads) == accepted


def test_killed_worker_is_replaced_in_its_slot(start_server):
    srv = start_server(server="workers = 2", names=("http",))
    workers = srv.wait_workers(2)
    victim = workers[0]
    victim_slot = cmdline(victim)
    victim_socks = listening_inodes(victim)
    survivor = workers[1]
    keep = Client(srv.connect())  # a connection some worker holds
    keep.send(GET)
    assert keep.response()[0] == 200
    os.kill(victim, signal.SIGKILL)
    new = srv.wait_workers(2, exclude={victim})
    assert survivor in new
    [replacement] = [p for p in new if p != survivor]
    assert cmdline(replacement) == victim_slot
    assert listening_inodes(replacement) == victim_socks  # took over the same slot's socket
    for _ in range(20):
        assert http_get(srv.port)[0] == 200
    assert "was killed by signal 9" in srv.log()


def test_stuck_worker_is_aborted_and_replaced(start_server):
    srv = start_server(server="workers = 1\nworker_timeout = 1", names=("http",))
    [worker] = srv.wait_workers(1)
    os.kill(worker, signal.SIGSTOP)
    try:
        [new] = srv.wait_workers(1, exclude={worker}, timeout=20)
    finally:
        if pid_alive(worker):
            os.kill(worker, signal.SIGKILL)
    assert new != worker
    assert "SIGABRT" in srv.log()
    assert http_get(srv.port)[0] == 200


def test_hup_reload_good_then_bad_config(start_server):
    srv = start_server(server="workers = 2", names=("http",))
    old = srv.wait_workers(2)
    assert http_get(srv.port)[1]["server"] == "prefork"
    text = srv.path.read_text()
    srv.path.write_text(text.replace("[http]\n", '[http]\nserver_header = "reloaded"\n'))
    os.kill(srv.pid, signal.SIGHUP)
    new = srv.wait_workers(2, exclude=set(old))
    assert http_get(srv.port)[1]["server"] == "reloaded"
    assert all(not pid_alive(p) for p in old) or wait_until(lambda: not any(pid_alive(p) for p in old))
    # a bad file: logged, and the running configuration stays
    srv.path.write_text(text.replace("workers = 2", 'workers = "lots"'))
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: "reload failed" in srv.log(), what="the reload failure in the log")
    assert "server.workers" in srv.log()
    assert sorted(srv.workers()) == sorted(new)
    assert http_get(srv.port)[1]["server"] == "reloaded"


def test_reload_keeps_queued_connections(start_server):
    """Connections queued in a slot's accept queue while its worker is being
    replaced are served by the replacement, not reset."""
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    results = []

    def client():
        try:
            results.append(http_get(srv.port)[0])
        except OSError as exc:
            results.append(repr(exc))

    for _ in range(5):
        os.kill(srv.pid, signal.SIGHUP)
        threads = [threading.Thread(target=client) for _ in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert results == [200] * 100


def test_quit_lets_in_flight_request_finish(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    busy = Client(srv.connect())
    busy.send(b"GET /plaintext HTTP/1.1\r\nHost: x\r\n")
    busy.send(b"X-Slow: 1\r\n")
    time.sleep(0.2)  # ordering: the worker has read the partial head before QUIT
    os.kill(srv.pid, signal.SIGQUIT)
    time.sleep(0.2)
    busy.send(b"\r\n")
    status, headers, body = busy.response()
    assert (status, body) == (200, b"Hello, World!")
    assert headers["connection"] == "close"
    assert srv.proc.wait(15) == 0
    assert not srv.pid_path.exists()


def test_ttin_ttou(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    os.kill(srv.pid, signal.SIGTTIN)
    srv.wait_workers(2)
    os.kill(srv.pid, signal.SIGTTIN)
    three = srv.wait_workers(3)
    assert len(listening_inodes(srv.pid)) == 3
    os.kill(srv.pid, signal.SIGTTOU)
    two = srv.wait_workers(2)
    assert set(two) < set(three)
    wait_until(lambda: len(listening_inodes(srv.pid)) == 2, what="the removed slot's socket closed")
    for _ in range(10):
        assert http_get(srv.port)[0] == 200


def test_winch_stops_workers_keeps_master_then_hup_restarts(start_server):
    srv = start_server(server="workers = 2", names=("http",))
    srv.wait_workers(2)
    os.kill(srv.pid, signal.SIGWINCH)
    wait_until(lambda: srv.workers() == [], what="workers gone after WINCH")
    assert srv.proc.poll() is None
    assert len(listening_inodes(srv.pid)) == 2  # the master still owns the sockets
    os.kill(srv.pid, signal.SIGHUP)
    srv.wait_workers(2)
    assert http_get(srv.port)[0] == 200


def test_master_killed_workers_exit(start_server):
    srv = start_server(server="workers = 2", names=("http",))
    workers = srv.wait_workers(2)
    assert listening_on(srv.port)
    sockets = listening_inodes(srv.pid)
    assert len(sockets) == 2  # one SO_REUSEPORT socket per worker slot
    os.kill(srv.pid, signal.SIGKILL)
    srv.proc.wait(5)
    wait_until(lambda: not any(pid_alive(p) for p in workers), timeout=10, what="orphaned workers to exit")
    # nobody holds the server's sockets any more (asked by inode: the port
    # number itself may already be another parallel test's). A worker's main
    # thread shows as a zombie while its pool threads are still exiting, and
    # they share its fds: so wait for the sockets, a little.
    wait_until(lambda: not sockets & all_listening_inodes(), timeout=10,
               what="the server's listening sockets to close")


def test_signal_cli_reload_and_stop(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    [old] = srv.wait_workers(1)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cli = [sys.executable, "-m", "prefork.cli", "-c", str(srv.path), "-s"]
    assert subprocess.run(cli + ["reload"], env=env, timeout=30).returncode == 0
    srv.wait_workers(1, exclude={old})
    assert subprocess.run(cli + ["stop"], env=env, timeout=30).returncode == 0
    assert srv.proc.wait(15) == 0


def test_usr1_reopens_logs(start_server, tmp_path):
    access = tmp_path / "access.log"
    srv = start_server(server="workers = 1", names=("http",),
                       extra=f'\n[log]\nerror_log = "{tmp_path / "error.log"}"\naccess_log = "{access}"\n')
    srv.wait_workers(1)
    assert http_get(srv.port, "/json")[0] == 200
    wait_until(lambda: access.exists() and b"GET /json" in access.read_bytes(), what="access log line")
    assert b'"GET /json HTTP/1.1" 200 27' in access.read_bytes()
    rotated = tmp_path / "access.log.1"
    os.rename(access, rotated)
    os.rename(srv.log_path, tmp_path / "error.log.1")
    os.kill(srv.pid, signal.SIGUSR1)
    wait_until(lambda: access.exists() and srv.log_path.exists(), what="reopened log files")
    assert http_get(srv.port, "/plaintext")[0] == 200
    wait_until(lambda: b"GET /plaintext" in access.read_bytes(), what="line in the new access log")
    assert b"GET /plaintext" not in rotated.read_bytes()


def test_usr2_upgrade_then_quit_old_master_no_refused_connection(start_server):
    srv = start_server(server="workers = 2", names=("http",))
    old_workers = srv.wait_workers(2)
    stop = threading.Event()
    failures = []
    count = [0]

    def hammer():
        while not stop.is_set():
            try:
                status = http_get(srv.port)[0]
                if status != 200:
                    failures.append(status)
                count[0] += 1
            except OSError as exc:
                failures.append(repr(exc))

    t = threading.Thread(target=hammer)
    t.start()
    try:
        os.kill(srv.pid, signal.SIGUSR2)
        oldbin = srv.pid_path.with_name(srv.pid_path.name + ".oldbin")
        wait_until(lambda: oldbin.exists() and srv.pid_path.exists(), what="pid and .oldbin files")
        new_master = int(srv.pid_path.read_text())
        assert new_master != srv.pid
        assert int(oldbin.read_text()) == srv.pid
        wait_until(lambda: len([p for p in _children_of(new_master) if "worker process" in cmdline(p)]) == 2,
                   what="the new master's workers")
        os.kill(srv.pid, signal.SIGQUIT)
        assert srv.proc.wait(15) == 0
        wait_until(lambda: not any(pid_alive(p) for p in old_workers), what="old workers gone")
        before = count[0]
        wait_until(lambda: count[0] > before + 20, what="requests served by the new master alone")
    finally:
        stop.set()
        t.join(10)
    try:
        assert failures == []
        assert count[0] > 20
        assert http_get(srv.port)[0] == 200
        assert not oldbin.exists()
    finally:
        new_workers = _children_of(new_master)
        os.kill(new_master, signal.SIGTERM)
        wait_until(lambda: not pid_alive(new_master), what="new master exit")
        for p in new_workers:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)


def _children_of(pid):
    from conftest import children
    return children(pid)


def test_notify_protocol_messages_in_order(start_server, tmp_path):
    addr = str(tmp_path / "notify.sock")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(addr)
    sd.settimeout(15)
    env = dict(os.environ, NOTIFY_SOCKET=addr, WATCHDOG_USEC="400000")
    srv = start_server(server="workers = 2", names=("http",), env=env)

    def next_msg():
        return sd.recv(4096).decode()

    def until(prefix):
        while True:
            msg = next_msg()
            if msg.startswith(prefix):
                return msg

    ready = until("READY=1")
    assert "STATUS=2 workers" in ready
    assert until("WATCHDOG=1") == "WATCHDOG=1"
    os.kill(srv.pid, signal.SIGHUP)
    reloading = until("RELOADING=1")
    assert "MONOTONIC_USEC=" in reloading
    usec = int(reloading.split("MONOTONIC_USEC=")[1].split()[0])
    assert abs(usec / 1e6 - time.monotonic()) < 30
    assert until("READY=1").startswith("READY=1")
    os.kill(srv.pid, signal.SIGQUIT)
    assert until("STOPPING=1") == "STOPPING=1"
    assert srv.proc.wait(15) == 0
    sd.close()


def test_socket_activation_by_name(tmp_path):
    """A listening socket passed as fd 3 with LISTEN_FDS/LISTEN_FDNAMES is
    used for the [[listen]] with that name instead of binding a new one."""
    port = free_port()
    inherited = socket.socket()
    inherited.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    inherited.bind(("127.0.0.1", port))
    inherited.listen(128)
    path = tmp_path / "s.toml"
    other = free_port()
    path.write_text(make_config({"web": other}, server="workers = 2") +
                    f'\n[log]\nerror_log = "{tmp_path / "e.log"}"\n')
    # the [[listen]] says another port: the name must win
    launcher = (
        "import os, sys\n"
        f"os.dup2({inherited.fileno()}, 3)\n"
        "os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS='1', LISTEN_FDNAMES='web')\n"
        f"os.execv(sys.executable, [sys.executable, '-m', 'prefork.cli', '-c', {str(path)!r}])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", launcher], pass_fds=[inherited.fileno()], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    inherited.close()
    try:
        wait_until(lambda: len([p for p in _children_of(proc.pid) if "worker" in cmdline(p)]) == 2,
                   what="workers")
        for _ in range(10):
            assert http_get(port)[0] == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", other), timeout=2)
        assert "socket activation" in (tmp_path / "e.log").read_text()
    finally:
        workers = _children_of(proc.pid)
        proc.terminate()
        proc.wait(15)
        for p in workers:
            if pid_alive(p):
                os.kill(p, signal.SIGKILL)


def test_crash_loop_backoff(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    killed = set()
    for _ in range(4):
        [w] = srv.wait_workers(1, exclude=killed)
        killed.add(w)
        os.kill(w, signal.SIGKILL)
    start = time.monotonic()
    srv.wait_workers(1, exclude=killed)
    # 4 quick deaths in a row: the 4th respawn waits ~0.8 s (back-off), not instantly
    assert time.monotonic() - start > 0.3
    assert http_get(srv.port)[0] == 200


def test_worker_rlimit_nofile_above_hard_is_a_config_error(tmp_path):
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard limit here")
    path = tmp_path / "s.toml"
    path.write_text(make_config({"http": free_port()}, server=f"worker_rlimit_nofile = {hard + 1}"))
    res = subprocess.run([sys.executable, "-m", "prefork.cli", "-t", "-c", str(path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=30)
    assert res.returncode == 1
    assert "server.worker_rlimit_nofile" in res.stderr and "hard" in res.stderr


def test_worker_boot_failure_stops_master_instead_of_looping(start_server, tmp_path):
    ports = {"http": free_port()}
    path = tmp_path / "boot.toml"
    log = tmp_path / "boot.log"
    path.write_text(make_config(ports, server="workers = 2") +
                    f'\n[log]\nerror_log = "{log}"\naccess_log = "{tmp_path}/missing-dir/access.log"\n')
    res = subprocess.run([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=60)
    assert res.returncode == 3
    text = log.read_text()
    assert "could not start" in text and "missing-dir/access.log" in text
    assert text.count("started worker process") <= 4  # stopped, not crash-looping


def test_reload_whose_workers_cannot_boot_keeps_old_generation(start_server, tmp_path):
    srv = start_server(server="workers = 2", names=("http",))
    old = srv.wait_workers(2)
    text = srv.path.read_text()
    srv.path.write_text(text.replace("[log]\n", f'[log]\naccess_log = "{tmp_path}/missing-dir/a.log"\n'))
    os.kill(srv.pid, signal.SIGHUP)
    wait_until(lambda: "keeping the previous configuration" in srv.log(), what="reload rollback in the log")
    assert srv.proc.poll() is None
    wait_until(lambda: sorted(srv.workers()) == sorted(old), what="only the old workers left")
    assert http_get(srv.port)[0] == 200


def test_usr2_rollback_with_winch_and_hup(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    [old_worker] = srv.wait_workers(1)
    os.kill(srv.pid, signal.SIGUSR2)
    oldbin = srv.pid_path.with_name(srv.pid_path.name + ".oldbin")
    wait_until(lambda: oldbin.exists() and srv.pid_path.exists(), what="pid and .oldbin files")
    new_master = int(srv.pid_path.read_text())
    try:
        wait_until(lambda: [p for p in _children_of(new_master) if "worker process" in cmdline(p)],
                   what="the new master's worker")
        os.kill(srv.pid, signal.SIGWINCH)  # old master: stop its workers, keep listening sockets
        wait_until(lambda: not pid_alive(old_worker), what="old worker gone after WINCH")
        assert http_get(srv.port)[0] == 200  # the new generation serves alone
        os.kill(srv.pid, signal.SIGHUP)  # roll back: the old master starts workers again
        srv.wait_workers(1, exclude={old_worker})
        os.kill(new_master, signal.SIGQUIT)
        wait_until(lambda: not pid_alive(new_master), what="new master gone")
        wait_until(lambda: srv.pid_path.exists() and int(srv.pid_path.read_text()) == srv.pid,
                   what="the pid file back to the old master")
        assert not oldbin.exists()
        assert http_get(srv.port)[0] == 200
    finally:
        if pid_alive(new_master):
            for p in _children_of(new_master):
                os.kill(p, signal.SIGKILL)
            os.kill(new_master, signal.SIGKILL)


def signals_caught(pid: int) -> int:
    """The mask of signals ``pid`` has handlers for (SigCgt in /proc/PID/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return int(line.split()[1], 16)
    return 0


def test_term_during_startup_is_a_clean_stop(tmp_path):
    """The master catches its signals before it does anything slow or binds a
    socket: a TERM that comes while it is still starting (here: waiting for a
    database lock) is handled once the loop runs -- exit 0, nothing left."""
    import sqlite3

    db = tmp_path / "world.db"
    blocker = sqlite3.connect(str(db), isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the master's setup waits for this lock
    port = free_port()
    path = tmp_path / "s.toml"
    path.write_text(make_config({"http": port}) + f'\n[database]\nurl = "sqlite:///{db}"\ntimeout = 20\n')
    proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        term = 1 << (signal.SIGTERM - 1)
        wait_until(lambda: proc.poll() is None and signals_caught(proc.pid) & term, timeout=15,
                   what="the master to catch TERM")
        assert not listening_on(port)  # still starting: nothing bound yet
        proc.send_signal(signal.SIGTERM)
        blocker.execute("COMMIT")       # let the start-up go on
        blocker.close()
        assert proc.wait(20) == 0, proc.stderr.read().decode()
        assert not listening_on(port)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


# --- lifecycle: a second server, failed forks, crashes after ready, stale ready messages ----------------

HELPERS = ROOT / "tests" / "e2e" / "lifecycle_helpers.py"


@pytest.fixture
def forkfail_server(tmp_path):
    """Start a server whose master's fork() fails while ``tmp_path/forkfail`` exists
    (see tests/e2e/lifecycle_helpers.py): returns (server, flag path)."""
    from conftest import Server, children, wait_for_port

    servers = []
    flag = tmp_path / "forkfail"

    def start(server: str = "workers = 2", env: dict | None = None, http: str = ""):
        port = free_port()
        srv = Server(tmp_path, make_config({"http": port}, server, http), {"http": port})
        env = dict(os.environ if env is None else env, FORK_FAIL_FILE=str(flag), PYTHONPATH=str(ROOT))
        srv.proc = subprocess.Popen([sys.executable, str(HELPERS), "-c", str(srv.path)], cwd=ROOT, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        servers.append(srv)
        wait_for_port(port, srv.proc)
        return srv

    yield start, flag
    for srv in servers:
        workers = children(srv.pid) if srv.proc.poll() is None else []
        srv.stop()
        for pid in workers:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)


def signals_blocked(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigBlk:"):
                return int(line.split()[1], 16)
    return 0


def listener_fds_cloexec(pid: int) -> list[bool]:
    """For each TCP listening socket among ``pid``'s fds: is it close-on-exec?"""
    listening = all_listening_inodes()
    out = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if not (target.startswith("socket:[") and int(target[8:-1]) in listening):
                continue
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(next(line for line in f if line.startswith("flags:")).split()[1], 8)
        except OSError:
            continue
        out.append(bool(flags & 0o2000000))  # O_CLOEXEC
    return out


@pytest.mark.parametrize("backend", ["epoll"])  # the master's start-up: one backend is enough
def test_second_server_with_the_same_pidfile_is_refused(start_server):
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    second = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(srv.path)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert second.wait(15) == 1
        err = second.stderr.read()
        assert str(srv.pid_path) in err and str(srv.pid) in err, err
    finally:
        if second.poll() is None:
            for p in _children_of(second.pid):
                os.kill(p, signal.SIGKILL)
            second.kill()
            second.wait()
        second.stderr.close()
    assert srv.pid_path.read_text().strip() == str(srv.pid)  # still the first master's
    assert srv.proc.poll() is None and http_get(srv.port)[0] == 200
    # a stale file whose pid now belongs to an unrelated live process (this test) is no obstacle
    assert srv.stop() == 0
    srv.pid_path.write_text(f"{os.getpid()}\n")
    srv.start()
    wait_until(lambda: srv.pid_path.read_text().strip() == str(srv.pid), what="the new master's pid file")
    srv.wait_workers(1)


@pytest.mark.parametrize("backend", ["epoll"])  # the master's start-up: one backend is enough
def test_second_server_on_a_listening_address_is_refused(start_server, tmp_path):
    """Another config (its own pid file) on an address a running server
    listens on: SO_REUSEPORT would let both listen; the second must refuse."""
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    other = tmp_path / "other"
    other.mkdir()
    path = other / "s.toml"
    path.write_text(make_config({"http": srv.port}).replace("[server]\n", f'[server]\npid_file = "{other}/p.pid"\n')
                    + f'\n[log]\nerror_log = "{other}/e.log"\n')
    second = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert second.wait(15) == 1
        err = second.stderr.read()
        assert f"127.0.0.1:{srv.port}" in err and "already" in err, err
    finally:
        if second.poll() is None:
            for p in _children_of(second.pid):
                os.kill(p, signal.SIGKILL)
            second.kill()
            second.wait()
        second.stderr.close()
    assert not (other / "p.pid").exists()
    assert srv.proc.poll() is None and http_get(srv.port)[0] == 200


def test_second_server_on_a_listening_unix_socket_is_refused(tmp_path):
    """A live server's unix socket is not unlinked and taken over (a stale
    file nobody listens on still is)."""
    path = tmp_path / "s.toml"
    sock_path = tmp_path / "live.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(sock_path))
    live.listen(8)
    path.write_text(f'[server]\nworkers = 1\n\n[[listen]]\naddress = "unix:{sock_path}"\n\n'
                    f'[log]\nerror_log = "{tmp_path}/e.log"\n')
    proc = subprocess.Popen([sys.executable, "-m", "prefork.cli", "-c", str(path)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.wait(15) == 1
        err = proc.stderr.read()
        assert f"unix:{sock_path}" in err and "already" in err, err
        # still the test's socket at that path
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
            c.connect(str(sock_path))
            conn, _ = live.accept()
            conn.close()
    finally:
        if proc.poll() is None:
            for p in _children_of(proc.pid):
                os.kill(p, signal.SIGKILL)
            proc.kill()
            proc.wait()
        proc.stderr.close()
        live.close()


def test_usr2_with_failed_fork_restores_signals_sockets_and_pidfile(forkfail_server):
    start, flag = forkfail_server
    srv = start()
    old = srv.wait_workers(2)
    flag.write_text("0")
    os.kill(srv.pid, signal.SIGUSR2)
    wait_until(lambda: "fork refused by the test" in srv.log(), what="the failed fork in the log")
    flag.unlink()
    oldbin = srv.pid_path.with_name(srv.pid_path.name + ".oldbin")
    assert srv.pid_path.read_text().strip() == str(srv.pid) and not oldbin.exists()
    managed = 0
    for sig in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR2, signal.SIGCHLD):
        managed |= 1 << (sig - 1)
    assert signals_blocked(srv.pid) & managed == 0
    cloexec = listener_fds_cloexec(srv.pid)
    assert cloexec and all(cloexec)
    os.kill(srv.pid, signal.SIGHUP)  # and the master still handles its signals
    srv.wait_workers(2, exclude=set(old))
    assert http_get(srv.port)[0] == 200
    assert srv.stop() == 0


@pytest.mark.parametrize("backend", ["epoll"])  # the master alone: one backend is enough
def test_usr2_without_pidfile_leaves_listeners_close_on_exec(start_server):
    """USR2 gives up when the pid file cannot be renamed (here: it is gone);
    the listeners must not stay inheritable by whatever the master runs next."""
    srv = start_server(server="workers = 1", names=("http",))
    srv.wait_workers(1)
    srv.pid_path.unlink()
    os.kill(srv.pid, signal.SIGUSR2)
    wait_until(lambda: "cannot rename the pid file" in srv.log(), what="the USR2 failure in the log")
    cloexec = listener_fds_cloexec(srv.pid)
    assert cloexec and all(cloexec)
    assert srv.proc.poll() is None and http_get(srv.port)[0] == 200


def test_reload_with_failed_fork_rolls_back_and_tells_systemd(forkfail_server, tmp_path):
    addr = str(tmp_path / "notify.sock")
    sd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sd.bind(addr)
    sd.settimeout(15)

    def until(prefix):
        while True:
            msg = sd.recv(4096).decode()
            if msg.startswith(prefix):
                return msg

    start, flag = forkfail_server
    srv = start(env=dict(os.environ, NOTIFY_SOCKET=addr))
    try:
        until("READY=1")
        [w0, w1] = srv.wait_workers(2)
        text = srv.path.read_text()
        srv.path.write_text(text.replace("[http]\n", '[http]\nserver_header = "reloaded"\n'))
        flag.write_text("0")
        os.kill(srv.pid, signal.SIGHUP)
        until("RELOADING=1")
        assert "reload failed" in until("READY=1")
        flag.unlink()
        assert sorted(srv.workers()) == [w0, w1]
        # the master is back on the old configuration: a respawned worker serves it
        os.kill(w0, signal.SIGKILL)
        srv.wait_workers(2, exclude={w0})
        for _ in range(6):
            assert http_get(srv.port)[1]["server"] == "prefork"
        # and a later reload works
        os.kill(srv.pid, signal.SIGHUP)
        until("RELOADING=1")
        until("READY=1")  # (an old worker may still answer a connection it had accepted)
        wait_until(lambda: http_get(srv.port)[1]["server"] == "reloaded", what="the new configuration served")
    finally:
        sd.close()


def test_worker_of_a_rolled_back_reload_retires_no_current_worker(forkfail_server):
    """Reload: slot 0's new worker forks, slot 1's fork fails, the reload is
    rolled back. The new slot-0 worker still reports ready (it blocks signals
    until its loop runs) before it stops; that stale ready must not retire
    the current worker of slot 0."""
    start, flag = forkfail_server
    srv = start()
    old = srv.wait_workers(2)
    flag.write_text("1")
    os.kill(srv.pid, signal.SIGHUP)
    line = wait_until(lambda: [x for x in srv.log().splitlines() if "generation 2)" in x], what="the new worker")[0]
    failed = int(line.split("started worker process ")[1].split()[0])
    wait_until(lambda: f"worker process {failed} (slot 0)" in srv.log() and not pid_alive(failed),
               what="the rolled-back worker gone")
    flag.unlink()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # a window for a stale ready to act (it must not)
        assert all(pid_alive(p) for p in old), srv.log()
        time.sleep(0.05)
    assert sorted(srv.workers()) == sorted(old)
    assert http_get(srv.port)[0] == 200


def test_stale_ready_is_not_matched_to_a_reused_record(tmp_path):
    """A worker says ready and dies; its scoreboard record goes to a new
    worker before the master reads the pipe: that ready is not the new one's."""
    from prefork.config import load
    from prefork.master import Master, WorkerProc
    from prefork.worker import Supervisor

    path = tmp_path / "s.toml"
    path.write_text(make_config({"http": free_port()}))
    master = Master(load(str(path)), [])
    try:
        record = master.scoreboard.allocate()
        Supervisor(master.scoreboard, record, master.ready_w, master.pid).ready()  # pid: this process
        new = WorkerProc(os.getpid() + 1_000_000, 0, master.generation, record, set())  # not this pid
        master.workers[new.pid] = new
        master.on_ready_pipe()
        assert not new.ready
        mine = WorkerProc(os.getpid(), 0, master.generation, master.scoreboard.allocate(), set())
        master.workers[mine.pid] = mine
        Supervisor(master.scoreboard, mine.record, master.ready_w, master.pid).ready()
        master.on_ready_pipe()
        assert mine.ready
    finally:
        master.reactor.close()
        master.notifier.close()
        os.close(master.ready_r)
        os.close(master.ready_w)


CRASH_ROUTES = """
[[route]]
path = "/plaintext"
handler = "plaintext"

[[route]]
path = "/slow"
handler = "examples.hello:slow"
blocking = true

[[route]]
path = "/crash"
handler = "tests.e2e.lifecycle_helpers:crash"
"""


def test_worker_crash_after_ready_is_respawned_not_a_boot_failure(start_server):
    """An exception that escapes a serving worker's loop (here a handler's
    KeyboardInterrupt, run from the loop when the pool answers the request
    before it) is a crash: the worker is replaced, the server goes on."""
    srv = start_server(server="workers = 2", names=("http",), extra=CRASH_ROUTES)
    old = srv.wait_workers(2)
    with srv.connect() as s:
        c = Client(s)
        c.send(b"GET /slow?s=0.05 HTTP/1.1\r\nHost: x\r\n\r\nGET /crash HTTP/1.1\r\nHost: x\r\n\r\n")
        assert c.closed()  # the worker died with the connection (its answer to /slow was not sent yet)
    wait_until(lambda: "lifecycle_helpers.crash" in srv.log() or len(set(srv.workers()) & set(old)) < 2,
               what="a worker to crash")
    srv.wait_workers(2, exclude=set(old) - set(srv.workers()))
    assert srv.proc.poll() is None, srv.log()
    for _ in range(6):
        assert http_get(srv.port)[0] == 200
    assert "could not start" not in srv.log()
