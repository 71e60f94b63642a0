"""Quotas against a real reprodd (server/quota_ledger.h): tensors in flight
count against --namespace-quota-bytes and --quota-bytes, so concurrent
uploads end with the stored bytes within the quota and the rest refused
with RESOURCE_EXHAUSTED; a submitter token's own --quota-bytes replaces the
namespace default (more or less); usage survives a restart."""
import json
import re
import subprocess
import threading
import time

import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
import grpc  # noqa: E402
from conftest import REPRODD, Reprodd, run_reprodctl  # noqa: E402
from reprod_client.client import _PB as pb  # noqa: E402
from reprod_client.crc32c import crc32c  # noqa: E402

MiB = 1 << 20


def stored_bytes(client, prefix):
    """What the server's run list says is stored under `prefix` (the oracle)."""
    return sum(r.total_bytes for r in client.runs(prefix))


def held_stream_requests(run, key, data, release):
    """BeginTensor for `data`, its first half, then (after `release`) the rest."""
    address = pb.tensor.TensorAddress(checkpoint="ck", key=key)
    header = pb.tensor.TensorHeader(address=address, dtype=pb.tensor.DTYPE_UINT8,
                                    shape=[len(data)], byte_length=len(data),
                                    crc32c=crc32c(data))
    yield pb.ingest.IngestRequest(begin=pb.ingest.BeginTensor(
        run=run, tensor_id=1, header=header)).SerializeToString()
    half = len(data) // 2
    yield pb.ingest.IngestRequest(chunk=pb.tensor.TensorChunk(
        offset=0, data=data[:half])).SerializeToString()
    release.wait()
    yield pb.ingest.IngestRequest(chunk=pb.tensor.TensorChunk(
        offset=half, data=data[half:])).SerializeToString()


def consume(call, out, k):
    acks = 0
    try:
        for _ in call:
            acks += 1
        out[k] = (grpc.StatusCode.OK, "", acks)
    except grpc.RpcError as e:
        out[k] = (e.code(), e.details(), acks)


def test_tensors_in_flight_count_against_the_quota(tmp_path):
    # Five streams each begin a 1 MiB tensor and stop halfway: with a 3 MiB
    # namespace quota the first three are admitted, the last two refused at
    # once although nothing is stored yet. Released, the three commit.
    server = Reprodd(tmp_path, extra_args=["--namespace-quota-bytes", str(3 * MiB),
                                           "--stream-idle-timeout", "0"])
    release = threading.Event()
    try:
        client = reprod_client.Client(server.address)
        for k in range(5):
            client.open_run(f"held/r{k}", framework="test").close()
        ends, threads = {}, []
        for k in range(5):
            data = np.random.default_rng(k).integers(0, 256, MiB, dtype=np.uint8).tobytes()
            call = client._ingest_raw(held_stream_requests(f"held/r{k}", "x", data, release))
            t = threading.Thread(target=consume, args=(call, ends, k))
            t.start()
            threads.append(t)
            if k < 3:
                time.sleep(0.3)  # begun before the next stream starts
        deadline = time.time() + 10
        while len(ends) < 2 and time.time() < deadline:
            time.sleep(0.05)
        assert sorted(ends) == [3, 4], ends
        for k in (3, 4):
            code, details, acks = ends[k]
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, ends[k]
            assert acks == 0
            assert (f"namespace 'held' stores 0 bytes, {3 * MiB} more in flight; {MiB} more "
                    f"would pass its {3 * MiB}-byte limit (--namespace-quota-bytes)") in details
        assert stored_bytes(client, "held/") == 0
        release.set()
        for t in threads:
            t.join(timeout=30)
        assert [ends[k][:1] + ends[k][2:] for k in range(3)] == [(grpc.StatusCode.OK, 1)] * 3
        assert stored_bytes(client, "held/") == 3 * MiB
        # Full now: one more byte is refused, naming what is stored.
        r = client.open_run("held/more", framework="test")
        r.log("ck", {"b": np.zeros(1, np.uint8)})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush()
        assert f"namespace 'held' stores {3 * MiB} bytes, 0 more in flight" in str(err.value)
        r.abort()
        client.close()
    finally:
        release.set()
        server.stop()


def push_until_refused(address, run, size, seed, results, token=None):
    """Pushes `size`-byte tensors into `run` until the server refuses one;
    records (tensors acked, refusal message) in results[run]."""
    client = reprod_client.Client(address, token=token)
    rng = np.random.default_rng(seed)
    r = client.open_run(run, framework="test")
    acked = {}
    try:
        for i in range(1000):
            data = rng.integers(0, 256, size, dtype=np.uint8)
            r.log("ck", {f"t{i}": data})
            try:
                r.flush()
            except reprod_client.ResourceExhausted as e:
                results[run] = (acked, str(e))
                r.abort()
                return
            acked[f"t{i}"] = data
        results[run] = (acked, None)
    finally:
        client.close()


@pytest.mark.parametrize("flag, limit_text", [
    ("--namespace-quota-bytes", "(--namespace-quota-bytes)"),
    ("--quota-bytes", "(--quota-bytes)"),
])
def test_concurrent_pushes_end_within_the_quota(tmp_path, flag, limit_text):
    quota, size, n = 6 * MiB, 512 << 10, 8
    server = Reprodd(tmp_path, extra_args=[flag, str(quota)])
    try:
        results, threads = {}, []
        for k in range(n):
            t = threading.Thread(target=push_until_refused,
                                 args=(server.address, f"conc/r{k}", size, k, results))
            t.start()
            threads.append(t)
        for t in threads:
            t.join(timeout=120)
        assert len(results) == n
        client = reprod_client.Client(server.address)
        total = stored_bytes(client, "conc/")
        # Within the quota, and full to less than one tensor: every stream
        # stopped only when refused.
        assert quota - size < total <= quota, total
        acked_total = 0
        for run, (acked, refusal) in results.items():
            assert refusal is not None and "disk full / quota" in refusal, (run, refusal)
            assert limit_text in refusal, refusal
            # What each stream saw acked is stored, byte-exact.
            stored = {t.key for t in client.list_tensors(run)}
            assert stored == set(acked), (run, stored, set(acked))
            for key, data in acked.items():
                np.testing.assert_array_equal(client.read_tensor(run, "ck", key), data)
            acked_total += size * len(acked)
        assert acked_total == total
        client.close()
    finally:
        server.stop()


