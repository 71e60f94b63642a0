"""`reprodctl admin migrate`: a reprodd RocksDB data dir with more than
1,000 tensors moves to postgres+s3 (a real PostgreSQL 15 and Ceph radosgw,
tests/services/), is SIGKILLed part-way, resumes, and reprodd on the new
store then serves what the old one served.

Oracles: the source reprodd's own listings (runs, tensor headers in
sequence order, reports), numpy bytes regenerated from their seeds, psql
(no upload left over) and an independent S3 client (one object per
non-empty tensor).
"""
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from conftest import REPRODCTL, Reprodd, run_reprodctl  # noqa: E402
from reprod_client import Client  # noqa: E402
from services._common import ServiceError  # noqa: E402
from services.fixtures import ceph_s3, postgres_server  # noqa: E402,F401
from services.s3curl import S3_NS, S3Curl  # noqa: E402

BUCKET = "reprod-migrate"
# run -> (tensors, final state); "mig/steps" logs at steps, "mig/cand"
# differs from "mig/ref" in a few tensors.
RUNS = {"mig/ref": (420, "sealed"), "mig/cand": (420, "sealed"),
        "mig/steps": (150, "open"), "mig/gone": (30, "aborted")}
TOTAL = sum(n for n, _ in RUNS.values())


def tensor(run, i):
    # Mostly 1 KiB, every 50th 256 KiB, one 3 MiB (ref and cand): the count
    # matters here, not the sizes. "mig/cand" is "mig/ref" with a few changes.
    base = "mig/ref" if run == "mig/cand" else run
    size = 256 if i % 50 else 64 * 1024
    if base == "mig/ref" and i == 7:
        size = 3 * 256 * 1024
    t = np.random.default_rng(1000 * sorted(RUNS).index(base) + i).standard_normal(size)
    t = t.astype(np.float32)
    if run == "mig/cand" and i % 97 == 5:
        t[:3] += 1.0
    return t


def key(i):
    return f"t{i:04d}"


def fill(address):
    """The runs of RUNS, and one stored compare report; returns its id."""
    with Client(address) as c:
        for run, (n, state) in RUNS.items():
            r = c.open_run(run, framework="paddle" if run == "mig/cand" else "torch",
                           labels={"paper": "bert", "run": run})
            for i in range(n):
                if run == "mig/steps":
                    r.log("loss", {"v": tensor(run, i)}, step=i)
                else:
                    r.log("fwd", {key(i): tensor(run, i)})
            if state == "sealed":
                r.seal()
            else:
                r.close()  # every tensor acknowledged (abort() would not wait)
                if state == "aborted":
                    c.seal_run(run, abort=True)
        return c.compare("mig/ref", "mig/cand").id


def snapshot(address):
    """Runs (metadata), their tensor headers in sequence order, report ids."""
    with Client(address) as c:
        runs = {r.name: r for r in c.runs()}
        tensors = {name: [(t.checkpoint, t.key, t.step, t.rank, t.dtype, t.shape,
                           t.byte_length, t.crc32c) for t in c.list_tensors(name)]
                   for name in runs}
        reports = sorted(r.id for r in c.reports())
    return runs, tensors, reports


def psql_int(postgres_server, sql):
    try:
        return int(postgres_server.psql(sql).strip())
    except ServiceError:  # the schema does not exist yet
        return 0


def s3_object_count(ceph_s3, prefix):
    s3 = S3Curl(ceph_s3.endpoint, ceph_s3.access_key, ceph_s3.secret_key)
    count, token = 0, None
    while True:
        query = {"list-type": "2", "prefix": prefix}
        if token:
            query["continuation-token"] = token
        r = s3.request("GET", f"/{BUCKET}", query=query)
        assert r.status == 200, r
        doc = r.xml()
        count += len(list(doc.iter(f"{S3_NS}Contents")))
        token = doc.findtext(f"{S3_NS}NextContinuationToken")
        if not token:
            return count


SUMMARY = re.compile(r"migrated (\d+) runs to postgres\+s3: (\d+) tensors copied, (\d+) skipped "
                     r"\(already there\), (\d+) verified; (\d+) bytes .*; (\d+) reports, "
                     r"(\d+) auth records; ([\d.]+) s \(([\d.]+) tensors/s, ([\d.]+) MB/s\)")


