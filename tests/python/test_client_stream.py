"""reprod_client's background sender: bounded memory under a slow server,
backpressure only at the bound, clear errors when the server is gone, and
exactly-once resends after a broken stream (a fake server that drops the
stream, and a real reprodd SIGKILLed and restarted on its RocksDB dir)."""
import os
import signal
import threading
import time
import tracemalloc
from concurrent import futures

import grpc
import numpy as np
import pytest

from conftest import Reprodd
from reprod_client import Client, ServerUnavailable
from reprod_client._proto import ingest_pb2, ingest_pb2_grpc, runs_pb2, runs_pb2_grpc
from reprod_client.crc32c import crc32c

MiB = 1 << 20


# --- in-process fake server ------------------------------------------------

class FakeRuns(runs_pb2_grpc.RunServiceServicer):
    def CreateRun(self, request, context):
        run = runs_pb2.Run()
        run.CopyFrom(request.run)
        run.state = runs_pb2.RUN_STATE_OPEN
        return run

    def SealRun(self, request, context):
        return runs_pb2.Run(name=request.name, state=runs_pb2.RUN_STATE_SEALED)


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    """Receives tensors, checks offsets and crc32c (unless check_crc is
    False), records them per stream and acks through `on_complete`, which
    may sleep, wait or abort."""

    def __init__(self, check_crc=True):
        self.check_crc = check_crc
        self.streams = []      # per stream: [key, ...] in completion order
        self.stored = {}       # key -> bytes (when check_crc)
        self.lock = threading.Lock()

    def on_complete(self, context, stream_index, received):
        """Returns True to ack the tensor just completed."""
        return True

    def Ingest(self, request_iterator, context):
        with self.lock:
            self.streams.append([])
            index = len(self.streams) - 1
        received = self.streams[index]
        begin, parts, size = None, [], 0
        for req in request_iterator:
            if req.HasField("begin"):
                assert begin is None, "BeginTensor before the previous tensor completed"
                begin, parts, size = req.begin, [], 0
            else:
                assert req.chunk.offset == size
                size += len(req.chunk.data)
                if self.check_crc:
                    parts.append(req.chunk.data)
            if begin is not None and size == begin.header.byte_length:
                key = begin.header.address.key
                if self.check_crc:
                    data = b"".join(parts)
                    assert crc32c(data) == begin.header.crc32c, key
                    with self.lock:
                        kind = (ingest_pb2.ACK_KIND_ALREADY_PRESENT if key in self.stored
                                else ingest_pb2.ACK_KIND_STORED)
                        self.stored[key] = data
                else:
                    kind = ingest_pb2.ACK_KIND_STORED
                received.append(key)
                tid, address = begin.tensor_id, begin.header.address
                begin, parts = None, []
                if self.on_complete(context, index, received):
                    yield ingest_pb2.IngestResponse(tensor_id=tid, address=address, kind=kind)


