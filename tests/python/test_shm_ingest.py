"""Same-host shared-memory ingest (SharedMemoryService, reprodd --allow-shm)
against a real reprodd.

The Python client's shm=True path round-trips many dtypes and sizes
byte-exact (numpy's bytes are the oracle; read back over the wire with
read_tensor). A raw Session stub sends the bad references a hostile or buggy
client could: past the region, wrapping around uint64, a length that is not
the header's, a region the session did not register (unknown, another
session's, a wrong key), a shrunk object, a crc mismatch. Each ends the
session with INVALID_ARGUMENT or PERMISSION_DENIED, stores nothing, and
reprodd keeps answering. Unlinking the name after registering is harmless
(documented in docs/shared-memory.md): the tensor is stored from the object
reprodd holds open. Without --allow-shm every session is FAILED_PRECONDITION.
"""
import os
import queue
import re
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

import reprod_client
from reprod_client import Client
from reprod_client.client import _PB
from reprod_client.crc32c import crc32c
from reprod_client.shm import SHM_DIR, SLOTS_OFFSET, ShmRegion

from conftest import REPRODD, Reprodd

pb = _PB


@pytest.fixture(scope="module")
def shm_server(tmp_path_factory):
    server = Reprodd(tmp_path_factory.mktemp("reprodd-shm"), extra_args=["--allow-shm"])
    try:
        yield server
    finally:
        server.stop()


def _our_regions():
    prefix = f"reprod-{os.getpid()}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))


class Session:
    """A raw SharedMemoryService.Session: send() one request, get its
    response (or the grpc.RpcError that ended the session)."""

    def __init__(self, client):
        self._q = queue.Queue()
        self.call = client._shm_session(iter(self._q.get, None), metadata=client._metadata)

    def send(self, request):
        self._q.put(request)
        return next(self.call)

    def register(self, region, byte_size=None, key=None):
        return self.send(pb.shm.ShmRequest(region=pb.shm.RegisterRegion(
            name=region.name, byte_size=region.byte_size if byte_size is None else byte_size,
            key=region.key if key is None else key)))

    def tensor(self, run, key, arr, region_name, offset, length=None, crc=None, tid=1):
        data = np.ascontiguousarray(arr).view(np.uint8).reshape(-1)
        header = pb.tensor.TensorHeader(
            address=pb.tensor.TensorAddress(checkpoint="ck", key=key),
            dtype=pb.tensor.DTYPE_FLOAT32, shape=list(arr.shape), byte_length=data.nbytes,
            crc32c=crc32c(data) if crc is None else crc)
        return self.send(pb.shm.ShmRequest(tensor=pb.shm.ShmTensor(
            begin=pb.ingest.BeginTensor(run=run, tensor_id=tid, header=header),
            region=region_name, offset=offset, length=data.nbytes if length is None else length)))

    def close(self):
        self._q.put(None)
        for _ in self.call:
            pass


@pytest.fixture
def region():
    r = ShmRegion(1 << 16, slots=1)
    yield r
    r.close()


def _payload(n=16):
    return np.arange(n, dtype=np.float32) * 0.5 - 3


def _expect_refused(session, send, code, match):
    with pytest.raises(grpc.RpcError) as err:
        send()
    assert err.value.code() == code, err.value
    assert re.search(match, err.value.details()), err.value.details()


def _assert_alive_and_empty(client, run):
    """reprodd still answers, and the run holds no tensor."""
    assert client.get_run(run).state == "open"
    assert client.list_tensors(run) == []


# --- the client path --------------------------------------------------------

def test_round_trip_many_dtypes_and_sizes_byte_exact(shm_server, run_ns):
    rng = np.random.default_rng(5)
    values = {
        "f32": rng.standard_normal((3, 4)).astype(np.float32),
        "f64_big": rng.standard_normal(300_000),                        # 2.4 MB: grows the region
        "f16": rng.standard_normal(1001).astype(np.float16),
        "i8": rng.integers(-128, 127, size=(7, 3), dtype=np.int8),
        "u16_odd": rng.integers(0, 65535, size=999, dtype=np.uint16),
        "i64_scalar": np.int64(-(2 ** 62) + 5),
        "bool": rng.random(33) > 0.5,
        "empty": np.zeros((0, 5), np.float32),
        "strided": rng.standard_normal((64, 32)).astype(np.float32).T,  # not contiguous
        "u8_1mib": rng.integers(0, 255, size=1 << 20, dtype=np.uint8),
    }
    name = f"{run_ns}/shm"
    with Client(shm_server.address) as client:
        run = client.open_run(name, framework="test", shm=True, shm_slots=2)
        for step in range(3):  # the slots are reused
            run.log("ck", {k: v for k, v in values.items()}, step=step)
        run.flush()
        assert len(_our_regions()) == 1  # the first one grew: replaced and unlinked
        run.close()
        assert _our_regions() == []  # unlinked on close
        assert run.stats.acked == 3 * len(values)
        assert run.stats.bytes_sent == 3 * sum(np.asarray(v).nbytes for v in values.values())
        assert len(client.list_tensors(name)) == 3 * len(values)
        for step in range(3):
            for key, want in values.items():
                got = client.read_tensor(name, "ck", key, step=step)
                want = np.asarray(want)
                assert got.dtype == want.dtype, key
                assert got.shape == want.shape, key
                assert got.tobytes() == np.ascontiguousarray(want).tobytes(), key


