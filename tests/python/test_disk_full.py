"""A full disk is an answer, not a crash (reprodd on a 640 MiB tmpfs).

Needs root to mount the tmpfs; skips visibly where mounting fails. Several
producer streams push 1 KiB - 64 MiB tensors until the server refuses:

* with the default guard (--min-free-bytes, 256 MiB), ingest is refused with
  RESOURCE_EXHAUSTED ("disk full", free and needed bytes) before RocksDB
  itself meets ENOSPC;
* without it (--min-free-bytes 0), ENOSPC comes back as RESOURCE_EXHAUSTED
  as well: in a segment file, in the write-ahead log, or in the background
  flush of a 64 MiB chunk memtable into a blob file when the log still fits
  but the flush does not;

in all, reprodd keeps running, every acknowledged tensor reads back
byte-exact, and once a filler file in the same filesystem is removed the next
push succeeds without a restart. A restart on a full disk serves reads.
"""
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
from conftest import Reprodd  # noqa: E402

MiB = 1 << 20
SIZES = [1 << 10, 64 << 10, 1 * MiB, 4 * MiB, 16 * MiB, 64 * MiB]
TMPFS_MIB = 640
# reprodd's chunk memtable (RocksDbStoreOptions::chunk_write_buffer_bytes):
# the bytes one background flush writes into a blob file.
MEMTABLE = 64 * MiB


@pytest.fixture
def tmpfs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MIB}m", "tmpfs", str(mnt)],
        capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {TMPFS_MIB} MiB tmpfs (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(path, leave_bytes=0):
    """Writes `path` until ENOSPC (or until `leave_bytes` remain free)."""
    block = b"\xa5" * MiB
    with open(path, "wb", buffering=0) as f:
        while True:
            st = os.statvfs(path)
            free = st.f_bavail * st.f_frsize
            if free <= leave_bytes:
                return
            try:
                f.write(block[:min(MiB, max(4096, free - leave_bytes))])
            except OSError:
                return


def random_bytes(rng, size):
    return np.frombuffer(rng.bytes(size), dtype=np.uint8)


def push_until_refused(address, run, seed, logged, sizes=SIZES):
    """Logs tensors of `sizes` (cycled) one at a time, flushing each, until
    the server refuses one; records every acknowledged one in logged[run]
    and returns the error."""
    rng = np.random.default_rng(seed)
    client = reprod_client.Client(address)
    r = client.open_run(run, framework="test")
    acked = logged.setdefault(run, [])
    for i in range(10_000):
        data = random_bytes(rng, sizes[(i - seed) % len(sizes)])  # s1 starts largest
        try:
            r.log("ck", {f"t{i}": data})
            r.flush()
        except reprod_client.ReprodError as e:
            try:
                r.abort()  # marks the run aborted: refused too on a full disk
            except reprod_client.ResourceExhausted:
                pass
            client.close()
            return e
        acked.append((f"t{i}", data))
    raise AssertionError(f"{run}: 10,000 tensors fit on a {TMPFS_MIB} MiB tmpfs")


def fill_with_streams(server, prefix, streams=4, sizes=SIZES):
    logged, errors = {}, {}

    def one(k):
        errors[k] = push_until_refused(server.address, f"{prefix}/s{k}", k, logged, sizes)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(errors) == streams, f"streams still pushing: {errors}"
    return logged, errors


def check_refusals(errors):
    for k, e in errors.items():
        assert isinstance(e, reprod_client.ResourceExhausted), f"stream {k}: {e!r}"
        assert "disk full" in str(e), str(e)


def check_read_back(address, logged):
    client = reprod_client.Client(address)
    total = 0
    for run, acked in logged.items():
        stored = {t.key for t in client.list_tensors(run)}
        for key, data in acked:
            assert key in stored, f"{run}:{key} was acked but is not stored"
            back = client.read_tensor(run, "ck", key)
            assert back.tobytes() == data.tobytes(), f"{run}:{key} differs"
            total += 1
    client.close()
    return total


def push_one(address, run, size=1 * MiB):
    client = reprod_client.Client(address)
    r = client.open_run(run, framework="test")
    data = np.arange(size, dtype=np.uint8)
    r.log("ck", {"after": data})
    r.close()
    assert client.read_tensor(run, "ck", "after").tobytes() == data.tobytes()
    client.close()


def test_guard_refuses_before_the_disk_is_full(tmpfs, tmp_path):
    filler = tmpfs / "filler"
    with open(filler, "wb") as f:
        f.write(b"\x00" * (3 * MEMTABLE))
    # The default guard (256 MiB): room for a new log file and the flushes
    # of both chunk memtables.
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmpfs / "data")
    try:
        logged, errors = fill_with_streams(server, "guard")
        assert server.proc.poll() is None, "reprodd exited"
        check_refusals(errors)
        log = (tmp_path / "reprodd.log").read_text()
        assert "the disk filled up" not in log, log[-3000:]
        # The guard's own message: needed and free bytes, the flag.
        guard = [e for e in errors.values() if "--min-free-bytes" in str(e)]
        assert guard, [str(e) for e in errors.values()]
        st = os.statvfs(tmpfs)
        assert st.f_bavail * st.f_frsize > 2 * MiB, "the guard let the disk fill up"
        assert check_read_back(server.address, logged) > 4
        filler.unlink()
        push_one(server.address, "guard/after")
        assert server.proc.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize("segment_bytes", [str(MiB), "0"], ids=["segments", "rocksdb-only"])
