"""Forwarded headers (prefork/forwarded.py): who is trusted, X-Forwarded-For /
-Proto as uvicorn reads them, RFC 7239 Forwarded parsing; the config key; the
dispatcher applying them once per request (to the request's peer and scheme,
which the access log, /status and the ASGI scope read)."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from http_helpers import get, make_ctx, parse_responses
from prefork.config import ConfigError, from_dict
from prefork.dispatch import HttpServerProtocol
from prefork.forwarded import Trusted, element, from_forwarded, host_port, parse_node, resolve, split
from prefork.messages import Response, pack_peer, unpack_peer
from testkit import conf


def trusted(*entries):
    return Trusted(tuple(e if e in ("unix", "*") else ipaddress.ip_network(e) for e in entries))


LOCAL = trusted("127.0.0.1", "10.0.0.0/8", "::1")


# --- trust ---------------------------------------------------------------------------


@pytest.mark.parametrize("peer, expected", [
    (pack_peer(("127.0.0.1", 5000)), True),
    (pack_peer(("10.200.3.4", 1)), True),
    (pack_peer(("11.0.0.1", 1)), False),
    (pack_peer(("127.0.0.2", 1)), False),
    (("::1", 5000, 0, 0), True),
    (("::2", 5000, 0, 0), False),
    (("::ffff:10.1.2.3", 80, 0, 0), True),   # IPv4-mapped, on a dual-stack listener
    ("", False),                              # a unix-socket peer: only with "unix"
    (None, False),
])
def test_peer_trust(peer, expected):
    assert LOCAL.peer(peer) is expected


def test_unix_and_everyone():
    assert trusted("unix").peer("") and not trusted("unix").peer(pack_peer(("127.0.0.1", 1)))
    star = trusted("*")
    assert star.peer("") and star.peer(pack_peer(("8.8.8.8", 1))) and star.peer(("2001:db8::1", 1, 0, 0))
    assert star.host("anything")
    assert not LOCAL.host("unknown") and not LOCAL.host("_hidden") and not LOCAL.host("")


# --- X-Forwarded-For / -Proto ---------------------------------------------------------


@pytest.mark.parametrize("headers, client, scheme", [
    ([(b"X-Forwarded-For", b"1.2.3.4")], ("1.2.3.4", 0), None),
    ([(b"x-forwarded-for", b"1.2.3.4, 10.0.0.1")], ("1.2.3.4", 0), None),
    # the right-most untrusted: what the client wrote to the left of it is not believed
    ([(b"X-Forwarded-For", b"6.6.6.6, 1.2.3.4, 10.0.0.1, 127.0.0.1")], ("1.2.3.4", 0), None),
    # several fields are one list
    ([(b"X-Forwarded-For", b"6.6.6.6"), (b"X-Forwarded-For", b"1.2.3.4")], ("1.2.3.4", 0), None),
    # all trusted: the left-most
    ([(b"X-Forwarded-For", b"10.0.0.2, 10.0.0.1")], ("10.0.0.2", 0), None),
    ([(b"X-Forwarded-For", b"1.2.3.4:5678")], ("1.2.3.4", 5678), None),
    ([(b"X-Forwarded-For", b"[2001:db8::1]:443")], ("2001:db8::1", 443), None),
    ([(b"X-Forwarded-For", b"2001:db8::1")], ("2001:db8::1", 0), None),
    ([(b"X-Forwarded-For", b"1.2.3.4, ")], ("1.2.3.4", 0), None),   # empty items skipped
    ([(b"X-Forwarded-For", b" , ")], None, None),
    ([(b"X-Forwarded-Proto", b"https")], None, "https"),
    ([(b"X-Forwarded-Proto", b" HTTPS ")], None, "https"),
    ([(b"X-Forwarded-Proto", b"gopher")], None, None),
    ([(b"X-Forwarded-Proto", b"http"), (b"X-Forwarded-Proto", b"https")], None, "https"),  # the last
    ([(b"X-Forwarded-For", b"1.2.3.4"), (b"X-Forwarded-Proto", b"https")], ("1.2.3.4", 0), "https"),
    # X-Forwarded-* present: Forwarded (which a proxy may pass on from the client) is ignored
    ([(b"Forwarded", b"for=6.6.6.6;proto=https"), (b"X-Forwarded-For", b"1.2.3.4")], ("1.2.3.4", 0), None),
    ([(b"Host", b"x")], None, None),
])
def test_x_forwarded(headers, client, scheme):
    assert resolve(LOCAL, headers) == (client, scheme)


def test_everyone_trusted_takes_the_left_most():
    assert resolve(trusted("*"), [(b"X-Forwarded-For", b"1.2.3.4, 5.6.7.8")]) == (("1.2.3.4", 0), None)


@pytest.mark.parametrize("text, expected", [
    ("1.2.3.4", ("1.2.3.4", 0)), ("1.2.3.4:80", ("1.2.3.4", 80)), ("[::1]:80", ("::1", 80)),
    ("[::1]", ("::1", 0)), ("[::1", ("[::1", 0)), ("1.2.3.4:99999", ("1.2.3.4", 0)), ("host:x", ("host:x", 0)),
])
def test_host_port(text, expected):
    assert host_port(text) == expected


# --- Forwarded (RFC 7239) -------------------------------------------------------------


@pytest.mark.parametrize("value, client, scheme", [
    # RFC 7239 section 4's examples
    ('for="_gazonk"', ("_gazonk", 0), None),
    ('For="[2001:db8:cafe::17]:4711"', ("2001:db8:cafe::17", 4711), None),
    ("for=192.0.2.60;proto=http;by=203.0.113.43", ("192.0.2.60", 0), "http"),
    ("for=192.0.2.43, for=198.51.100.17", ("198.51.100.17", 0), None),  # the right-most untrusted
    # trusted hops on the right are skipped; the proto is the client's element's
    ("for=192.0.2.43;proto=https, for=10.0.0.1;proto=http", ("192.0.2.43", 0), "https"),
    ('for="192.0.2.43:8443";proto=HTTPS', ("192.0.2.43", 8443), "https"),
    ("for=unknown, for=10.0.0.1", ("unknown", 0), None),
    ('for="_hidden:_port"', ("_hidden", 0), None),
    ("for=10.0.0.2, for=10.0.0.1", ("10.0.0.2", 0), None),   # all trusted: the left-most
    # quoted strings may hold , ; and escapes
    ('for="[::1]:80";host="a,b;c", for=192.0.2.1', ("192.0.2.1", 0), None),
    ('host="x\\"y";for=192.0.2.1', ("192.0.2.1", 0), None),
    ("proto=https;host=example.com", None, None),   # no for= anywhere: no client
    ("by=10.0.0.1, for=192.0.2.9 ;proto=https", ("192.0.2.9", 0), "https"),
    # malformed elements count as unknown, never as the proxy
    ("for=192.0.2.1, for", ("unknown", 0), None),
    ('for="192.0.2.1', ("unknown", 0), None),
    ("for=192.0.2.1;for=192.0.2.2", ("unknown", 0), None),   # a parameter twice
    ("for=[::1]", ("unknown", 0), None),   # IPv6 needs the quotes (the brackets are not a token)
    # ... but to the left of the client they change nothing
    ("garbage==, for=192.0.2.7", ("192.0.2.7", 0), None),
    ("for=example.com", ("unknown", 0), None),      # not a node
    ('for="2001:db8::5"', ("2001:db8::5", 0), None),  # IPv6 without brackets: tolerated
])
def test_forwarded(value, client, scheme):
    assert from_forwarded(LOCAL, value) == (client, scheme)
    assert resolve(LOCAL, [(b"Forwarded", value.encode())]) == (client, scheme)


def test_forwarded_fields_are_one_list():
    headers = [(b"Forwarded", b"for=6.6.6.6"), (b"forwarded", b'for="192.0.2.1";proto=https')]
    assert resolve(LOCAL, headers) == (("192.0.2.1", 0), "https")


def test_forwarded_pieces():
    assert split('a="x,y",b', ",") == ['a="x,y"', "b"]
    assert split('a="x\\",y",b', ",") == ['a="x\\",y"', "b"]
    assert element('For="[::1]:80"; Proto=https') == {"for": "[::1]:80", "proto": "https"}
    assert element("for=a b") is None and element("=x") is None and element('for="a"b') is None
    assert parse_node("[2001:db8::1]:_p") == ("2001:db8::1", 0)
    assert parse_node("[1.2.3.4]") == ("unknown", 0)      # only IPv6 goes in brackets
    assert parse_node("UNKNOWN") == ("unknown", 0)
    assert parse_node("1.2.3.4:65535") == ("1.2.3.4", 65535)


# --- the config key -------------------------------------------------------------------


def test_config_parses_the_entries():
    http = from_dict(conf(http={"forwarded_allow": ["127.0.0.1", "10.0.0.0/8", "::1", "unix", "*"]})).http
    assert http.forwarded_allow == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"),
                                    ipaddress.ip_network("::1/128"), "unix", "*")
    assert from_dict(conf()).http.forwarded_allow == ()
    # one comma-separated string, as --forwarded-allow-ips gives it
    assert from_dict(conf(http={"forwarded_allow": "127.0.0.1, 10.0.0.0/8"})).http.forwarded_allow == (
        ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))


@pytest.mark.parametrize("value, key", [
    (["127.0.0.1", "proxy.example.com"], "http.forwarded_allow[1]"),
    (["10.0.0.0/33"], "http.forwarded_allow[0]"),
    ([1], "http.forwarded_allow[0]"),
    (7, "http.forwarded_allow"),
])
def test_config_refuses_bad_entries(value, key):
    with pytest.raises(ConfigError) as err:
        from_dict(conf(http={"forwarded_allow": value}), "c.toml")
    assert err.value.key == key and err.value.path == "c.toml"


# --- the dispatcher -------------------------------------------------------------------


def _echo(request):
    return Response(200, f"{request.peer[0]} {request.peer[1]} {request.scheme}".encode())


def _serve(peer, headers: bytes, allow=("127.0.0.1",)):
    nets = tuple(ipaddress.ip_network(a) for a in allow)
    ctx = make_ctx(routes={b"/who": _echo}, forwarded_allow=nets)
    logged = []
    ctx.on_response = lambda request, status, length: logged.append(request.peer)
    proto = HttpServerProtocol(ctx, peer=peer)
    [resp] = parse_responses(proto.data_received(get(b"/who", headers=headers)))
    return resp.body.decode(), logged


XFF = b"X-Forwarded-For: 192.0.2.1:4000\r\nX-Forwarded-Proto: https\r\n"


def test_a_trusted_peer_is_believed():
    assert _serve(("127.0.0.1", 5000), XFF) == ("192.0.2.1 4000 https", [("192.0.2.1", 4000)])
    body, _ = _serve(("127.0.0.1", 5000), b'Forwarded: for="[2001:db8::1]:7";proto=https\r\n')
    assert body == "2001:db8::1 7 https"


def test_anyone_else_is_not():
    assert _serve(("192.0.2.99", 5000), XFF) == ("192.0.2.99 5000 http", [("192.0.2.99", 5000)])


def test_nothing_is_read_without_forwarded_allow():
    assert make_ctx().forwarded is None
    assert _serve(("127.0.0.1", 5000), XFF, allow=()) == ("127.0.0.1 5000 http", [("127.0.0.1", 5000)])


@pytest.mark.parametrize("address", [("127.0.0.1", 5000), ("0.0.0.0", 0), ("255.255.255.255", 65535),
                                     ("10.200.3.4", 1), ("192.168.0.10", 80)])
def test_a_packed_peer_unpacks_to_the_same_address(address):
    packed = pack_peer(address)
    assert type(packed) is int
    assert unpack_peer(packed) == address and socket.inet_aton(unpack_peer(packed)[0])
    assert unpack_peer("/run/prefork.sock") == "/run/prefork.sock"  # not packed: as it is
    assert unpack_peer(("::1", 9, 0, 0)) == ("::1", 9, 0, 0)
