"""The limits doctor (``prefork-server --check-limits``) on fake /proc trees.

This file: the in-process tests; tests/e2e/test_limits_e2e.py has those with
server processes, subprocesses and sockets."""

import os
from pathlib import Path

import pytest

from prefork.cli import main
from prefork.config import ServerConfig
from prefork.limits import FIX, NOTE, OK, UNKNOWN, check, read_system, render
from testkit import fake_proc


GiB = 1 << 30


def limits_line(soft, hard):
    return f"Max open files            {soft:<20} {hard:<20} files     \n"


def write_config(tmp_path, **server) -> str:
    path = tmp_path / "c.toml"
    lines = [f"{key} = {value!r}".replace("'", '"') for key, value in server.items()]
    path.write_text("[server]\n" + "\n".join(lines) + '\n\n[[listen]]\naddress = "127.0.0.1:0"\n')
    return str(path)


def row(report, what):
    [found] = [r for r in report.rows if r.what.startswith(what)]
    return found


def statuses(report):
    return {r.what: r.status for r in report.rows}


SERVER = ServerConfig(workers=4, worker_connections=50000)


def test_generous_machine_is_ok(tmp_path, capsys):
    root = fake_proc(tmp_path)
    report = check(SERVER, 200_000, root=root)
    assert report.ok
    assert FIX not in statuses(report).values()
    assert row(report, "server: workers").need.startswith("4 ")
    assert row(report, "system: fs.file-max").status == OK
    config = write_config(tmp_path, workers=4, worker_connections=50000)
    assert main(["--check-limits", "-c", config, "--connections", "200000", "--root", root]) == 0
    out = capsys.readouterr().out
    assert "Limits for 200,000 connections" in out
    assert "To fix:" not in out
    assert "ok: the target can be met" in out


def test_reads_the_files(tmp_path):
    system = read_system(fake_proc(tmp_path), page_size=4096)
    assert (system.soft_nofile, system.hard_nofile) == (1024, 1048576)
    assert system.file_nr == 1000
    assert system.port_range == (1024, 65535)
    assert system.conntrack_loaded and system.conntrack_max == 4_000_000
    assert system.tcp_mem == (1000000, 2000000, 3000000)
    assert system.mem_total == 64 * GiB and system.mem_available == 60 * GiB


def test_low_file_max_is_fixed_with_the_exact_sysctl(tmp_path, capsys):
    root = fake_proc(tmp_path, file_max="100000\n")
    report = check(SERVER, 200_000, root=root)
    assert not report.ok
    assert row(report, "system: fs.file-max").status == FIX
    need = 441_100  # (2 × 200,000 + 1,000 open) + 10%
    assert f"sysctl -w fs.file-max={need}" in report.fixes
    assert main(["--check-limits", "--connections", "200000", "--root", root]) == 1
    out = capsys.readouterr().out
    assert f"  sysctl -w fs.file-max={need}\n" in out
    assert "not ok" in out


def test_file_max_just_enough_is_ok(tmp_path):
    # 2 × 100,000 + 1,000 open, + 10% = 221,100
    enough = check(SERVER, 100_000, root=fake_proc(tmp_path, file_max="221100\n"))
    assert row(enough, "system: fs.file-max").status == OK
    report = check(SERVER, 100_000, root=fake_proc(tmp_path, file_max="221099\n"))
    assert row(report, "system: fs.file-max").status == FIX
    assert "sysctl -w fs.file-max=221100" in report.fixes


def test_narrow_port_range_needs_more_source_addresses(tmp_path):
    wide = check(SERVER, 100_000, root=fake_proc(tmp_path))
    assert row(wide, "client: source addresses").need.startswith("2 ")  # 64,512 ports each
    assert not any("ip_local_port_range" in f for f in wide.fixes)
    narrow = check(SERVER, 100_000, root=fake_proc(tmp_path, ip_local_port_range="40000 40999\n"))
    source = row(narrow, "client: source addresses")
    assert source.have.startswith("1,000 ports")
    assert source.need.startswith("100 ")
    assert source.status == NOTE and narrow.ok  # 127.0.0.0/8 has plenty: not a FIX
    assert any(f.startswith('sysctl -w net.ipv4.ip_local_port_range="1024 65535"') for f in narrow.fixes)


