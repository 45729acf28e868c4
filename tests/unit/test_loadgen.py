"""prefork-bench, the load client: its pure parts, then the real thing at a
small scale against a real server (a few thousand connections over two
source addresses; the accept comparison with short runs).

This file: the in-process tests; tests/e2e/test_loadgen_e2e.py has those with
server processes, subprocesses and sockets."""

from __future__ import annotations

import argparse

import pytest

from prefork_bench import cli, client, connections


def test_sources_ranges_and_lists():
    assert connections.parse_sources("127.0.0.2-127.0.0.4") == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert connections.parse_sources("127.0.0.9,127.0.1.255-127.0.2.0") == ["127.0.0.9", "127.0.1.255", "127.0.2.0"]
    assert connections.parse_sources("none") == []
    for bad in ("127.0.0.5-127.0.0.1", "localhost", "127.0.0.1-x"):
        with pytest.raises(argparse.ArgumentTypeError):
            connections.parse_sources(bad)


def test_targets():
    assert connections.parse_targets("127.0.0.1:8080,127.0.0.2:81") == [("127.0.0.1", 8080), ("127.0.0.2", 81)]
    for bad in ("127.0.0.1", ":80", "h:port"):
        with pytest.raises(argparse.ArgumentTypeError):
            connections.parse_targets(bad)


def test_auto_sources_keep_each_source_to_a_quarter_of_its_ports(monkeypatch):
    monkeypatch.setattr(connections, "port_range", lambda: 64512)
    sources = connections.auto_sources(1_000_000, [("127.0.0.1", 8080)])
    assert len(sources) == 63 and sources[0] == "127.0.0.2" and len(set(sources)) == 63
    assert len(connections.auto_sources(1_000_000, [("127.0.0.1", 8080), ("127.0.0.1", 8081)])) == 32
    assert connections.auto_sources(10, [("10.1.1.1", 80)]) == []  # not loopback: no binding


def test_latency_histogram_percentiles():
    hist = [0] * client.HIST_SIZE
    for seconds in [0.001] * 98 + [0.1, 1.0]:
        hist[client.hist_index(seconds)] += 1
    p50, p99, top = (client.percentile(hist, q) for q in (0.5, 0.99, 1.0))
    assert 0.001 <= p50 < 0.00112          # bucket bounds are within 1/8 of a power of two
    assert 0.1 <= p99 < 0.112 and 1.0 <= top < 1.1
    assert client.percentile([0] * client.HIST_SIZE, 0.5) is None


def test_jobs_split_the_count_and_fit_the_fd_limit():
    args = cli.parse_args(["connections", "--count", "1000003", "--rate", "20000"])
    args.sources = ["127.0.0.2"]
    args.ramp_timeout = 60
    jobs = connections.plan_jobs(args, per_process=19936)
    assert len(jobs) == 51 and sum(j.count for j in jobs) == 1000003
    assert max(j.count for j in jobs) <= 19936
    assert [j.first for j in jobs[:3]] == [0, jobs[0].count, jobs[0].count + jobs[1].count]
    assert abs(sum(j.rate for j in jobs) - 20000) < 1e-6


def test_httpbench_ratios_round_by_round_and_median_round():
    from prefork_bench import httpreport, wrk

    def result(rps, read_errors=0):
        return wrk.WrkResult(requests_per_sec=rps, requests=int(rps), p50_ms=1.0, p90_ms=2.0, p99_ms=3.0,
                            read_errors=read_errors)

    ka, close = wrk.SCENARIOS[0], wrk.SCENARIOS[2]
    rounds = {
        "prefork": [{ka.name: result(80.0), close.name: result(10.0)},
                    {ka.name: result(110.0)},
                    {ka.name: result(90.0, read_errors=2)}],
        "nginx": [{ka.name: result(100.0), close.name: result(20.0)},
                  {ka.name: result(137.5)},
                  {ka.name: result(150.0)}],
    }
    ratios = httpreport.round_ratios(rounds, [ka, close])
    # each round's own pair; a scenario with a single round has no series
    assert ratios == {"nginx": {ka.name: [0.8, 0.8, 0.6]}}
    lines = httpreport.format_round_ratios(ratios)
    assert lines[0].startswith("prefork/nginx round by round")
    assert "0.80 0.80 0.60  (median 0.80, min 0.60)" in lines[1]
    # the median round per server (not per ratio), with every round's errors summed
    merged = httpreport.median_round(rounds["prefork"])
    assert merged[ka.name].requests_per_sec == 90.0 and merged[ka.name].read_errors == 2
    assert httpreport.round_ratios({"nginx": rounds["nginx"]}, [ka]) == {}


def test_c1m_page_keeps_the_other_benchmarks_sections():
    """bench/c1m.py writes its part of docs/BENCHMARKS.md again and keeps
    what follows its end mark (the WebSocket and bus sections)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "bench" / "c1m.py"
    spec = importlib.util.spec_from_file_location("c1m_under_test", path)
    c1m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(c1m)
    old = "# old c1m part\n\n" + c1m.END + "## The bus\n\nkept\n"
    page = c1m.keep_others("# new c1m part\n", old)
    assert page == "# new c1m part\n\n" + c1m.END + "## The bus\n\nkept\n"
    assert c1m.keep_others("# first\n", "") == "# first\n\n" + c1m.END
    assert page.count(c1m.END) == 1 and c1m.keep_others("# again\n", page).endswith("## The bus\n\nkept\n")
    doc = (path.parents[1] / "docs" / "BENCHMARKS.md").read_text()
    assert doc.count(c1m.END) == 1  # the page has the mark (else a run would drop what follows)


def test_asgi_and_wsgi_benches_progress_line_rounds_p99():
    from prefork_bench.asgi.measure import Run, progress_line
    run = Run(requests_per_sec=119924.4, requests=599622, p50_ms=0.4, p90_ms=0.6, p99_ms=0.8230000000000001,
              server_cpu_percent=99.1, cpu_us_per_request=8.26, other_cpu_percent=1.3, wrk_cpu_percent=50.0)
    line = progress_line("granian", "a-hello", run)
    assert line == ("[granian] a-hello: 119,924 req/s, p99 0.82 ms, 8.3 us CPU/req, server 99.1% wrk 50.0% "
                    "other 1.3%, errors 0")
