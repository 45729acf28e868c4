"""Who the client is behind a trusted reverse proxy: ``X-Forwarded-For`` /
``X-Forwarded-Proto`` and RFC 7239 ``Forwarded``.

``[http] forwarded_allow`` lists the proxies to believe (parsed by the config
into networks, ``"unix"`` and ``"*"``); the dispatcher builds one ``Trusted``
per worker from it and, for a request from one of them, asks ``resolve`` for
the client address and scheme the proxy saw. Requests from anyone else keep
their socket's peer and ``http``.

The rules (those of uvicorn's ProxyHeadersMiddleware for the X- headers):

- a request with any ``X-Forwarded-For`` or ``X-Forwarded-Proto`` uses those
  two and ignores ``Forwarded`` (nginx, HAProxy, Traefik, Envoy and the cloud
  balancers set them, and most pass a client's own ``Forwarded`` on
  untouched); one without them uses ``Forwarded``;
- the client is the right-most address that is not a trusted proxy (each
  proxy appends the address it saw, so whatever is left of that was written
  by someone nobody trusts); when every address is trusted, the left-most;
- ``X-Forwarded-Proto`` (the last one) and ``proto=`` give the scheme when it
  is ``http`` or ``https``; ``proto=`` is that of the element the client was
  taken from (the connection the client made);
- ``Forwarded`` nodes: IPv4, ``"[IPv6]"``, with an optional port, quoted or
  not; ``unknown`` and obfuscated identifiers (``_hidden``) are kept as the
  client's "address" (never a trusted one, so never the proxy's). A malformed
  element counts as ``unknown``: reading right to left, a client's broken
  header cannot hide what a trusted proxy appended after it.

Pure functions over header lists; imports nothing else of prefork.
"""

from __future__ import annotations

import ipaddress
import re

UNKNOWN = "unknown"
SCHEMES = ("http", "https")

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_OBFUSCATED = re.compile(r"_[A-Za-z0-9._-]+")

Client = tuple  # (host, port): an IP address as text, "unknown" or "_obfuscated"; port 0 when not given


def _address(text: str):
    """An IP address (IPv4-mapped IPv6 as IPv4), or None when ``text`` is not one."""
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


class Trusted:
    """The trusted proxies: ``entries`` as the config parsed them (networks,
    ``"unix"`` for unix-socket peers, ``"*"`` for anyone)."""

    __slots__ = ("everyone", "unix", "networks", "_v4")

    def __init__(self, entries):
        self.everyone = "*" in entries
        self.unix = "unix" in entries
        self.networks = tuple(e for e in entries if not isinstance(e, str))
        # IPv4 networks as (network, mask) ints: a packed IPv4 peer is checked without ipaddress
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4)

    def peer(self, peer) -> bool:
        """Is this connection's peer (as ``messages.pack_peer`` keeps it: an
        int for IPv4, a tuple for IPv6, anything else for a unix socket) a
        trusted proxy?"""
        if self.everyone:
            return True
        if type(peer) is int:
            ip = peer >> 16
            for network, mask in self._v4:
                if ip & mask == network:
                    return True
            return False
        if type(peer) is tuple:
            return self.host(peer[0])
        return self.unix

    def host(self, host: str) -> bool:
        """Is the address ``host`` (text) a trusted proxy? Not an address: no."""
        if self.everyone:
            return True
        ip = _address(host)
        return ip is not None and any(ip in network for network in self.networks)


def resolve(trusted: Trusted, headers) -> tuple[Client | None, str | None]:
    """The client (host, port) and scheme that a trusted proxy's headers give,
    each None when they give none. ``headers``: (name, value) bytes pairs as
    received (any case)."""
    xff: list[bytes] = []
    proto: bytes | None = None
    forwarded: list[bytes] = []
    for name, value in headers:
        size = len(name)
        if size == 15 and name.lower() == b"x-forwarded-for":
            xff.append(value)
        elif size == 17 and name.lower() == b"x-forwarded-proto":
            proto = value
        elif size == 9 and name.lower() == b"forwarded":
            forwarded.append(value)
    if xff or proto is not None:
        client = from_x_forwarded_for(trusted, b",".join(xff).decode("latin-1")) if xff else None
        return client, (scheme(proto.decode("latin-1")) if proto is not None else None)
    if forwarded:
        return from_forwarded(trusted, b",".join(forwarded).decode("latin-1"))
    return None, None