def test_enospc_inside_rocksdb_is_an_answer_and_recovers(tmpfs, tmp_path, segment_bytes):
    """Tensors of 1 MiB and more meet ENOSPC in their segment files (the
    default), or, with segment files off, every tensor meets it in RocksDB."""
    filler = tmpfs / "filler"
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmpfs / "data",
                     extra_args=["--min-free-bytes", "0", "--segment-tensor-bytes", segment_bytes])
    try:
        push_one(server.address, "nospace/before", size=64 << 10)
        # Resuming flushes both chunk memtables: the filler frees more.
        fill(filler, leave_bytes=6 * MEMTABLE)
        logged, errors = fill_with_streams(server, "nospace")
        assert server.proc.poll() is None, "reprodd exited on ENOSPC"
        check_refusals(errors)
        acked = check_read_back(server.address, logged)
        assert acked >= 4, logged.keys()
        largest = max(d.size for a in logged.values() for _, d in a)
        assert largest == 64 * MiB, [str(e)[-300:] for e in errors.values()]
        filler.unlink()
        push_one(server.address, "nospace/after")
        assert server.proc.poll() is None
        # A restart on a full disk opens read-only, says so, serves reads
        # and refuses writes as disk full.
        server.stop()
        fill(filler)
        server.start()
        assert check_read_back(server.address, logged) == acked
        log = (tmp_path / "reprodd.log").read_text()
        assert "opened READ-ONLY because the disk is full" in log, log[-3000:]
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            push_one(server.address, "nospace/s0")
        assert "opened read-only on a full disk" in str(err.value)
        assert server.proc.poll() is None
    finally:
        server.stop()


def test_enospc_in_a_background_flush_is_an_answer_and_recovers(tmpfs, tmp_path):
    """The write-ahead log fits, the flush of the full chunk memtable into a
    blob file does not: 1.5 memtables are free, so when the first memtable
    fills (its bytes are all in the log) less than one is left. Segment files
    are off, so that the 1 MiB tensors go through the memtable."""
    filler = tmpfs / "filler"
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmpfs / "data",
                     extra_args=["--min-free-bytes", "0", "--segment-tensor-bytes", "0"])
    try:
        fill(filler, leave_bytes=MEMTABLE + MEMTABLE // 2)
        logged, errors = fill_with_streams(server, "flush", streams=2, sizes=[MiB])
        assert server.proc.poll() is None, "reprodd exited on ENOSPC in a flush"
        check_refusals(errors)
        log = (tmp_path / "reprodd.log").read_text()
        assert "the disk filled up during a memtable flush" in log, log[-3000:]
        acked = check_read_back(server.address, logged)
        assert acked * MiB >= MEMTABLE, acked
        filler.unlink()
        push_one(server.address, "flush/after")
        assert server.proc.poll() is None
        assert check_read_back(server.address, logged) == acked
        # Nothing acknowledged was lost in the failed flushes.
        server.stop()
        server.start()
        assert check_read_back(server.address, logged) == acked
    finally:
        server.stop()


def test_quotas_name_namespace_used_and_limit(tmp_path):
    server = Reprodd(tmp_path, extra_args=["--namespace-quota-bytes", str(3 * MiB),
                                           "--quota-bytes", str(5 * MiB)])
    try:
        client = reprod_client.Client(server.address)
        data = np.ones(MiB, dtype=np.uint8)
        r = client.open_run("qa/r1", framework="test")
        for i in range(3):
            r.log("ck", {f"t{i}": data})
        r.flush()
        r.log("ck", {"t3": data})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush()
        msg = str(err.value)
        assert "disk full / quota" in msg
        assert "namespace 'qa' stores 3145728 bytes" in msg
        assert "3145728-byte limit (--namespace-quota-bytes)" in msg
        r.abort()
        # Another namespace has room of its own, up to the global limit:
        # 3 MiB (qa) + 2 MiB (qb) = 5 MiB.
        r = client.open_run("qb/r1", framework="test")
        r.log("ck", {"t0": data, "t1": data})
        r.flush()
        r.log("ck", {"t2": data})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush()
        assert "the server stores 5242880 bytes" in str(err.value)
        assert "(--quota-bytes)" in str(err.value)
        r.abort()
        # Deleting a run gives its bytes back.
        client.delete_run("qa/r1")
        r = client.open_run("qb/r2", framework="test")
        r.log("ck", {"t0": data})
        r.close()
        assert [t.key for t in client.list_tensors("qb/r2")] == ["t0"]
        client.close()
    finally:
        server.stop()
