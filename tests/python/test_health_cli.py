"""`reprodctl health` against a real reprodd on loopback.

The standard gRPC health service answers SERVING while reprodd takes calls
(exit 0) and NOT_SERVING once SIGTERM started its shutdown (exit 1): the
test holds a tensor half-sent on an Ingest stream so that the shutdown waits
(up to --shutdown-grace) and asks in that window. A stopped server is
unreachable (exit 3). Over TLS with --auth tokens the check needs the CA but
no token (the health service is public, docs/acl.md).
"""
import threading
import time

import grpc
import pytest

from conftest import Reprodd, run_reprodctl
from reprod_client._proto import ingest_pb2, runs_pb2, runs_pb2_grpc, tensor_pb2
from tls_certs import make_tls_certs


def _health(address, *extra, timeout=60):
    return run_reprodctl("--server", address, "health", *extra, timeout=timeout)


def test_serving_server_exits_0(tmp_path):
    server = Reprodd(tmp_path)
    try:
        res = _health(server.address)
        assert res.code == 0, res
        assert res.stdout == "SERVING\n", res
        assert res.stderr == "", res
    finally:
        server.stop()


def test_stopped_server_exits_3_at_once(tmp_path):
    server = Reprodd(tmp_path)
    address = server.address
    assert _health(address).code == 0
    server.stop()
    start = time.monotonic()
    res = _health(address, "--quiet")
    elapsed = time.monotonic() - start
    assert res.code == 3, res
    assert res.stdout == "", res
    assert f"reprod server at {address}" in res.stderr, res
    # A refused connection fails before --timeout (5 s) runs out.
    assert elapsed < 4, elapsed


def test_silent_endpoint_exits_3_within_timeout(tmp_path):
    # A socket that accepts but never speaks HTTP/2: no gRPC server there.
    # (The client gives up when no HTTP/2 SETTINGS frame has come within
    # --timeout.)
    import socket
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        res = _health(address, "--timeout", "1")
        elapsed = time.monotonic() - start
    finally:
        listener.close()
    assert res.code == 3, res
    assert "no answer within 1s" in res.stderr, res
    assert elapsed < 3, elapsed


def test_timeout_is_checked():
    res = run_reprodctl("health", "--timeout", "0")
    assert res.code == 2, res
    assert "--timeout" in res.stderr, res


def _hold_half_sent_tensor(address, run):
    """Opens an Ingest stream and sends half of a 4 KiB tensor; returns
    (call, release): the call stays open until release() is called."""
    channel = grpc.insecure_channel(address)
    runs_pb2_grpc.RunServiceStub(channel).CreateRun(
        runs_pb2.CreateRunRequest(run=runs_pb2.Run(name=run)), timeout=30)
    release = threading.Event()

    def requests():
        begin = ingest_pb2.IngestRequest()
        begin.begin.run = run
        begin.begin.tensor_id = 1
        h = begin.begin.header
        h.address.checkpoint, h.address.key = "forward", "logits"
        h.dtype = tensor_pb2.DTYPE_FLOAT32
        h.shape.append(1024)
        h.byte_length = 4096
        yield begin
        chunk = ingest_pb2.IngestRequest()
        chunk.chunk.offset = 0
        chunk.chunk.data = b"\0" * 2048
        yield chunk
        release.wait(60)

    ingest = channel.stream_stream(
        "/reprod.v1.IngestService/Ingest", request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=ingest_pb2.IngestResponse.FromString)
    call = ingest(requests(), timeout=90)

    def stop():
        release.set()
        call.cancel()
        channel.close()
    return call, stop


def test_shutting_down_server_is_not_serving(tmp_path):
    server = Reprodd(tmp_path, extra_args=["--shutdown-grace", "30"])
    stop_ingest = None
    try:
        _, stop_ingest = _hold_half_sent_tensor(server.address, "health/half")
        time.sleep(0.5)  # the server has the begin and the first chunk
        assert _health(server.address).code == 0
        server.proc.terminate()  # SIGTERM: shutdown starts, waits for the tensor
        deadline = time.monotonic() + 20
        res = None
        while time.monotonic() < deadline:
            res = _health(server.address, "--timeout", "2")
            if res.code != 0:
                break
            time.sleep(0.1)
        assert res is not None and res.code == 1, res
        assert res.stdout == "NOT_SERVING\n", res
        assert server.proc.poll() is None, "reprodd stopped before the grace ran out"
    finally:
        if stop_ingest:
            stop_ingest()
        server.stop()
    # The tensor was cancelled, so the shutdown did not need its whole grace.
    assert server.proc.returncode == 0, server.proc.returncode


def test_tls_tokens_server_needs_the_ca_but_no_token(tmp_path):
    certs = make_tls_certs(tmp_path / "tls")
    server = Reprodd(tmp_path, data_dir=tmp_path / "data", store="rocksdb",
                     extra_args=["--auth", "tokens", "--tls-cert", certs.server_cert,
                                 "--tls-key", certs.server_key])
    try:
        res = _health(server.address, "--tls-ca", certs.ca)
        assert (res.code, res.stdout) == (0, "SERVING\n"), res
        # Without the CA, the plaintext connection is refused: unreachable,
        # with the TLS hint.
        res = _health(server.address, "--timeout", "2")
        assert res.code == 3, res
        assert "--tls-ca" in res.stderr, res
        # An unrelated CA: the certificate is not trusted.
        res = _health(server.address, "--tls-ca", certs.other_ca, "--timeout", "2")
        assert res.code == 3, res
        assert "not trusted" in res.stderr, res
    finally:
        server.stop()