def _token(data_dir, role, label, scope=None, quota=None):
    args = [str(REPRODD), "token", "create", "--role", role, "--label", label,
            "--data-dir", str(data_dir)]
    if scope:
        args += ["--scope", scope]
    if quota is not None:
        args += ["--quota-bytes", str(quota)]
    res = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"rpd_[0-9a-f]{64}", res.stdout.strip()), res.stdout
    return res.stdout.strip()


def test_a_tokens_quota_replaces_the_namespace_default(tmp_path):
    data = tmp_path / "data"
    tokens = {
        "more": _token(data, "submitter", "more-ci", scope="more", quota=3 * MiB),
        "less": _token(data, "submitter", "less-ci", scope="less", quota=1 * MiB),
        "plain": _token(data, "submitter", "plain-ci", scope="plain"),
        "free": _token(data, "submitter", "free-ci", scope="free", quota=0),
    }
    admin = _token(data, "admin", "ops")
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                     extra_args=["--auth", "tokens", "--namespace-quota-bytes", str(2 * MiB),
                                 "--quota-bytes", str(12 * MiB)])
    try:
        results = {}
        for ns in ("more", "less", "plain"):
            push_until_refused(server.address, f"{ns}/r", MiB, 1, results, token=tokens[ns])
        assert len(results["more/r"][0]) == 3
        assert ("namespace 'more' stores 3145728 bytes, 0 more in flight; 1048576 more would "
                "pass the 3145728-byte limit of token 'more-ci' (its --quota-bytes)"
                ) in results["more/r"][1]
        assert len(results["less/r"][0]) == 1
        assert "the 1048576-byte limit of token 'less-ci'" in results["less/r"][1]
        assert len(results["plain/r"][0]) == 2
        assert "its 2097152-byte limit (--namespace-quota-bytes)" in results["plain/r"][1]
        # Quota 0: no namespace limit, only the server's 12 MiB (6 used).
        push_until_refused(server.address, "free/r", MiB, 2, results, token=tokens["free"])
        assert len(results["free/r"][0]) == 6
        assert "12582912-byte limit (--quota-bytes)" in results["free/r"][1]

        # reprodctl: an admin gives a token its quota; `token ls` shows it.
        srv = ("--server", server.address, "--token", admin)
        made = run_reprodctl(*srv, "token", "create", "--role", "submitter", "--scope", "late",
                             "--label", "late-ci", "--quota-bytes", "4096")
        assert made.code == 0, made
        assert "quota 4096" in made.stderr
        refused = run_reprodctl(*srv, "token", "create", "--role", "judge", "--label", "j",
                                "--quota-bytes", "4096")
        assert refused.code == 2, refused
        assert "judge token has no quota" in refused.stderr
        listed = run_reprodctl(*srv, "token", "ls", "--format", "json")
        assert listed.code == 0, listed
        quotas = {t["label"]: t["quota_bytes"] for t in json.loads(listed.stdout)}
        assert quotas == {"more-ci": 3 * MiB, "less-ci": MiB, "plain-ci": None, "free-ci": 0,
                          "ops": None, "late-ci": 4096}
        table = run_reprodctl(*srv, "token", "ls")
        assert table.code == 0, table
        assert re.search(r"\bQUOTA\b", table.stdout)
        assert re.search(r"late\s+4096\s+late-ci", table.stdout), table.stdout
        late = made.stdout.strip()
        # The server is full (12 MiB): deleting a run gives its bytes back.
        with reprod_client.Client(server.address, token=admin) as ops:
            ops.delete_run("free/r")
        results.clear()
        push_until_refused(server.address, "late/r", 4096, 3, results, token=late)
        assert len(results["late/r"][0]) == 1
        assert "4096-byte limit of token 'late-ci'" in results["late/r"][1]
    finally:
        server.stop()


def test_usage_survives_a_restart(tmp_path):
    data = tmp_path / "data"
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                     extra_args=["--namespace-quota-bytes", str(3 * MiB)])
    try:
        client = reprod_client.Client(server.address)
        r = client.open_run("keep/a", framework="test")
        r.log("ck", {"x": np.ones(2 * MiB, np.uint8)})
        r.close()
        client.close()
        server.stop()
        server.restart()
        client = reprod_client.Client(server.address)
        r = client.open_run("keep/b", framework="test")
        r.log("ck", {"y": np.ones(MiB, np.uint8)})
        r.flush()
        r.log("ck", {"z": np.ones(1, np.uint8)})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush()
        assert f"namespace 'keep' stores {3 * MiB} bytes" in str(err.value)
        r.abort()
        # Deleting after the restart gives the bytes from before it back.
        client.delete_run("keep/a")
        r = client.open_run("keep/c", framework="test")
        r.log("ck", {"w": np.ones(2 * MiB, np.uint8)})
        r.close()
        assert stored_bytes(client, "keep/") == 3 * MiB
        client.close()
    finally:
        server.stop()
