"""Several reprodd replicas over one PostgreSQL + S3 store (issue [L]):
a real PostgreSQL 15 and Ceph radosgw (tests/services/), reprodd processes
started with --store postgres+s3 on the same schema and bucket prefix.

* Failover: a client given "A,B" streams to replica A while a watcher on
  replica B sees every verdict; A is SIGKILLed mid-ingest, the client goes
  on on B, resending what A had not acknowledged; the compare on B equals
  (same JSON statistics) the compare of the same data on one reprodd with
  the embedded RocksDB store; nothing acknowledged is lost.
* Crash leftovers: a replica SIGKILLed in the middle of a multipart upload
  leaves no visible tensor, and a live replica's sweep (reprodctl admin
  compact) reclaims its upload: no uploads row, no unfinished multipart
  upload, and exactly one object per stored tensor.

Oracles: the embedded store's own report, numpy bytes, psql and an
independent S3 client (curl's SigV4).
"""
import json
import subprocess
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from conftest import REPRODD, Reprodd, run_reprodctl  # noqa: E402
from reprod_client import Client  # noqa: E402
from services.fixtures import ceph_s3, postgres_server  # noqa: E402,F401
from services.s3curl import S3_NS, S3Curl  # noqa: E402

MIB = 1 << 20
BUCKET = "reprod-replicas"
SIZES = [1024, 256 * 1024, 2 * MIB, 24 * MIB]  # floats32 bytes; 24 MiB is multipart


