"""prefork-bench websocket: its pure parts (the client's framing, the message
payload, the delivery accounting, the report, the sysctls against a fake
tree, the arguments). The run against a real server is in
tests/e2e/test_wsbench_e2e.py."""

from __future__ import annotations

import struct

import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from prefork_bench.websocket import cli, frames
from prefork_bench.websocket.deliveries import Deliveries, Published, merge, summarize
from prefork_bench.websocket.report import render
from prefork_bench.websocket.servers import Sysctls


def _parse_as_server(data: bytes) -> Frame:
    """Read a client frame with the websockets library's own parser (mask=True: a server's view)."""
    reader = StreamReader()
    reader.feed_data(data)
    gen = Frame.parse(reader.read_exact, mask=True)
    try:
        next(gen)
    except StopIteration as done:
        return done.value
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_client_frames_are_masked_and_read_back_by_websockets(size):
    payload = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    data = frames.client_frame(frames.TEXT if size < 200 else frames.BINARY, payload, key=b"\x01\x82\xff\x10")
    assert data[1] & 0x80                          # the mask bit
    frame = _parse_as_server(data)
    assert frame.data == payload and frame.fin
    assert frame.opcode == (Opcode.TEXT if size < 200 else Opcode.BINARY)


def test_masking_is_its_own_inverse_and_random_keys_differ():
    key = b"abcd"
    assert frames.mask(frames.mask(b"hello world", key), key) == b"hello world"
    assert frames.mask(b"", key) == b""
    assert frames.mask(b"\x00\x00\x00\x00\x00", key) == b"abcda"
    assert len({frames.client_frame(frames.TEXT, b"x")[2:6] for _ in range(4)}) > 1   # a fresh key each time
    close = _parse_as_server(frames.close_frame(1001))
    assert close.opcode == Opcode.CLOSE and close.data == struct.pack("!H", 1001)


@pytest.mark.parametrize("size", [0, 5, 125, 126, 65535, 65536])
def test_server_frames_whole_split_and_back_to_back(size):
    payload = b"p" * size
    head = bytes([0x81])
    if size < 126:
        head += bytes([size])
    elif size < 65536:
        head += bytes([126]) + struct.pack("!H", size)
    else:
        head += bytes([127]) + struct.pack("!Q", size)
    one = head + payload
    assert frames.parse_frame(one) == (frames.TEXT, payload, len(one))
    for cut in range(0, min(len(one), 12)):   # every cut inside the header, and short of the payload
        if cut < len(one):
            assert frames.parse_frame(one[:cut]) is None
    if size:
        assert frames.parse_frame(one[:-1]) is None
    two = one + bytes([0x89, 2]) + b"hi"        # a ping right behind it
    opcode, got, at = frames.parse_frame(two)
    assert (opcode, got) == (frames.TEXT, payload)
    assert frames.parse_frame(two, at) == (frames.PING, b"hi", len(two))


@pytest.mark.parametrize("bad", [bytes([0x81, 0x81]) + b"mask" + b"x",   # masked by the server
                                 bytes([0xC1, 1]) + b"x",                 # RSV1 (no extension agreed)
                                 bytes([0x01, 1]) + b"x",                 # not final: fragmented
                                 bytes([0x80, 1]) + b"x"])                # a continuation
def test_frames_a_server_may_not_send_are_errors(bad):
    with pytest.raises(frames.FrameError):
        frames.parse_frame(bad)


def test_handshake_and_message_payload():
    request = frames.handshake("127.0.0.1", "/ws/bench")
    assert request.startswith(b"GET /ws/bench HTTP/1.1\r\n") and request.endswith(b"\r\n\r\n")
    assert b"Sec-WebSocket-Version: 13" in request and b"Upgrade: websocket" in request
    assert frames.handshake_status(b"HTTP/1.1 101 Switching Protocols") == 101
    assert frames.handshake_status(b"garbage") == 0
    body = frames.message(42, 1234.5, size=64)
    assert len(body) == 64 and frames.message_seq(body) == 42 and frames.message_sent(body) == 1234.5
    assert frames.message(7, 1.0, size=0) == b"7 1.000000 "
    assert frames.message_seq(b"hello world") == -1 and frames.message_seq(b"") == -1


def test_deliveries_count_once_in_order_and_flag_duplicates():
    d = Deliveries()
    last_a = last_b = -1
    last_a = d.record(last_a, 0, 1.0)
    last_b = d.record(last_b, 0, 1.5)
    last_a = d.record(last_a, 1, 2.0)
    last_a = d.record(last_a, 1, 2.1)   # again: a duplicate
    last_a = d.record(last_a, 0, 2.2)   # older than the last: out of order
    last_b = d.record(last_b, -1, 2.3)  # not a bench message
    assert (last_a, last_b) == (1, 0)
    assert d.counts == {0: [2, 1.5], 1: [1, 2.0]}
    assert d.duplicates == 2 and d.foreign == 1
    assert d.report() == {"d": {"0": [2, 1.5], "1": [1, 2.0]}, "dup": 2, "foreign": 1}