def test_reprodd_killed_and_restarted_mid_run(tmp_path):
    """The new stream registers the region again and resends the unacked
    tensors from their slots; every tensor ends up stored byte-exact."""
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data",
                     extra_args=["--allow-shm"])
    try:
        client = Client(server.address)
        run = client.open_run("crash/shm", framework="test", shm=True, reconnect_timeout=30)
        rng = np.random.default_rng(1)
        # Growing sizes: the region is replaced by a larger one on the way.
        tensors = {f"t{i:02d}": rng.standard_normal((1 << 18) + 1000 * i).astype(np.float32)
                   for i in range(24)}
        errors = []

        def producer():
            try:
                for key, value in tensors.items():
                    run.log("forward", {key: value}, step=1)
                    time.sleep(0.01)
            except Exception as e:  # surfaced by the assertion below
                errors.append(e)

        thread = threading.Thread(target=producer, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while run.stats.acked < 4:
            assert time.monotonic() < deadline, "no acks from reprodd"
            time.sleep(0.005)
        os.kill(server.proc.pid, signal.SIGSTOP)  # tensors sent but not acked
        time.sleep(0.2)
        server.kill()
        time.sleep(0.3)
        server.restart()  # same port, same RocksDB data dir
        thread.join(30)
        assert not thread.is_alive() and not errors, errors
        run.seal()
        assert run.stats.reconnects >= 1, run.stats
        stored = {t.key for t in client.list_tensors("crash/shm")}
        assert stored == set(tensors)
        for key, value in tensors.items():
            assert client.read_tensor("crash/shm", "forward", key, step=1).tobytes() == \
                value.tobytes(), key
        assert _our_regions() == []
        client.close()
    finally:
        server.stop()


def test_without_allow_shm_everything_is_failed_precondition(reprodd, run_ns, region):
    with Client(reprodd.address) as client:
        with pytest.raises(reprod_client.FailedPrecondition, match="--allow-shm"):
            client.open_run(f"{run_ns}/r", framework="test", shm=True)
        with pytest.raises(reprod_client.NotFound):
            client.get_run(f"{run_ns}/r")  # refused before the run was created
        s = Session(client)
        _expect_refused(s, lambda: s.register(region), grpc.StatusCode.FAILED_PRECONDITION,
                        "start it with --allow-shm")
        # The wire path is unaffected.
        with client.open_run(f"{run_ns}/wire", framework="test") as run:
            run.log("ck", {"x": _payload()})
        assert [t.key for t in client.list_tensors(f"{run_ns}/wire")] == ["x"]


# --- bad references ---------------------------------------------------------

U64 = 1 << 64


@pytest.mark.parametrize("case, offset, length, code, match", [
    ("offset past the region", "size+1", None, "INVALID_ARGUMENT", "run past the region"),
    ("offset at the end", "size", None, "INVALID_ARGUMENT", "run past the region"),
    ("length past the end", "size-8", None, "INVALID_ARGUMENT", "run past the region"),
    ("offset + length wraps around uint64", U64 - 32, None, "INVALID_ARGUMENT",
     "run past the region"),
    ("offset -1 as uint64", U64 - 1, None, "INVALID_ARGUMENT", "run past the region"),
    ("length != byte_length", SLOTS_OFFSET, 32, "INVALID_ARGUMENT",
     "length 32 differs from the header's byte_length 64"),
    ("length -1 as uint64", SLOTS_OFFSET, U64 - 1, "INVALID_ARGUMENT", "differs from the header"),
])
def test_out_of_bounds_references_are_refused(shm_server, run_ns, region, case, offset, length,
                                               code, match):
    run = f"{run_ns}/r"
    if isinstance(offset, str):
        offset = eval(offset, {"size": region.byte_size})
    arr = _payload()
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client:
        client.open_run(run, framework="test").close()
        s = Session(client)
        assert s.register(region).registered.name == region.name
        _expect_refused(s, lambda: s.tensor(run, "x", arr, region.name, offset, length),
                        getattr(grpc.StatusCode, code), match)
        _assert_alive_and_empty(client, run)


def test_crc_mismatch_is_refused_and_nothing_stored(shm_server, run_ns, region):
    run = f"{run_ns}/r"
    arr = _payload()
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client:
        client.open_run(run, framework="test").close()
        s = Session(client)
        s.register(region)
        good = crc32c(arr.view(np.uint8))
        _expect_refused(s, lambda: s.tensor(run, "x", arr, region.name, SLOTS_OFFSET,
                                             crc=good ^ 1),
                        grpc.StatusCode.INVALID_ARGUMENT, "crc32c")
        _assert_alive_and_empty(client, run)


def test_unregistered_and_foreign_regions_are_permission_denied(shm_server, run_ns, region):
    run = f"{run_ns}/r"
    arr = _payload()
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client, Client(shm_server.address) as other:
        client.open_run(run, framework="test").close()
        owner = Session(client)
        owner.register(region)
        # Never registered anywhere.
        s = Session(client)
        _expect_refused(s, lambda: s.tensor(run, "x", arr, "/reprod-no-such-region",
                                             SLOTS_OFFSET),
                        grpc.StatusCode.PERMISSION_DENIED, "not registered on this session")
        # Registered by another session (and another channel).
        for c in (client, other):
            s = Session(c)
            _expect_refused(s, lambda: s.tensor(run, "x", arr, region.name, SLOTS_OFFSET),
                            grpc.StatusCode.PERMISSION_DENIED, "not registered on this session")
        # Registering it without knowing its key.
        s = Session(other)
        _expect_refused(s, lambda: s.register(region, key=bytes(32)),
                        grpc.StatusCode.PERMISSION_DENIED, "key does not match")
        # Releasing a region the session does not hold.
        s = Session(other)
        _expect_refused(s, lambda: s.send(pb.shm.ShmRequest(
                            release=pb.shm.ReleaseRegion(name=region.name))),
                        grpc.StatusCode.PERMISSION_DENIED, "not registered on this session")
        _assert_alive_and_empty(client, run)
        # The owner's session was not disturbed.
        ack = owner.tensor(run, "x", arr, region.name, SLOTS_OFFSET).ack
        assert ack.kind == pb.ingest.ACK_KIND_STORED
        owner.close()
        np.testing.assert_array_equal(client.read_tensor(run, "ck", "x"), arr)


@pytest.mark.parametrize("name, byte_size, code, match", [
    ("/psm_1234", None, "INVALID_ARGUMENT", "invalid shared-memory region name"),
    ("/reprod-../etc", None, "INVALID_ARGUMENT", "invalid shared-memory region name"),
    ("/reprod-does-not-exist", None, "NOT_FOUND", "No such file"),
    (None, "bigger", "INVALID_ARGUMENT", "fewer than its byte_size"),
    (None, 0, "INVALID_ARGUMENT", "outside"),
])
def test_bad_registrations_are_refused(shm_server, run_ns, region, name, byte_size, code, match):
    with Client(shm_server.address) as client:
        s = Session(client)
        size = region.byte_size + 1 if byte_size == "bigger" else byte_size
        _expect_refused(s, lambda: s.send(pb.shm.ShmRequest(region=pb.shm.RegisterRegion(
                            name=name or region.name,
                            byte_size=region.byte_size if size is None else size,
                            key=region.key))),
                        getattr(grpc.StatusCode, code), match)
        assert client.runs(prefix="zz-none") == []  # still answering


def test_truncated_region_is_refused_not_a_crash(shm_server, run_ns, region):
    run = f"{run_ns}/r"
    arr = _payload(4096)  # 16 KiB at offset 4096
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client:
        client.open_run(run, framework="test").close()
        s = Session(client)
        s.register(region)
        os.truncate(SHM_DIR + region.name, SLOTS_OFFSET + 100)  # shrink below the tensor
        _expect_refused(s, lambda: s.tensor(run, "x", arr, region.name, SLOTS_OFFSET),
                        grpc.StatusCode.INVALID_ARGUMENT, "shrank to 4196 bytes")
        _assert_alive_and_empty(client, run)
        assert shm_server.proc.poll() is None


def test_unlinked_region_still_serves_its_session(shm_server, run_ns, region):
    """POSIX: unlinking removes the name, not the object reprodd holds open."""
    run = f"{run_ns}/r"
    arr = _payload(1000)
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client:
        client.open_run(run, framework="test").close()
        s = Session(client)
        s.register(region)
        os.unlink(SHM_DIR + region.name)
        assert s.tensor(run, "x", arr, region.name, SLOTS_OFFSET).ack.kind == \
            pb.ingest.ACK_KIND_STORED
        s.close()
        np.testing.assert_array_equal(client.read_tensor(run, "ck", "x"), arr)
        # A new session cannot register the name any more.
        s = Session(client)
        _expect_refused(s, lambda: s.register(region), grpc.StatusCode.NOT_FOUND, "No such")


def test_bad_header_unknown_run_and_empty_request(shm_server, run_ns, region):
    arr = _payload()
    region.write(SLOTS_OFFSET, arr)
    with Client(shm_server.address) as client:
        s = Session(client)
        s.register(region)
        _expect_refused(s, lambda: s.tensor(f"{run_ns}/missing", "x", arr, region.name,
                                             SLOTS_OFFSET),
                        grpc.StatusCode.INVALID_ARGUMENT, "unknown run")
        s = Session(client)
        _expect_refused(s, lambda: s.send(pb.shm.ShmRequest()),
                        grpc.StatusCode.INVALID_ARGUMENT, "neither region, tensor nor release")
        run = f"{run_ns}/r"
        client.open_run(run, framework="test").close()
        s = Session(client)
        s.register(region)
        _expect_refused(s, lambda: s.tensor(run, "bad key!", arr, region.name, SLOTS_OFFSET),
                        grpc.StatusCode.INVALID_ARGUMENT, "invalid")
        _assert_alive_and_empty(client, run)


def _token(data_dir, scope, label, role="submitter"):
    res = subprocess.run([str(REPRODD), "token", "create", "--role", role,
                          *(["--scope", scope] if scope else []),
                          "--label", label, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def test_submitter_writes_only_its_namespace(tmp_path):
    data = tmp_path / "data"
    ta, tb = _token(data, "ta", "team-a"), _token(data, "tb", "team-b")
    admin = _token(data, None, "ops", role="admin")
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                     extra_args=["--auth", "tokens", "--allow-shm"])
    try:
        a, b = Client(server.address, token=ta), Client(server.address, token=tb)
        with a.open_run("ta/r", framework="test", shm=True) as run:
            run.log("ck", {"x": _payload()})
        np.testing.assert_array_equal(a.read_tensor("ta/r", "ck", "x"), _payload())
        b.open_run("tb/r", framework="test").close()
        with pytest.raises(reprod_client.ReprodError) as err:
            with b.open_run("ta/r2", framework="test", shm=True):
                pass
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        reg = ShmRegion(4096, slots=1)
        try:
            reg.write(SLOTS_OFFSET, _payload())
            s = Session(b)
            s.register(reg)
            _expect_refused(s, lambda: s.tensor("ta/r", "y", _payload(), reg.name, SLOTS_OFFSET),
                            grpc.StatusCode.PERMISSION_DENIED, "team-b")
        finally:
            reg.close()
        assert [t.key for t in a.list_tensors("ta/r")] == ["x"]
        # The audit log has team-a's push (via shared memory) and team-b's
        # refused one.
        from reprod_client._proto import review_pb2, review_pb2_grpc
        audit = review_pb2_grpc.AuditServiceStub(Client(server.address)._channel)
        events = audit.ListEvents(review_pb2.ListEventsRequest(object="ta/r"), timeout=30,
                                  metadata=(("authorization", f"Bearer {admin}"),)).events
        pushes = [(e.label, e.result, e.details.get("via"), e.details.get("tensors"))
                  for e in events if e.verb == "push"]
        assert ("team-a", "ok", "shared memory", "1") in pushes, pushes
        assert ("team-b", "PERMISSION_DENIED", None, None) in pushes, pushes
        # No token: nothing at all.
        s = Session(Client(server.address))
        _expect_refused(s, lambda: s.send(pb.shm.ShmRequest()),
                        grpc.StatusCode.UNAUTHENTICATED, "token")
    finally:
        server.stop()
    # Without --allow-shm the token is checked first, then the flag.
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data, extra_args=["--auth", "tokens"])
    try:
        for token, code in ((None, grpc.StatusCode.UNAUTHENTICATED),
                            (ta, grpc.StatusCode.FAILED_PRECONDITION)):
            s = Session(Client(server.address, token=token))
            _expect_refused(s, lambda: s.send(pb.shm.ShmRequest()), code, ".")
    finally:
        server.stop()


def test_region_limits_release_and_duplicates(shm_server, run_ns):
    regions = [ShmRegion(4096, slots=1) for _ in range(17)]
    try:
        with Client(shm_server.address) as client:
            run = f"{run_ns}/r"
            client.open_run(run, framework="test").close()
            s = Session(client)
            for r in regions[:16]:
                assert s.register(r).registered.object_bytes == r.byte_size
            _expect_refused(s, lambda: s.register(regions[16]),
                            grpc.StatusCode.RESOURCE_EXHAUSTED, "16 shared-memory regions")
            s = Session(client)
            s.register(regions[0])
            _expect_refused(s, lambda: s.register(regions[0]), grpc.StatusCode.INVALID_ARGUMENT,
                            "already registered on this session")
            # Released: no longer usable on the session that held it.
            s = Session(client)
            s.register(regions[0])
            regions[0].write(SLOTS_OFFSET, _payload())
            assert s.send(pb.shm.ShmRequest(release=pb.shm.ReleaseRegion(
                name=regions[0].name))).released.name == regions[0].name
            _expect_refused(s, lambda: s.tensor(run, "x", _payload(), regions[0].name,
                                                 SLOTS_OFFSET),
                            grpc.StatusCode.PERMISSION_DENIED, "not registered on this session")
            _assert_alive_and_empty(client, run)
    finally:
        for r in regions:
            r.close()


def test_session_cap_and_prompt_shutdown_with_idle_sessions(tmp_path, region):
    server = Reprodd(tmp_path, extra_args=["--allow-shm", "--max-streams", "1"])
    try:
        client = Client(server.address)
        idle = Session(client)
        idle.register(region)  # holds the only slot, then sits idle
        s = Session(client)
        _expect_refused(s, lambda: s.register(region), grpc.StatusCode.RESOURCE_EXHAUSTED,
                        r"--max-streams 1")
        # SIGTERM: an idle session does not hold the shutdown for the grace
        # period (10 s); it is cancelled.
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 5
        assert server.proc.returncode == 0
        with pytest.raises(grpc.RpcError):
            idle.send(pb.shm.ShmRequest(release=pb.shm.ReleaseRegion(name=region.name)))
        client.close()
    finally:
        server.stop()


def test_regions_of_all_sessions_are_capped_by_the_open_file_limit(tmp_path, monkeypatch):
    """With 80 open files reprodd holds at most 80 / 4 = 20 regions in all
    sessions together (one file descriptor each)."""
    import conftest
    wrapper = tmp_path / "reprodd-80-files"
    wrapper.write_text(f"#!/bin/sh\nulimit -n 80\nexec {REPRODD} \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "REPRODD", wrapper)
    server = Reprodd(tmp_path, extra_args=["--allow-shm", "--http-listen", "off"])
    regions = [ShmRegion(4096, slots=1) for _ in range(21)]
    try:
        client = Client(server.address)
        first, second = Session(client), Session(client)
        for r in regions[:16]:
            first.register(r)
        for r in regions[16:20]:
            second.register(r)
        _expect_refused(second, lambda: second.register(regions[20]),
                        grpc.StatusCode.RESOURCE_EXHAUSTED, "20 shared-memory regions open")
        first.close()  # its 16 regions are given back
        third = Session(client)
        third.register(regions[20])
        third.close()
        client.close()
    finally:
        for r in regions:
            r.close()
        server.stop()


def test_region_that_cannot_be_made_fails_the_run_at_once(shm_server, run_ns, monkeypatch):
    """/dev/shm full is final (no reconnect loop), and says what to do."""
    import reprod_client.run

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(reprod_client.run, "ShmRegion", full)
    with Client(shm_server.address) as client:
        run = client.open_run(f"{run_ns}/r", framework="test", shm=True, reconnect_timeout=30)
        run.log("ck", {"x": _payload()})
        t0 = time.monotonic()
        with pytest.raises(reprod_client.ReprodError, match="cannot make a region.*No space left"):
            run.flush(timeout=20)
        assert time.monotonic() - t0 < 5
        assert client.list_tensors(f"{run_ns}/r") == []
        run.abort()
