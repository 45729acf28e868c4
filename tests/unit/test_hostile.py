"""The hostile request corpus (tests/requests/), run over real sockets on every
backend: each case's bytes are sent at once, the responses read back, and the
connection must end up as the case says -- closed, or still serving -- with
the server answering a fresh connection afterwards.

A case is two files in tests/requests/valid/ or tests/requests/invalid/:
``NAME.http``, the bytes, written with escapes (``\\r``, ``\\n``, ``\\xNN``;
the file's own line breaks are only for reading and are dropped), and
``NAME.toml``: ``statuses = [...]`` (the responses, in order) and ``closed``
(whether the server must close the connection after them). The outcomes
follow RFC 9112 and what nginx does.

This file: the in-process tests; tests/e2e/test_hostile_e2e.py has those with
server processes, subprocesses and sockets."""

from __future__ import annotations

from testkit import CASES, load_case as load


def test_corpus_is_complete():
    """Every case has its expectation, and both kinds are there."""
    assert len(CASES) >= 50
    assert {p.parent.name for p in CASES} == {"valid", "invalid"}
    for case in CASES:
        raw, statuses, closed = load(case)
        assert raw and statuses and isinstance(closed, bool), case
