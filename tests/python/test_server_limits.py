"""Bounded resources per client: stalled ingest streams end by the idle
timeout, a cap on concurrent streams refuses one more with
RESOURCE_EXHAUSTED, and run metadata fields have size limits."""
import threading
import time

import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
import grpc  # noqa: E402
from conftest import Reprodd  # noqa: E402
from reprod_client.client import _PB as pb  # noqa: E402


def stalled_stream(client, run, release, header_only=True):
    """An Ingest call whose client sends one BeginTensor (1 MiB declared)
    and then nothing until `release` is set."""
    def requests():
        address = pb.tensor.TensorAddress(checkpoint="ck", key="stalled")
        header = pb.tensor.TensorHeader(address=address, dtype=pb.tensor.DTYPE_UINT8,
                                        shape=[1 << 20], byte_length=1 << 20, crc32c=0)
        yield pb.ingest.IngestRequest(begin=pb.ingest.BeginTensor(
            run=run, tensor_id=1, header=header)).SerializeToString()
        release.wait()
    return client._ingest_raw(requests())


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
            assert code == grpc.StatusCode.CANCELLED, (code, details)
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