@pytest.fixture
def fake_server():
    servers = []

    def start(ingest):
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        runs_pb2_grpc.add_RunServiceServicer_to_server(FakeRuns(), server)
        ingest_pb2_grpc.add_IngestServiceServicer_to_server(ingest, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for s in servers:
        s.stop(0)


def test_hand_encoded_chunks_parse_as_ingest_requests():
    from reprod_client.run import encode_chunk_request

    for offset, data in [(0, b""), (0, b"abc"), (127, b"x" * 127), (128, b"y" * 128),
                         (2**40 + 5, bytes(range(256)) * 600), (2**63, b"z")]:
        raw = encode_chunk_request(offset, memoryview(data))
        msg = ingest_pb2.IngestRequest.FromString(raw)
        assert msg.WhichOneof("kind") == "chunk"
        assert (msg.chunk.offset, msg.chunk.data) == (offset, data)


# --- bounded memory, backpressure --------------------------------------------

def test_slow_server_keeps_memory_bounded(fake_server):
    class Slow(FakeIngest):
        def on_complete(self, context, stream_index, received):
            time.sleep(0.01)
            return True

    ingest = Slow(check_crc=False)
    client = Client(fake_server(ingest))
    bound, size, count = 16 * MiB, 4 * MiB, 64
    src = np.random.default_rng(0).standard_normal(size // 4).astype(np.float32)
    run = client.open_run("mem/slow", max_pending_bytes=bound)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    durations = []
    t_start = time.perf_counter()
    for i in range(count):
        t0 = time.perf_counter()
        run.log("forward", {f"t{i}": src})
        durations.append(time.perf_counter() - t0)
    t_logged = time.perf_counter()
    run.flush()
    t_acked = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    run.close()
    stats = run.stats
    assert stats.acked == count and len(ingest.streams[0]) == count
    assert stats.peak_pending_bytes <= bound
    # Everything the process allocated meanwhile (numpy copies, chunk bytes,
    # the fake server's messages) stays near the bound, not near the 256 MiB
    # that was logged.
    assert peak < bound + 2 * size + 16 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    # Until the bound is reached log() does not wait for the server.
    assert max(durations[:bound // size]) < 0.25, durations[:4]
    print(f"\n64 x 4 MiB through a slow fake server: logged in {t_logged - t_start:.2f} s, "
          f"acked after {t_acked - t_start:.2f} s; peak pending "
          f"{stats.peak_pending_bytes / MiB:.0f} MiB, peak traced {peak / MiB:.1f} MiB")


def test_log_blocks_only_at_the_bound(fake_server):
    gate = threading.Event()

    class Gated(FakeIngest):
        def on_complete(self, context, stream_index, received):
            gate.wait(30)
            return True

    client = Client(fake_server(Gated(check_crc=False)))
    run = client.open_run("mem/gated", max_pending_bytes=16 * MiB)
    t = np.zeros(MiB, np.float32)  # 4 MiB
    t0 = time.perf_counter()
    for i in range(3):
        run.log("forward", {f"t{i}": t})
    assert time.perf_counter() - t0 < 1.0  # no ack has come back, none was needed
    assert run.stats.acked == 0
    done = threading.Event()

    def producer():
        run.log("forward", {"t3": t})   # fits: 16 MiB pending
        run.log("forward", {"t4": t})   # over the bound: waits for an ack
        done.set()

    thread = threading.Thread(target=producer, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()
    assert run.pending_bytes == 16 * MiB
    gate.set()
    thread.join(10)
    assert done.is_set()
    run.flush()
    assert run.stats.acked == 5 and run.stats.peak_pending_bytes == 16 * MiB
    run.close()


def test_tensor_larger_than_the_bound_goes_alone(fake_server):
    client = Client(fake_server(FakeIngest()))
    run = client.open_run("mem/huge", max_pending_bytes=MiB)
    big = np.arange(3 * MiB // 8, dtype=np.float64)  # 3 MiB, three chunks
    run.log("forward", {"big": big, "small": np.ones(4)})
    run.close()
    assert run.stats.acked == 2 and run.stats.peak_pending_bytes == 3 * MiB


# --- resends ----------------------------------------------------------------------

def test_broken_stream_resends_unacked_exactly_once(fake_server):
    n, k = 10, 4

    class Flaky(FakeIngest):
        """First stream: acks the first k tensors, waits for all n, then
        fails with UNAVAILABLE. Later streams ack everything."""

        def on_complete(self, context, stream_index, received):
            if stream_index > 0:
                return True
            if len(received) == n:
                context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
            return len(received) <= k

    ingest = Flaky()
    client = Client(fake_server(ingest))
    run = client.open_run("resend/flaky", reconnect_timeout=10)
    keys = [f"t{i}" for i in range(n)]
    payload = {key: np.full(1000 + i, i, np.int32) for i, key in enumerate(keys)}
    run.log("forward", payload)
    run.flush()
    run.close()
    assert len(ingest.streams) == 2
    assert ingest.streams[0] == keys
    assert ingest.streams[1] == keys[k:]  # each unacked once, no acked one again
    assert sorted(ingest.stored) == sorted(keys)
    for key in keys:
        assert ingest.stored[key] == payload[key].tobytes()
    s = run.stats
    assert (s.acked, s.resent, s.reconnects, s.already_present) == (n, n - k, 1, n - k)


# --- real reprodd: down, crash and restart --------------------------------------

def test_server_down_raises_naming_the_address(tmp_path):
    server = Reprodd(tmp_path)
    address = server.address
    try:
        client = Client(address)
        run = client.open_run("down/run", reconnect_timeout=1.0)
        run.log("forward", {"a": np.ones(3)})
        run.flush()
        server.kill()
        run.log("forward", {"b": np.ones(3)})
        t0 = time.monotonic()
        with pytest.raises(ServerUnavailable) as e:
            run.flush()
        assert time.monotonic() - t0 < 10
        assert address in str(e.value) and "down/run" in str(e.value)
        with pytest.raises(ServerUnavailable, match=address):
            run.close()
        with pytest.raises(ServerUnavailable, match=address):
            run.log("forward", {"c": np.ones(3)})
        with pytest.raises(ServerUnavailable, match=address):
            client.open_run("down/other")
    finally:
        server.stop()


def test_reprodd_killed_mid_stream_and_restarted(tmp_path):
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data")
    try:
        client = Client(server.address)
        run = client.open_run("crash/run", max_pending_bytes=8 * MiB, reconnect_timeout=30)
        rng = np.random.default_rng(1)
        tensors = {f"t{i:02d}": rng.standard_normal(MiB // 4 + i).astype(np.float32)
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
        # Freeze the server so that tensors are begun but cannot be acked,
        # then crash it with those in flight.
        os.kill(server.proc.pid, signal.SIGSTOP)
        time.sleep(0.2)
        server.kill()
        time.sleep(0.3)
        server.restart()  # same port, same RocksDB data dir
        thread.join(30)
        assert not thread.is_alive() and not errors, errors
        run.flush()
        run.seal()
        stats = run.stats
        assert stats.resent > 0 and stats.reconnects >= 1, stats
        print(f"\nafter SIGKILL + restart: {stats}")
        stored = {t.key: t for t in client.list_tensors("crash/run")}
        assert sorted(stored) == sorted(tensors)
        for key, value in tensors.items():
            raw = value.tobytes()
            assert stored[key].crc32c == crc32c(raw), key
            got = client.read_tensor("crash/run", "forward", key, step=1)
            assert got.dtype == np.float32 and got.tobytes() == raw, key
        assert client.get_run("crash/run").state == "sealed"
    finally:
        server.stop()


def test_copies_reuse_acked_buffers_and_every_tensor_arrives_intact(fake_server):
    # Tensors stream while later log() calls copy into buffers of acked ones:
    # the server checks every tensor's crc32c against its bytes, and the
    # bytes against the values logged (the source array is overwritten after
    # each log(), so only a private copy holds them).
    ingest = FakeIngest(check_crc=True)
    client = Client(fake_server(ingest))
    run = client.open_run("mem/reuse", max_pending_bytes=8 * MiB)
    rng = np.random.default_rng(7)
    src = np.empty(MiB // 2, dtype=np.float32)      # 2 MiB
    want = {}
    for i in range(24):
        src[:] = rng.standard_normal(src.size, dtype=np.float32)
        want[f"t{i}"] = src.tobytes()
        run.log("forward", {f"t{i}": src})
        src[:] = np.nan
    run.close()
    assert run._buffers.reused >= 12                # most copies reused a buffer
    assert run._buffers.kept_bytes == 0            # dropped at close
    assert set(ingest.stored) == set(want)
    for key, data in want.items():
        assert ingest.stored[key] == data, key
