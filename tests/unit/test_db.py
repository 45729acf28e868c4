"""The TechEmpower database test types over the wire, on SQLite and PostgreSQL.

PostgreSQL runs when PREFORK_TEST_POSTGRES_URL is set (``.ci/run`` starts a
cluster and sets it, with PREFORK_REQUIRE_POSTGRES=1 so it can never be
skipped there).

This file: the in-process tests; tests/e2e/test_db_e2e.py has those with
server processes, subprocesses and sockets."""

from prefork.apps.db import FORTUNES, queries_param, redact, render_fortunes
from testkit import EXPECTED_FORTUNES


def test_render_fortunes_escapes_everything():
    out = render_fortunes([(1, "<b>&\"'</b>")]).decode()
    assert "<td>&lt;b&gt;&amp;&quot;&#x27;&lt;/b&gt;</td>" in out
    assert render_fortunes(FORTUNES) == EXPECTED_FORTUNES


def test_queries_param_unit():
    assert queries_param(b"") == 1
    assert queries_param(b"queries=12") == 12
    assert queries_param(b"a=1&queries=600") == 500
    assert queries_param(b"queries=foo") == 1
    assert queries_param(b"queries=0") == 1


def test_redact():
    assert redact("postgresql://u:pw@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert redact("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