def test_migrate_rocksdb_to_postgres_s3_resumes_and_verifies(postgres_server, ceph_s3,
                                                             tmp_path, monkeypatch):
    if not REPRODCTL.exists():
        pytest.fail(f"reprodctl not built at {REPRODCTL} (set REPROD_BIN_DIR)")
    data = tmp_path / "data"
    (tmp_path / "src").mkdir()
    source = Reprodd(tmp_path / "src", store="rocksdb", data_dir=data)
    schema = "mig_" + uuid.uuid4().hex[:10]
    flags = ["--to", "postgres+s3", "--pg-url", postgres_server.url, "--pg-schema", schema,
             "--s3-endpoint", ceph_s3.endpoint, "--s3-bucket", BUCKET,
             "--s3-region", ceph_s3.region, "--s3-prefix", schema + "/"]
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ceph_s3.access_key,
               AWS_SECRET_ACCESS_KEY=ceph_s3.secret_key)
    migrate = [str(REPRODCTL), "admin", "migrate", "--from", str(data)] + flags
    try:
        report_id = fill(source.address)
        want_runs, want_tensors, want_reports = snapshot(source.address)
        # While reprodd holds the data dir: refused, saying why (exit 2).
        locked = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=60)
        assert locked.returncode == 2, locked
        assert "stop it first" in locked.stderr, locked.stderr
    finally:
        source.stop()
    assert sum(len(t) for t in want_tensors.values()) == TOTAL >= 1000
    assert report_id in want_reports
    assert {n: r.state for n, r in want_runs.items()} == {n: s for n, (_, s) in RUNS.items()}

    # No credentials: bad input, nothing started.
    bare = {k: v for k, v in env.items() if not k.startswith("AWS_")}
    no_keys = subprocess.run(migrate, env=bare, capture_output=True, text=True, timeout=60)
    assert no_keys.returncode == 2 and "AWS_ACCESS_KEY_ID" in no_keys.stderr, no_keys

    # First try: SIGKILLed once at least 200 tensors are in.
    log = open(tmp_path / "migrate1.log", "w")
    proc = subprocess.Popen(migrate, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 60
        while (psql_int(postgres_server, f"SELECT count(*) FROM {schema}.tensors") < 200
               and proc.poll() is None and time.time() < deadline):
            time.sleep(0.05)
        assert proc.poll() is None, (tmp_path / "migrate1.log").read_text()[-3000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == -signal.SIGKILL
    in_before = psql_int(postgres_server, f"SELECT count(*) FROM {schema}.tensors")
    assert 200 <= in_before < TOTAL, in_before

    # Second try: resumes and finishes.
    done = subprocess.run(migrate, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done
    m = SUMMARY.search(done.stdout)
    assert m, done.stdout
    runs, copied, skipped, verified, _, reports, _, seconds, tps, mbps = m.groups()
    assert int(runs) == len(RUNS)
    assert int(skipped) >= in_before and int(copied) + int(skipped) == TOTAL, done.stdout
    assert int(verified) == TOTAL
    assert int(reports) == 1
    print(f"\nmigrate resumed: {copied} copied + {skipped} skipped in {seconds} s "
          f"({tps} tensors/s, {mbps} MB/s, with read-back verification)")
    assert "migrate: run " in done.stderr or float(seconds) < 1.0, done.stderr

    # A third run copies nothing.
    again = subprocess.run(migrate + ["--no-verify"], env=env, capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again
    m = SUMMARY.search(again.stdout)
    assert m and int(m.group(2)) == 0 and int(m.group(3)) == TOTAL and int(m.group(4)) == 0, again

    # Another data dir whose run of the same name differs: refused (exit 2),
    # nothing overwritten.
    (tmp_path / "other").mkdir()
    other = Reprodd(tmp_path / "other", store="rocksdb", data_dir=tmp_path / "other" / "data")
    try:
        with Client(other.address) as c:
            r = c.open_run("mig/gone", framework="jax")
            r.log("fwd", {key(0): tensor("mig/gone", 0)})
            r.close()
    finally:
        other.stop()
    conflict = subprocess.run([str(REPRODCTL), "admin", "migrate", "--from",
                               str(tmp_path / "other" / "data")] + flags,
                              env=env, capture_output=True, text=True, timeout=120)
    assert conflict.returncode == 2, conflict
    assert "mig/gone" in conflict.stderr and "framework" in conflict.stderr, conflict.stderr

    # reprodd on the new store serves what the old one did.
    (tmp_path / "dst").mkdir()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_s3.secret_key)
    dest = Reprodd(tmp_path / "dst", store="rocksdb", data_dir=tmp_path / "dst" / "unused",
                   extra_args=["--store", "postgres+s3"] + flags[2:])
    try:
        got_runs, got_tensors, got_reports = snapshot(dest.address)
        assert got_runs == want_runs
        assert got_tensors == want_tensors
        assert got_reports == want_reports
        with Client(dest.address) as c:
            for run, i in [("mig/ref", 0), ("mig/ref", 7), ("mig/ref", 419), ("mig/cand", 5),
                           ("mig/cand", 200), ("mig/gone", 29)]:
                np.testing.assert_array_equal(c.read_tensor(run, "fwd", key(i)), tensor(run, i))
            np.testing.assert_array_equal(c.read_tensor("mig/steps", "loss", "v", step=149),
                                          tensor("mig/steps", 149))
            stored = c.get_report(report_id)
            assert stored.passed is False
        # The killed try's upload (if one was in flight) went at a sweep.
        compact = run_reprodctl("--server", dest.address, "admin", "compact")
        assert compact.code == 0, compact
    finally:
        dest.stop()
    assert psql_int(postgres_server, f"SELECT count(*) FROM {schema}.uploads") == 0
    rows = psql_int(postgres_server,
                    f"SELECT count(*) FROM {schema}.tensors WHERE object_key IS NOT NULL")
    assert rows == TOTAL
    assert s3_object_count(ceph_s3, schema + "/") == rows