def test_conntrack_absent_is_a_note(tmp_path):
    report = check(SERVER, 5_000_000, root=fake_proc(tmp_path, drop=["nf_conntrack_max"]))
    conntrack = row(report, "system: nf_conntrack_max")
    assert (conntrack.have, conntrack.need, conntrack.status) == ("not loaded", "no limit", NOTE)
    assert not any("nf_conntrack" in f for f in report.fixes)


def test_conntrack_low_is_fixed(tmp_path):
    report = check(SERVER, 200_000, root=fake_proc(tmp_path, nf_conntrack_max="65536\n"))
    assert row(report, "system: nf_conntrack_max").status == FIX
    assert "sysctl -w net.netfilter.nf_conntrack_max=200000" in report.fixes
    assert not report.ok


def test_missing_files_are_unknown(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    report = check(SERVER, 1000, root=str(empty))
    assert row(report, "server: fds per worker").have == UNKNOWN
    assert row(report, "system: fs.file-max").have == UNKNOWN
    assert row(report, "system: fs.nr_open").have == UNKNOWN
    assert row(report, "system: somaxconn").have == UNKNOWN
    assert row(report, "system: nf_conntrack_max").have == "not loaded"
    assert row(report, "memory: tcp_mem").have == UNKNOWN
    assert FIX not in statuses(report).values() and report.ok
    assert UNKNOWN in render(report)


def test_garbage_and_unreadable_files_are_unknown(tmp_path):
    root = fake_proc(tmp_path, file_max="lots\n", limits="nothing here\n", meminfo="MemTotal: ? kB\n",
                     tcp_mem="1 2\n")
    (Path(root) / "proc/sys/net/netfilter/nf_conntrack_max").unlink()
    (Path(root) / "proc/sys/net/netfilter/nf_conntrack_max").mkdir()  # exists, but reading it fails
    system = read_system(root)
    assert system.file_max is None and system.hard_nofile is None and system.mem_total is None
    assert system.tcp_mem is None
    assert system.conntrack_loaded and system.conntrack_max is None
    report = check(SERVER, 1000, root=root)
    assert row(report, "system: nf_conntrack_max").have == UNKNOWN
    assert row(report, "memory: total").status == NOTE


def test_workers_needed_from_the_hard_limit(tmp_path):
    root = fake_proc(tmp_path, limits=limits_line(20000, 20000))
    # worker_connections above what one process may hold: the hard limit decides
    big = check(ServerConfig(workers=2, worker_connections=100_000), 1_000_000, root=root)
    assert row(big, "server: connections per worker").have == "19,968"
    assert row(big, "server: workers").need.startswith("51 ")
    assert row(big, "server: workers").status == FIX
    assert row(big, "server: fds per worker").status == FIX      # 100,032 > 20,000
    assert "ulimit -n 100032   # as root, in the shell that starts the server" in big.fixes
    assert any(f.startswith("LimitNOFILE=100032") for f in big.fixes)
    assert any("cannot be raised without root" in f for f in big.fixes)
    assert any("workers = 51, worker_connections = 19968" in f for f in big.fixes)
    assert row(big, "client: processes").need == "51"                # 1,000,000 / 19,936
    # worker_connections below it: worker_connections decides
    small = check(ServerConfig(workers=2, worker_connections=10_000), 1_000_000, root=root)
    assert row(small, "server: workers").need.startswith("100 ")
    assert row(small, "server: fds per worker").status == OK
    assert not any(f.startswith("ulimit") for f in small.fixes)
    assert any("workers = 100" in f for f in small.fixes)
    # enough workers configured: OK
    enough = check(ServerConfig(workers=100, worker_connections=10_000), 1_000_000, root=root)
    assert row(enough, "server: workers").status == OK


def test_nr_open_below_the_wanted_hard_limit(tmp_path):
    report = check(ServerConfig(worker_connections=2_000_000), 1000, root=fake_proc(tmp_path))
    assert row(report, "system: fs.nr_open").status == FIX
    assert "sysctl -w fs.nr_open=2000032" in report.fixes


def test_short_backlogs_are_notes_not_fixes(tmp_path):
    report = check(SERVER, 1000, root=fake_proc(tmp_path, somaxconn="128\n", tcp_max_syn_backlog="512\n"))
    assert row(report, "system: somaxconn").status == NOTE
    assert row(report, "system: tcp_max_syn_backlog").status == NOTE
    assert "sysctl -w net.core.somaxconn=4096" in report.fixes
    assert "sysctl -w net.ipv4.tcp_max_syn_backlog=4096" in report.fixes
    assert report.ok


def test_memory_estimate(tmp_path):
    # 8 GiB, 1 GiB in use; 1,000,000 connections need about 7 GiB of kernel memory alone
    meminfo = f"MemTotal: {8 * 1024 * 1024} kB\nMemAvailable: {7 * 1024 * 1024} kB\n"
    report = check(ServerConfig(workers=50, worker_connections=20_000), 1_000_000,
                   root=fake_proc(tmp_path, meminfo=meminfo))
    assert row(report, "memory: kernel sockets").need.startswith("7.1 GiB")
    assert row(report, "memory: total").status == FIX
    assert not report.ok
    # tcp_mem is shown in bytes (pages × 4096)
    assert row(report, "memory: tcp_mem").have == "pressure 7.6 GiB, high 11.4 GiB"
    plenty = check(ServerConfig(workers=50, worker_connections=20_000), 1_000_000, root=fake_proc(tmp_path))
    assert row(plenty, "memory: total").status == OK


def test_default_target_is_workers_times_worker_connections(tmp_path, capsys):
    root = fake_proc(tmp_path)
    assert check(ServerConfig(workers=3, worker_connections=500), root=root).connections == 1500
    config = write_config(tmp_path, workers="auto", worker_connections=700)
    assert main(["--check-limits", "-c", config, "--root", root]) == 0
    assert f"Limits for {(os.cpu_count() or 1) * 700:,} connections" in capsys.readouterr().out
    # without -c: the built-in defaults (1 worker × 10,000)
    assert main(["--check-limits", "--root", root]) == 0
    assert "Limits for 10,000 connections" in capsys.readouterr().out


def test_bad_config_exits_1(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[server]\nworkers = "many"\n')
    assert main(["--check-limits", "-c", str(config), "--root", fake_proc(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "server.workers: expected an integer >= 1" in captured.err
    assert captured.out == ""


@pytest.mark.parametrize("argv", [["--connections", "0"], ["--connections", "x"], ["--connections", "5"]])
def test_connections_must_be_a_positive_int_with_check_limits(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "--connections" in capsys.readouterr().err


def test_worker_connections_above_the_hard_limit_with_a_small_target(tmp_path):
    root = fake_proc(tmp_path, limits=limits_line(20000, 20000))
    report = check(ServerConfig(workers=1, worker_connections=50_000), 1000, root=root)
    assert row(report, "server: fds per worker").status == FIX    # a worker would shed accepts at 20,000
    assert row(report, "server: workers").status == OK
    assert "ulimit -n 50032   # as root, in the shell that starts the server" in report.fixes
    assert "or, without root, fit worker_connections to the hard limit:" in report.fixes
    assert "  [server] workers = 1, worker_connections = 19968   # the most one process holds under the hard limit" \
        in report.fixes


def test_thread_mode_is_flagged(tmp_path):
    report = check(ServerConfig(mode="thread"), 1000, root=fake_proc(tmp_path))
    assert row(report, "server: mode").have == "thread"
    assert check(ServerConfig(), 1000, root=fake_proc(tmp_path)).rows[0].what != "server: mode"


def test_doctor_counts_the_static_cache_and_database_in_the_reserve(tmp_path, capsys):
    """The open-file cache keeps up to cache_entries files open, SQLite three
    files per connection: a worker's fds are worker_connections + all of that."""
    root = fake_proc(tmp_path, limits=limits_line(20000, 20000))
    config = tmp_path / "c.toml"
    config.write_text('[server]\nworker_connections = 19000\nthreads = 4\n[[listen]]\naddress = "127.0.0.1:0"\n'
                      f'[static]\nroot = "{tmp_path}"\ncache_entries = 2000\n'
                      f'[database]\nurl = "sqlite:///{tmp_path}/x.db"\n')
    # 19,000 + 2,000 (cache) + 5 x 3 (SQLite) + 32 = 21,047 > 20,000: the doctor reads the file anyway
    assert main(["--check-limits", "-c", str(config), "--connections", "1000", "--root", root]) == 1
    out = capsys.readouterr().out
    fds = next(line for line in out.splitlines() if line.startswith("server: fds per worker"))
    assert "21,047 (worker_connections + 2,047)" in fds and fds.rstrip().endswith("FIX")
    assert "ulimit -n 21047" in out
