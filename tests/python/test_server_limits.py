"""Bounded resources per client: stalled ingest streams end by the idle
timeout, a cap on concurrent streams refuses one more with
RESOURCE_EXHAUSTED, and run metadata fields have size limits."""
import re
import subprocess
import threading
import time

import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
import grpc  # noqa: E402
from conftest import REPRODD, Reprodd  # noqa: E402
from reprod_client.client import _PB as pb  # noqa: E402


def stalled_stream_requests(run, release):
    """Ingest requests: one BeginTensor (1 MiB declared), then nothing until
    `release` is set."""
    address = pb.tensor.TensorAddress(checkpoint="ck", key="stalled")
    header = pb.tensor.TensorHeader(address=address, dtype=pb.tensor.DTYPE_UINT8,
                                    shape=[1 << 20], byte_length=1 << 20, crc32c=0)
    yield pb.ingest.IngestRequest(begin=pb.ingest.BeginTensor(
        run=run, tensor_id=1, header=header)).SerializeToString()
    release.wait()


def stalled_stream(client, run, release):
    """An Ingest call that stalls after its BeginTensor until `release`."""
    return client._ingest_raw(stalled_stream_requests(run, release))


def consume(call, out, k):
    try:
        for _ in call:
            pass
        out[k] = (grpc.StatusCode.OK, "", time.monotonic())
    except grpc.RpcError as e:
        out[k] = (e.code(), e.details(), time.monotonic())


def test_stalled_streams_end_by_the_idle_timeout(tmp_path):
    server = Reprodd(tmp_path, extra_args=["--stream-idle-timeout", "1"])
    release = threading.Event()
    try:
        client = reprod_client.Client(server.address)
        client.open_run("idle/r", framework="test").close()
        ends, threads = {}, []
        start = time.monotonic()
        for k in range(20):
            t = threading.Thread(target=consume,
                                 args=(stalled_stream(client, "idle/r", release), ends, k))
            t.start()
            threads.append(t)
        # Meanwhile a normal client pushes (it sends without idling).
        other = reprod_client.Client(server.address)
        r = other.open_run("idle/busy", framework="test")
        data = np.arange(3 << 20, dtype=np.uint8)
        r.log("ck", {"x": data})
        r.close()
        assert other.read_tensor("idle/busy", "ck", "x").tobytes() == data.tobytes()
        for t in threads:
            t.join(timeout=15)
        assert len(ends) == 20, "stalled streams still open after 15 s"
        for code, details, at in ends.values():
            # The client learns why, with the run and tensor.
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED, (code, details)
            assert details == ("ingest stream idle for 1s (--stream-idle-timeout) at run "
                               "'idle/r' tensor ck/stalled after 0 of 1048576 bytes; cancelled, "
                               "the tensor discarded"), details
            assert 0.9 <= at - start < 5, at - start
        log = (tmp_path / "reprodd.log").read_text()
        assert log.count("--stream-idle-timeout") == 20, log[-2000:]
        assert ("ingest stream idle for 1s (--stream-idle-timeout) at run 'idle/r' tensor "
                "ck/stalled after 0 of 1048576 bytes; cancelled, the tensor discarded") in log
        assert [t.key for t in client.list_tensors("idle/r")] == []
        assert server.proc.poll() is None
    finally:
        release.set()
        server.stop()


def test_stream_cap_refuses_one_more(tmp_path):
    server = Reprodd(tmp_path, extra_args=["--max-streams", "3", "--stream-idle-timeout", "0"])
    release = threading.Event()
    try:
        client = reprod_client.Client(server.address)
        client.open_run("cap/r", framework="test").close()
        ends, threads = {}, []
        for k in range(3):
            t = threading.Thread(target=consume,
                                 args=(stalled_stream(client, "cap/r", release), ends, k))
            t.start()
            threads.append(t)
        time.sleep(0.5)  # the three are open on the server
        r = client.open_run("cap/extra", framework="test")
        r.log("ck", {"x": np.zeros(4, np.float32)})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush(timeout=10)
        assert "3 ingest streams open, its limit (--max-streams 3)" in str(err.value)
        r.abort()
        assert ends == {}, "the open streams were disturbed"
        release.set()  # the three end (their tensors incomplete)
        for t in threads:
            t.join(timeout=10)
        assert len(ends) == 3
        r = client.open_run("cap/after", framework="test")
        r.log("ck", {"x": np.ones(4, np.float32)})
        r.close()
        assert [t.key for t in client.list_tensors("cap/after")] == ["x"]
    finally:
        release.set()
        server.stop()


