"""reprodd --log-format json: every line of a real server's log is one JSON
object (json.loads is the oracle) with time, level and msg, also when a
request path carries quotes, backslashes and escaped control bytes."""
import json
import re
import warnings

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Debian's requests warns about urllib3's version
    import requests

from conftest import Reprodd
from reprod_client import Client


def test_json_log_lines_parse(tmp_path):
    server = Reprodd(tmp_path, extra_args=["--log-format", "json"], log_level="debug")
    try:
        with Client(server.address) as client:
            run = client.open_run("logs/json")
            run.log("forward", {"x": np.arange(4, dtype=np.float32)}, step=0)
            run.seal()
        # A run page of an invalid run name: 400, and the debug line of the
        # request shows the decoded path.
        hostile = '/runs/no/"quoted"\\back%09tab%1B'
        r = requests.get(f"http://127.0.0.1:{server.http_port}{hostile}", timeout=30)
        assert r.status_code == 400, r.status_code
    finally:
        server.stop()
    lines = (tmp_path / "reprodd.log").read_text().splitlines()
    assert len(lines) > 3
    records = [json.loads(line) for line in lines]
    for rec in records:
        assert set(rec) == {"time", "level", "msg"}, rec
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", rec["time"]), rec
    assert any(rec["msg"].startswith("store: memory") for rec in records), records[:5]
    # The decoded path: quotes and backslash exact, tab and ESC shown as
    # visible escapes (common/visible.h), never raw.
    shown = [rec["msg"] for rec in records if "/no/" in rec["msg"]]
    assert shown, lines[-10:]
    assert any('/no/"quoted"\\back\\ttab\\x1b' in m for m in shown), shown
