"""The TechEmpower database test types over the wire, on SQLite and PostgreSQL.

PostgreSQL runs when PREFORK_TEST_POSTGRES_URL is set (``.ci/run`` starts a
cluster and sets it, with PREFORK_REQUIRE_POSTGRES=1 so it can never be
skipped there).

This file: the in-process tests; tests/e2e/test_db_e2e.py has those with
server processes, subprocesses and sockets."""

from prefork.apps.db import FORTUNES, queries_param, redact, render_fortunes


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
