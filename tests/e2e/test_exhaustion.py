"""Running out of things, with the server still serving: a full disk under
the access log. (The fd limit, the connection cap, a full thread-pool queue
and a locked database are in test_server_e2e, test_apps and test_db.)"""

from __future__ import annotations

import os

import pytest

from conftest import Client, wait_until

GET = b"GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_access_log_on_a_full_disk_is_reported_once_and_serving_goes_on(start_server, tmp_path):
    srv = start_server(server="workers = 1", names=("http",), http="keepalive_requests = 10000000",
                       extra=f'\n[log]\naccess_log = "/dev/full"\nerror_log = "{tmp_path}/error.log"\n')
    srv.wait_workers(1)
    c = Client(srv.connect())
    for _ in range(3000):  # about 300 KB of log lines: many flushes fail with ENOSPC
        c.send(GET)
        assert c.response()[0] == 200
    wait_until(lambda: "access log /dev/full" in srv.log(), what="the access-log error in the error log")
    for _ in range(500):
        c.send(GET)
        assert c.response()[0] == 200
    log = srv.log()
    assert log.count("access log /dev/full") == 1, log
    assert "No space left on device" in log