@pytest.fixture
def shared(postgres_server, ceph_s3, monkeypatch, tmp_path):
    """reprodd arguments for one fresh schema + prefix on the shared
    engines; the S3 keys travel in the environment, never in argv."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_s3.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_s3.secret_key)
    name = "rep_" + uuid.uuid4().hex[:10]
    args = ["--store", "postgres+s3", "--pg-url", postgres_server.url, "--pg-schema", name,
            "--s3-endpoint", ceph_s3.endpoint, "--s3-bucket", BUCKET,
            "--s3-prefix", name + "/"]
    servers = []

    def start(sub):
        d = tmp_path / sub
        d.mkdir(exist_ok=True)
        server = Reprodd(d, store="rocksdb", data_dir=d / "unused", extra_args=args,
                         log_level="info")
        servers.append(server)
        return server

    try:
        yield start, name
    finally:
        for s in servers:
            s.kill()


def tensor(run_no, i):
    # Sizes cycle through SIZES, the 24 MiB (multipart) one every 8th.
    size = SIZES[i % len(SIZES)] if i % 8 == 3 or i % len(SIZES) != 3 else SIZES[2]
    return np.random.default_rng(1000 * run_no + i).standard_normal(size // 4).astype(np.float32)


def cand_tensor(i):
    t = tensor(0, i).copy()
    if i % 5 == 2:  # a few pairs differ: fail verdicts among the passes
        t[: min(7, t.size)] += 0.5
    return t


N = 24


def push_all(client, name, make):
    run = client.open_run(name, framework="torch")
    for i in range(N):
        run.log("fwd", {f"t{i:02d}": make(i)})
    run.seal()


def s3_objects(ceph_s3, prefix):
    """Keys of the objects under prefix (one listing page is plenty here)."""
    s3 = S3Curl(ceph_s3.endpoint, ceph_s3.access_key, ceph_s3.secret_key)
    r = s3.request("GET", f"/{BUCKET}", query={"list-type": "2", "prefix": prefix})
    assert r.status == 200, r
    return [c.findtext(f"{S3_NS}Key") for c in r.xml().iter(f"{S3_NS}Contents")]


def s3_uploads(ceph_s3, prefix):
    """Keys of the unfinished multipart uploads under prefix."""
    s3 = S3Curl(ceph_s3.endpoint, ceph_s3.access_key, ceph_s3.secret_key)
    r = s3.request("GET", f"/{BUCKET}", query={"uploads": "", "prefix": prefix})
    assert r.status == 200, r
    return [u.findtext(f"{S3_NS}Key") for u in r.xml().iter(f"{S3_NS}Upload")]


def psql_int(postgres_server, sql):
    return int(postgres_server.psql(sql).strip())


def tensor_stats(report):
    doc = json.loads(report.json())
    return {(t["checkpoint"], t["key"]): (t["status"], t.get("stats")) for t in doc["tensors"]}


def test_failover_to_a_second_replica_loses_nothing(shared, postgres_server, ceph_s3, tmp_path):
    start, name = shared
    a, b = start("a"), start("b")
    with Client(f"{a.address},{b.address}") as both:
        push_all(both, "rep/ref", lambda i: tensor(0, i))

    verdicts, reports, errors = [], [], []

    def watch():
        try:
            with Client(b.address) as watcher:
                for event in watcher.watch("rep/ref", "rep/cand", wait=60, timeout=300):
                    (verdicts if isinstance(event, dict) else reports).append(event)
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with Client(f"{a.address},{b.address}") as both:
        run = both.open_run("rep/cand", framework="paddle")
        for i in range(N // 2):
            run.log("fwd", {f"t{i:02d}": cand_tensor(i)})
        # SIGKILL A while it has acknowledged some tensors and others are
        # still on the wire: the rest, and what A never acknowledged, go to B.
        deadline = time.time() + 120
        while run.stats.acked < N // 4 and time.time() < deadline:
            time.sleep(0.005)
        in_flight = run.pending_bytes
        acked_by_a = run.stats.acked
        a.proc.kill()
        a.proc.wait(timeout=30)
        for i in range(N // 2, N):
            run.log("fwd", {f"t{i:02d}": cand_tensor(i)})
        run.seal()
        stats = run.stats
    watcher.join(timeout=300)
    assert not watcher.is_alive() and not errors, errors
    assert acked_by_a >= N // 4 and in_flight > 0, (acked_by_a, in_flight)
    assert stats.reconnects >= 1 and stats.resent >= 1, stats

    # The watcher on B saw every pair once, then the final report.
    assert sorted(v["key"] for v in verdicts) == [f"t{i:02d}" for i in range(N)]
    assert len(reports) == 1

    # Nothing acknowledged was lost: every tensor is on B, byte for byte.
    with Client(b.address) as on_b:
        listed = {t.key for t in on_b.list_tensors("rep/cand")}
        assert listed == {f"t{i:02d}" for i in range(N)}
        for i in (0, N // 2, N // 2 + 1, N - 1):
            np.testing.assert_array_equal(on_b.read_tensor("rep/cand", "fwd", f"t{i:02d}"),
                                          cand_tensor(i))
        replicated = on_b.compare("rep/ref", "rep/cand")

    # The same data on one reprodd with the embedded store: same statistics.
    (tmp_path / "single").mkdir()
    single = Reprodd(tmp_path / "single", store="rocksdb", data_dir=tmp_path / "single" / "data")
    try:
        with Client(single.address) as one:
            push_all(one, "rep/ref", lambda i: tensor(0, i))
            push_all(one, "rep/cand", cand_tensor)
            embedded = one.compare("rep/ref", "rep/cand")
    finally:
        single.stop()
    assert replicated.passed == embedded.passed is False
    assert tensor_stats(replicated) == tensor_stats(embedded)
    assert reports[0].passed == embedded.passed
    assert tensor_stats(reports[0]) == tensor_stats(embedded)

    # A's leftovers (an upload in flight when it died, if any) go at B's sweep.
    compact = run_reprodctl("--server", b.address, "admin", "compact")
    assert compact.code == 0, compact
    assert psql_int(postgres_server, f"SELECT count(*) FROM {name}.uploads") == 0
    rows = psql_int(postgres_server, f"SELECT count(*) FROM {name}.tensors "
                                     "WHERE object_key IS NOT NULL")
    assert rows == 2 * N
    assert len(s3_objects(ceph_s3, name + "/")) == rows


def test_replica_killed_mid_upload_leaves_nothing_visible_and_no_orphan(
        shared, postgres_server, ceph_s3):
    start, name = shared
    live = start("live")
    big = np.random.default_rng(7).standard_normal(80 * MIB // 4).astype(np.float32)
    for round_no in range(3):
        doomed = start(f"doomed{round_no}")
        done = []

        def push():
            try:
                with Client(doomed.address, reconnect_timeout=1) as c:
                    run = c.open_run("crash/big", framework="torch")
                    run.log("fwd", {f"big{round_no}": big})
                    run.close()
                    done.append(True)
            except Exception:  # noqa: BLE001 - the kill ends it
                pass

        pusher = threading.Thread(target=push)
        pusher.start()
        # Kill once a multipart upload has parts in S3 (an uploads row with
        # its upload id), i.e. mid-upload.
        deadline = time.time() + 60
        while time.time() < deadline and psql_int(
                postgres_server,
                f"SELECT count(*) FROM {name}.uploads WHERE upload_id IS NOT NULL") == 0:
            time.sleep(0.05)
        assert time.time() < deadline, "the upload never started"
        doomed.proc.kill()
        doomed.proc.wait(timeout=30)
        pusher.join(timeout=60)
        assert not done, "the tensor was committed before the kill: nothing tested"
        assert s3_uploads(ceph_s3, name + "/"), "no upload was in flight"

        with Client(live.address) as client:
            assert client.list_tensors("crash/big") == []  # nothing visible
        compact = run_reprodctl("--server", live.address, "admin", "compact")
        assert compact.code == 0, compact
        assert psql_int(postgres_server, f"SELECT count(*) FROM {name}.uploads") == 0
        assert s3_uploads(ceph_s3, name + "/") == []
        assert s3_objects(ceph_s3, name + "/") == []


def test_channel_target_lists_replicas_in_order():
    from reprod_client.client import channel_target
    assert channel_target("reprod.lan:50051") == "reprod.lan:50051"
    assert channel_target("127.0.0.1:5001,127.0.0.2:5002") == "ipv4:127.0.0.1:5001,127.0.0.2:5002"
    assert channel_target("localhost:7, 127.0.0.1:8") == "ipv4:127.0.0.1:7,127.0.0.1:8"
    assert channel_target("[::1]:7,[::1]:8") == "ipv6:[::1]:7,[::1]:8"
    with pytest.raises(ValueError, match="mix IPv4 and IPv6"):
        channel_target("127.0.0.1:7,[::1]:8")
    with pytest.raises(ValueError, match="'nocolon'"):
        channel_target("127.0.0.1:7,nocolon")


def bert_base_shapes():
    """The parameter shapes of BERT-base (110 M parameters, 440 MB float32)."""
    shapes = {"embeddings/word": (30522, 768), "embeddings/position": (512, 768),
              "embeddings/type": (2, 768), "embeddings/ln_w": (768,), "embeddings/ln_b": (768,)}
    for layer in range(12):
        p = f"encoder/{layer}/"
        for name in ("q", "k", "v", "o"):
            shapes[p + name + "_w"] = (768, 768)
            shapes[p + name + "_b"] = (768,)
        shapes[p + "ffn_in_w"] = (3072, 768)
        shapes[p + "ffn_in_b"] = (3072,)
        shapes[p + "ffn_out_w"] = (768, 3072)
        shapes[p + "ffn_out_b"] = (768,)
        for ln in ("ln1", "ln2"):
            shapes[p + ln + "_w"] = (768,)
            shapes[p + ln + "_b"] = (768,)
    shapes["pooler_w"] = (768, 768)
    shapes["pooler_b"] = (768,)
    return shapes


def bert_tensors(seed, noise):
    rng = np.random.default_rng(seed)
    out = {}
    for i, (key, shape) in enumerate(bert_base_shapes().items()):
        base = np.random.default_rng(i).random(shape, dtype=np.float32) - 0.5
        if noise:
            base += rng.random(shape, dtype=np.float32) * np.float32(noise)
        out[key] = base
    return out


def push_bert(client, name, seed, noise):
    run = client.open_run(name, framework="torch")
    for key, value in bert_tensors(seed, noise).items():
        run.log("weights", {key: value})
    run.seal()


def test_distributed_compare_matches_one_process(shared, postgres_server, tmp_path):
    start, name = shared
    a, b = start("a"), start("b")
    with Client(a.address) as client:
        push_bert(client, "bert/ref", 0, 0)
        push_bert(client, "bert/cand", 1, 1e-6)
        started = time.time()
        distributed = client.compare("bert/ref", "bert/cand")
        seconds = time.time() - started
    log_a = (tmp_path / "a" / "reprodd.log").read_text()
    log_b = (tmp_path / "b" / "reprodd.log").read_text()
    assert "distributed compare bert/ref vs bert/cand" in log_a, log_a[-3000:]
    assert "compare worker: job" in log_b, "replica B reduced no batch"

    (tmp_path / "single").mkdir()
    single = Reprodd(tmp_path / "single", store="rocksdb", data_dir=tmp_path / "single" / "data")
    try:
        with Client(single.address) as one:
            push_bert(one, "bert/ref", 0, 0)
            push_bert(one, "bert/cand", 1, 1e-6)
            alone = one.compare("bert/ref", "bert/cand")
    finally:
        single.stop()
    got, want = tensor_stats(distributed), tensor_stats(alone)
    assert got.keys() == want.keys() and len(got) == len(bert_base_shapes())
    for key, (status, stats) in want.items():
        g_status, g_stats = got[key]
        assert g_status == status, key
        for field, value in stats.items():
            if isinstance(value, float) and field.startswith(("sum", "mean", "rms", "cos")):
                assert g_stats[field] == pytest.approx(value, rel=1e-12, abs=0), (key, field)
            else:
                assert g_stats[field] == value, (key, field)  # counts, extrema, indices
    print(f"\ndistributed compare of two BERT-base runs on 2 replicas: {seconds:.1f} s")


def test_s3_part_size_sets_the_multipart_parts(shared, postgres_server, ceph_s3, tmp_path):
    # Oracle: S3's own ETag of a multipart object ends in "-<parts>"; one PUT's
    # has no suffix. 12 MiB is one PUT at the default 16 MiB part size and
    # 3 parts (5 + 5 + 2 MiB) at --s3-part-size 5 MiB.
    start, name = shared
    data = np.random.default_rng(5).standard_normal(12 * MIB // 4).astype(np.float32)

    def etags_after_push(server, run_name):
        with Client(server.address) as client:
            run = client.open_run(run_name, framework="torch")
            run.log("fwd", {"w": data})
            run.seal()
            np.testing.assert_array_equal(client.read_tensor(run_name, "fwd", "w"), data)
        s3 = S3Curl(ceph_s3.endpoint, ceph_s3.access_key, ceph_s3.secret_key)
        r = s3.request("GET", f"/{BUCKET}", query={"list-type": "2", "prefix": name + "/"})
        assert r.status == 200, r
        return {c.findtext(f"{S3_NS}ETag").strip('"') for c in r.xml().iter(f"{S3_NS}Contents")}

    default = start("default")
    before = etags_after_push(default, "parts/default")
    assert len(before) == 1 and "-" not in next(iter(before)), before
    default.kill()

    d = tmp_path / "small-parts"
    d.mkdir()
    args = ["--store", "postgres+s3", "--pg-url", postgres_server.url, "--pg-schema", name,
            "--s3-endpoint", ceph_s3.endpoint, "--s3-bucket", BUCKET, "--s3-prefix", name + "/",
            "--s3-part-size", str(5 * MIB)]
    small = Reprodd(d, store="rocksdb", data_dir=d / "unused", extra_args=args)
    try:
        after = etags_after_push(small, "parts/small") - before
    finally:
        small.kill()
    assert len(after) == 1 and next(iter(after)).endswith("-3"), after


def test_s3_part_size_below_the_s3_minimum_is_refused(tmp_path):
    proc = subprocess.run([str(REPRODD), "--store", "postgres+s3", "--s3-part-size", "1000"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode != 0
    assert "--s3-part-size" in proc.stderr + proc.stdout, proc