def scheme(text: str | None) -> str | None:
    """``http`` or ``https`` (any case, trimmed), else None."""
    if text is None:
        return None
    text = text.strip(" \t").lower()
    return text if text in SCHEMES else None


# --- X-Forwarded-For -----------------------------------------------------------------


def from_x_forwarded_for(trusted: Trusted, value: str) -> Client | None:
    """The right-most untrusted address of a comma-separated list (empty
    items skipped); the left-most when all are trusted; None when empty."""
    hosts = [item for item in (part.strip(" \t") for part in value.split(",")) if item]
    if not hosts:
        return None
    for item in reversed(hosts):
        host, port = host_port(item)
        if not trusted.host(host):
            return host, port
    return host_port(hosts[0])


def host_port(text: str) -> Client:
    """``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1`` or anything else
    (kept whole, port 0): as (host, port)."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep:
            return text, 0
        return host, _port(rest[1:]) if rest.startswith(":") else 0
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if port.isdigit():
            return host, _port(port)
    return text, 0


def _port(text: str) -> int:
    return int(text) if text.isdigit() and len(text) <= 5 and int(text) <= 65535 else 0


# --- Forwarded (RFC 7239) ------------------------------------------------------------


def from_forwarded(trusted: Trusted, value: str) -> tuple[Client | None, str | None]:
    """The client and scheme of a ``Forwarded`` field (all its lines joined
    with commas): the right-most element whose ``for`` is not a trusted
    proxy; the left-most with a ``for`` when all are trusted."""
    found = None
    for text in reversed(split(value, ",")):
        if not text.strip(" \t"):
            continue
        params = element(text)
        if params is None:  # malformed: nothing in it can be believed
            return (UNKNOWN, 0), None
        node = params.get("for")
        if node is None:
            continue
        found = parse_node(node), params.get("proto")
        if not trusted.host(found[0][0]):
            break
    if found is None:
        return None, None
    return found[0], scheme(found[1])


def split(text: str, sep: str) -> list[str]:
    """``text`` split at each ``sep`` outside a quoted string (RFC 9110 5.6.4)."""
    if '"' not in text:
        return text.split(sep)
    parts = []
    start = 0
    quoted = False
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if quoted:
            if c == "\\":
                i += 1
            elif c == '"':
                quoted = False
        elif c == '"':
            quoted = True
        elif c == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def element(text: str) -> dict[str, str] | None:
    """One forwarded-element's pairs (names lower-cased, quoted values
    unquoted), or None when it is malformed (a pair that is not
    ``token=token`` or ``token="quoted"``, or a name twice)."""
    params: dict[str, str] = {}
    for pair in split(text, ";"):
        pair = pair.strip(" \t")
        if not pair:
            continue
        name, eq, value = pair.partition("=")
        name = name.lower()
        if not eq or _TOKEN.fullmatch(name) is None or name in params:
            return None
        if value[:1] == '"':
            match = _QUOTED.fullmatch(value)
            if match is None:
                return None
            value = _QUOTED_PAIR.sub(r"\1", match.group(1))
        elif _TOKEN.fullmatch(value) is None:
            return None
        params[name] = value
    return params


def parse_node(node: str) -> Client:
    """A ``for=`` node (RFC 7239 6): an IP address (IPv6 in brackets) with an
    optional port, ``unknown`` or an obfuscated identifier (an obfuscated port
    is 0). Anything else is ``unknown``."""
    if node.startswith("["):
        host, sep, rest = node[1:].partition("]")
        if not sep or _address(host) is None or host.count(":") < 2 or (rest and not rest.startswith(":")):
            return UNKNOWN, 0
        return host, _port(rest[1:]) if rest else 0
    if node.count(":") > 1:  # an IPv6 address without brackets (not RFC 7239, but seen)
        return (node, 0) if _address(node) is not None else (UNKNOWN, 0)
    host, _, port = node.partition(":")
    if host.lower() == UNKNOWN:
        return UNKNOWN, _port(port)
    if _OBFUSCATED.fullmatch(host) is not None:
        return host, _port(port)
    if "." in host and _address(host) is not None:  # IPv4 only here
        return host, _port(port)
    return UNKNOWN, 0