def _token(data_dir, scope, label):
    res = subprocess.run([str(REPRODD), "token", "create", "--role", "submitter", "--scope", scope,
                          "--label", label, "--data-dir", str(data_dir)],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert re.fullmatch(r"rpd_[0-9a-f]{64}", res.stdout.strip()), res.stdout
    return res.stdout.strip()


def test_per_token_stream_cap_leaves_room_for_others(tmp_path):
    data = tmp_path / "data"
    greedy, other = _token(data, "ta", "greedy-a"), _token(data, "tb", "other-b")
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                     extra_args=["--auth", "tokens", "--max-streams-per-token", "2",
                                 "--stream-idle-timeout", "0"])
    release = threading.Event()
    try:
        ga = reprod_client.Client(server.address, token=greedy)
        ga.open_run("ta/r", framework="test").close()
        ends, threads = {}, []
        for k in range(2):
            call = ga._ingest_raw(stalled_stream_requests("ta/r", release), metadata=ga._metadata)
            t = threading.Thread(target=consume, args=(call, ends, k))
            t.start()
            threads.append(t)
        time.sleep(0.5)
        r = ga.open_run("ta/third", framework="test")
        r.log("ck", {"x": np.zeros(4, np.float32)})
        with pytest.raises(reprod_client.ResourceExhausted) as err:
            r.flush(timeout=10)
        assert ("token 'greedy-a' has 2 ingest streams open, its limit "
                "(--max-streams-per-token 2)") in str(err.value)
        r.abort()
        # Another token still pushes.
        ob = reprod_client.Client(server.address, token=other)
        r = ob.open_run("tb/r", framework="test")
        r.log("ck", {"x": np.ones(4, np.float32)})
        r.close()
        assert [t.key for t in ob.list_tensors("tb/r")] == ["x"]
        release.set()
        for t in threads:
            t.join(timeout=10)
        assert len(ends) == 2
        # Its streams closed, the first token pushes again.
        r = ga.open_run("ta/after", framework="test")
        r.log("ck", {"x": np.ones(4, np.float32)})
        r.close()
    finally:
        release.set()
        server.stop()


@pytest.mark.parametrize("field, kwargs, expected", [
    ("framework", dict(framework="x" * 257),
     "framework has 257 bytes, over the limit of 256"),
    ("framework_version", dict(framework="t", framework_version="v" * 3000),
     "framework_version has 3000 bytes, over the limit of 256"),
    ("device", dict(framework="t", device="d" * 300),
     "device has 300 bytes, over the limit of 256"),
    ("labels", dict(framework="t", labels={f"k{i}": "v" for i in range(65)}),
     "labels has 65 entries, over the limit of 64"),
    ("label value", dict(framework="t", labels={"note": "n" * 1025}),
     "label 'note' has 1025 bytes, over the limit of 1024"),
    ("label key", dict(framework="t", labels={"k" * 129: "v"}),
     "has 129 bytes, over the limit of 128"),
])
def test_run_metadata_limits(reprodd, field, kwargs, expected):
    client = reprod_client.Client(reprodd.address)
    name = "meta/" + field.replace(" ", "-")
    with pytest.raises(reprod_client.InvalidArgument) as err:
        client.open_run(name, **kwargs)
    assert expected in str(err.value)
    assert f"run '{name}'" in str(err.value)
    with pytest.raises(reprod_client.NotFound):
        client.get_run(name)
    # At the limits exactly, the run is created.
    ok = client.open_run(name + "-ok", framework="f" * 256,
                         labels={f"k{i}": "v" * 1024 for i in range(64)})
    ok.close()
    assert client.get_run(name + "-ok").framework == "f" * 256
