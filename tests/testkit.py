"""What the unit and e2e halves of a subject share (tests/unit/test_x.py and
tests/e2e/test_x_e2e.py): fake /proc trees for the limits doctor, the
expected /fortunes page, the hostile request corpus, the privileges setup,
the listening sockets a process holds.
tests/ is on sys.path (conftest.py lives here), so both import it."""

from __future__ import annotations

import codecs
import os
import pwd
import tomllib
from pathlib import Path

import pytest


# A machine with room for everything: the values each test starts from.
GENEROUS = {
    "proc/self/limits": (
        "Limit                     Soft Limit           Hard Limit           Units     \n"
        "Max cpu time              unlimited            unlimited            seconds   \n"
        "Max open files            1024                 1048576              files     \n"
        "Max locked memory         8388608              8388608              bytes     \n"
    ),
    "proc/sys/fs/file-max": "10000000\n",
    "proc/sys/fs/nr_open": "1048576\n",
    "proc/sys/fs/file-nr": "1000\t0\t10000000\n",
    "proc/sys/net/ipv4/ip_local_port_range": "1024\t65535\n",
    "proc/sys/net/netfilter/nf_conntrack_max": "4000000\n",
    "proc/sys/net/core/somaxconn": "4096\n",
    "proc/sys/net/ipv4/tcp_max_syn_backlog": "8192\n",
    "proc/sys/net/ipv4/tcp_mem": "1000000\t2000000\t3000000\n",
    "proc/sys/net/ipv4/tcp_rmem": "4096\t131072\t6291456\n",
    "proc/sys/net/ipv4/tcp_wmem": "4096\t16384\t4194304\n",
    "proc/meminfo": f"MemTotal:       {64 * 1024 * 1024} kB\nMemFree:        1 kB\n"
                    f"MemAvailable:   {60 * 1024 * 1024} kB\n",
}


def fake_proc(tmp_path, drop=(), **changes) -> str:
    """Write a fake /proc below tmp_path: GENEROUS, with ``changes`` (keys are
    the file names, e.g. file_max=..., nr_open=...) and without ``drop``."""
    names = {Path(rel).name.replace("-", "_"): rel for rel in GENEROUS}
    files = dict(GENEROUS)
    for key, text in changes.items():
        files[names[key]] = text
    for key in drop:
        del files[names[key]]
    root = tmp_path / "root"
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return str(root)


EXPECTED_FORTUNES = (
    "<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>"
    "<tr><td>11</td><td>&lt;script&gt;alert(&quot;This should not be displayed in a browser alert box.&quot;);"
    "&lt;/script&gt;</td></tr>"
    "<tr><td>4</td><td>A bad random number generator: 1, 1, 1, 1, 1, 4.33e+67, 1, 1, 1</td></tr>"
    "<tr><td>5</td><td>A computer program does what you tell it to do, not what you want it to do.</td></tr>"
    "<tr><td>2</td><td>A computer scientist is someone who fixes things that aren&#x27;t broken.</td></tr>"
    "<tr><td>8</td><td>A list is only as strong as its weakest link. \u2014 Donald Knuth</td></tr>"
    "<tr><td>0</td><td>Additional fortune added at request time.</td></tr>"
    "<tr><td>3</td><td>After enough decimal places, nobody gives a damn.</td></tr>"
    "<tr><td>7</td><td>Any program that runs right is obsolete.</td></tr>"
    "<tr><td>10</td><td>Computers make very fast, very accurate mistakes.</td></tr>"
    "<tr><td>6</td><td>Emacs is a nice operating system, but I prefer UNIX. \u2014 Tom Christaensen</td></tr>"
    "<tr><td>9</td><td>Feature: A bug with seniority.</td></tr>"
    "<tr><td>1</td><td>fortune: No such file or directory</td></tr>"
    "<tr><td>12</td><td>\u30d5\u30ec\u30fc\u30e0\u30ef\u30fc\u30af\u306e\u30d9\u30f3\u30c1\u30de\u30fc\u30af</td></tr>"
    "</table></body></html>"
).encode()


CORPUS = Path(__file__).resolve().parent / "requests"  # tests/requests
CASES = sorted(CORPUS.glob("*/*.http"))


def load_case(path: Path) -> tuple[bytes, list[int], bool]:
    text = path.read_text().replace("\n", "")
    raw = codecs.escape_decode(text.encode("latin-1"))[0]
    expect = tomllib.loads(path.with_suffix(".toml").read_text())
    return raw, expect["statuses"], expect["closed"]


ROOT_ONLY = pytest.mark.skipif(os.getuid() != 0, reason="dropping privileges needs root")
NOBODY = pwd.getpwnam("nobody")
LISTEN = [{"address": "127.0.0.1:1"}]


def conf(**sections) -> dict:
    return {"listen": LISTEN, **sections}


def reachable_tmp_dir():
    """A directory another user can reach (pytest's own live under a 0700
    one), removed afterwards: the privileges tests' ``tmp_path``."""
    import shutil
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="prefork-priv-", dir="/tmp"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# config files

def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


GOOD = '[server]\nworkers = 2\n\n[[listen]]\naddress = "127.0.0.1:8080"\n'


def all_listening_inodes() -> set[int]:
    """Inodes of every TCP socket in the LISTEN state on this machine."""
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    listening.add(int(fields[9]))
    return listening


def listening_inodes(pid: int) -> set[int]:
    """Inodes of the TCP listening sockets among ``pid``'s open fds."""
    listening = all_listening_inodes()
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in listening:
                inodes.add(inode)
    return inodes


# --- WebSocket frames as a client sends them (RFC 6455 5.2) -------------------------

def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bool = True, rsv: int = 0,
                 length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    head = bytes([(0x80 if fin else 0) | rsv | opcode])
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload)) if len(payload) < 4096 else \
        head + key + _mask(payload, key)


def _mask(payload: bytes, key: bytes) -> bytes:
    from websockets.speedups import apply_mask

    return apply_mask(payload, key)
