"""bench/run_scaleout_bench.py --quick runs end to end against the built reprodd,
a throwaway PostgreSQL and a throwaway Ceph radosgw.

A smoke test so the scale-out benchmark cannot rot: the four curl yardsticks
(PUT/GET, 1 and 2 streams) and the two GETs of the compare's own objects, ingest into 1 and 2
replicas (a later step, and a cold client's first step) and the compare on 1 and 2 replicas are
all measured (positive times and throughputs, each
throughput = bytes / median time), the four goal ratios are the measured
throughputs divided by their yardsticks with `met` matching the 70 % goal,
and no process, temporary folder or service folder of the run is left.
It runs with --https, so the TLS set-up (radosgw's certificate from a
throwaway CA, curl --cacert, reprodd --s3-ca-file, unsigned payloads) is the
one exercised; plain http is the path every other postgres+s3 test takes.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from conftest import BIN_DIR, ROOT, processes_naming  # noqa: E402
from services._common import ServiceUnavailable  # noqa: E402
from services.ceph_rgw import CephRgw  # noqa: E402
from services.postgres import PostgresServer  # noqa: E402
from services.s3curl import require_curl_sigv4  # noqa: E402

SCRIPT = ROOT / "bench" / "run_scaleout_bench.py"
ROWS = ["S3 PUT, curl, 1 stream", "S3 PUT, curl, 2 parallel streams", "S3 GET, curl, 1 stream",
        "S3 GET, curl, 2 parallel streams", "compare's own", "compare's own",
        "ingest, reprod_client log/close, a later step", "ingest, 2 reprod_client",
        "1 replica", "2 replicas", "the first step (cold client)", "the first step (cold clients)"]


def test_quick_run_writes_every_row_and_ratio(tmp_path):
    try:  # the binaries the bench needs; the services' fixtures skip the same way
        PostgresServer(start=False)
        CephRgw(start=False)
        require_curl_sigv4()
    except ServiceUnavailable as e:
        pytest.skip(str(e))
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--https", "--bin-dir", str(BIN_DIR),
         "--out", str(tmp_path / "scaleout")], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"\nbench --quick: {time.monotonic() - started:.1f} s")
    res = json.loads((tmp_path / "scaleout.json").read_text())
    md = (tmp_path / "scaleout.md").read_text()

    assert res["settings"] == {**res["settings"], "total_mib": 16, "tensor_mib": 4,
                               "repeats": 1, "quick": True, "goal": 0.70,
                               "s3_scheme": "https"}
    assert "UNSIGNED-PAYLOAD" in md  # https: neither curl nor reprodd hashes payloads
    assert res["machine"]["nproc"] >= 1 and res["machine"]["ram_gib"] > 0
    assert res["versions"]["ceph"].startswith("ceph version ")
    assert "PostgreSQL" in res["versions"]["postgres"]
    assert len(res["git_commit"]) == 40

    rows = res["rows"]
    assert len(rows) == len(ROWS)
    for r, want in zip(rows, ROWS):
        assert want in r["name"], (want, r["name"])
        assert len(r["samples_s"]) == 1 and r["seconds"] == r["samples_s"][0] > 0, r
        assert r["MBps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e6), r
        assert r["MBps"] > 0, r
        assert r["name"] in md
    payload = 16 << 20
    # Yardsticks and ingest move the payload, the compare rows both BERT runs.
    assert [r["bytes"] for r in rows[:4] + rows[6:8] + rows[10:]] == [payload] * 8
    bert = res["compare"]["elements_per_run"] * 4 * 2
    assert [r["bytes"] for r in rows[4:6] + rows[8:10]] == [bert] * 4 and bert > 0
    assert "1 stream" in rows[4]["name"] and "2 parallel" in rows[5]["name"]
    for r in rows[6:]:  # the replicas' CPU time was counted
        assert any(k.startswith("replica A") and v > 0 for k, v in r["cpu_s"].items()), r
    for i in (7, 9, 11):
        assert "replica B" in rows[i]["cpu_s"], rows[i]
    for i in (6, 8, 10):
        assert "replica B" not in rows[i]["cpu_s"], rows[i]

    mbps = [r["MBps"] for r in rows]
    want_ratios = [("ingest 1 replica / S3 PUT 1 stream", mbps[6] / mbps[0]),
                   ("ingest 2 replicas / S3 PUT 2 streams", mbps[7] / mbps[1]),
                   ("compare 1 replica / S3 GET 1 stream", mbps[8] / mbps[2]),
                   ("compare 2 replicas / S3 GET 2 streams", mbps[9] / mbps[3])]
    assert [r["name"] for r in res["ratios"]] == [n for n, _ in want_ratios]
    for r, (_, value) in zip(res["ratios"], want_ratios):
        assert r["value"] == pytest.approx(value) and r["value"] > 0, r
        assert r["goal"] == 0.70 and r["goal_kind"] == "min"
        assert r["met"] == (r["value"] >= 0.70), r
        # One repeat: its yardstick/measurement pair is the ratio itself.
        assert r["per_repeat"] == [pytest.approx(value)], r
        assert r["name"] in md and ("yes" if r["met"] else "**no**") in md
    context = {r["name"]: r["value"] for r in res["context_ratios"]}
    assert len(context) == 10 and all(v > 0 for v in context.values()), context
    assert context["ingest 1 replica, first step (cold client) / S3 PUT 1 stream"] == \
        pytest.approx(mbps[10] / mbps[0])
    assert context["ingest 2 replicas, first step (cold clients) / S3 PUT 2 streams"] == \
        pytest.approx(mbps[11] / mbps[1])
    assert context["compare 1 replica / S3 GET of its own objects, 1 stream"] == \
        pytest.approx(mbps[8] / mbps[4])
    assert context["2 replicas / 1 replica, compare"] == pytest.approx(mbps[9] / mbps[8])
    assert "Everything shares these" in md
    # One compare per replica count; B ran only for the 2-replica one.
    assert res["compare"]["batches_by_b_1"] == [0]
    assert len(res["compare"]["batches_by_b_2"]) == 1

    # Everything the bench started or made is gone.
    assert len(res["temp_dirs"]) == 3
    for d in res["temp_dirs"]:
        assert not os.path.exists(d), d
        assert processes_naming(d) == [], d