def test_merge_and_summary_find_the_lost_and_the_fanout():
    p1 = {"d": {"0": [3, 10.2], "1": [3, 11.3]}, "dup": 1, "foreign": 0}
    p2 = {"d": {"0": [2, 10.4], "1": [1, 11.1], "7": [1, 12.0]}, "dup": 0, "foreign": 2}
    got, dup, foreign = merge([p1, p2])
    assert got == {0: (5, 10.4), 1: (4, 11.3), 7: (1, 12.0)} and (dup, foreign) == (1, 2)
    published = [Published(0, 10.0, 5), Published(1, 11.0, 5), Published(2, 12.0, 5)]
    s = summarize(published, got, dup, foreign)
    assert (s["expected"], s["delivered"], s["lost"]) == (15, 9, 6)
    assert s["extra"] == 1 and s["duplicates"] == 1        # seq 7 was never published
    rows = {r["seq"]: r for r in s["per_message"]}
    assert rows[0]["fanout_s"] == pytest.approx(0.4) and rows[0]["lost"] == 0
    assert rows[1]["lost"] == 1 and rows[2]["fanout_s"] is None and rows[2]["lost"] == 5
    assert s["fanout_max_s"] == pytest.approx(0.4) and s["fanout_p50_s"] == pytest.approx(0.3)
    assert s["delivered_per_s"] == pytest.approx(9 / 0.7)
    empty = summarize([], {})
    assert empty["delivered_per_s"] is None and empty["fanout_p50_s"] is None and empty["lost"] == 0


def _result(server: str, workers: int, lost: int) -> dict:
    s = summarize([Published(0, 1.0, 10)], {0: (10 - lost, 1.25)})
    s.update(server=server, workers=workers, clients=10, client_processes=1, source_addresses=2,
             established=10, failed=0, dropped=0, errors={}, fatal=[], connect_rate=1000.0,
             connect_p50_s=0.001, connect_p99_s=0.002, server_cpu_idle=1.0, server_cpu_publish=5.0,
             server_cpu_us_per_delivery=3.5, server_rss_peak=2**20, server_pss_peak=2**19,
             server_bytes_per_connection={"rss": 600.0, "pss": 500.0}, mem_used_peak_percent=10.0, samples=[])
    return s


def test_report_table_names_every_server_and_says_how_broadcast_crosses_workers():
    settings = {"clients": 10, "channel": "bench", "messages": 1, "size": 64, "every": 1.0, "publish": "ws",
                "pinning": "off"}
    text = render([_result("prefork", 1, 0), _result("uvicorn", 2, 5), {"server": "websockets",
                                                                         "failure": "did not start"}], settings)
    assert "prefork" in text.splitlines()[0] and "uvicorn" in text.splitlines()[0]
    assert "fan-out p50 / max" in text and "250.0 ms / 250.0 ms" in text
    assert "600 B RSS, 500 B PSS" in text and "3.5 µs" in text
    assert "websockets: FAILED: did not start" in text
    assert "uvicorn: no: a publish reaches the subscribers of the worker that got it" in text
    assert "no cross-worker broadcast" in text   # a run with 2 workers lost messages


def test_sysctls_raise_what_falls_short_and_put_it_back(tmp_path):
    values = {"net/ipv4/ip_local_port_range": "32768\t60999", "net/core/somaxconn": "4096",
              "net/ipv4/tcp_max_syn_backlog": "100000"}
    for key, value in values.items():
        path = tmp_path / "proc" / "sys" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value + "\n")
    tuning = Sysctls(tmp_path)
    changes = tuning.apply()
    assert changes == ["net.ipv4.ip_local_port_range: 32768 60999 -> 1024 65535", "net.core.somaxconn: 4096 -> 65535"]
    read = {key: (tmp_path / "proc" / "sys" / key).read_text().strip() for key in values}
    assert read["net/ipv4/ip_local_port_range"] == "1024\t65535" and read["net/core/somaxconn"] == "65535"
    assert read["net/ipv4/tcp_max_syn_backlog"] == "100000"   # already enough: untouched
    tuning.restore()
    for key, value in values.items():
        assert (tmp_path / "proc" / "sys" / key).read_text().strip() == value


def test_arguments():
    args = cli.parse_args(["--clients", "200000", "--servers", "prefork,uvicorn"])
    assert args.servers == ["prefork", "uvicorn"] and args.ramp_timeout == 200000 / 10000 + 30
    assert len(args.sources) >= 2 and all(s.startswith("127.0.") for s in args.sources)
    for bad in (["--servers", "nginx"], ["--publish", "post", "--servers", "websockets"],
                ["--sources", "10.0.0.1"], ["--clients", "0"], ["--channel", "a/b"]):
        with pytest.raises(SystemExit):
            cli.parse_args(bad)
