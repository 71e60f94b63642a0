"""reprodd answers standard gRPC server reflection and health checking.

grpcurl is not packaged for Debian 12, so this plays its part with the
reflection client from grpcio-reflection: `grpcurl -plaintext HOST:PORT list`
is exactly the list_services() call below.
"""
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)
from google.protobuf.descriptor_pool import DescriptorPool

from conftest import BIN_DIR

REPRODD = BIN_DIR / "server" / "reprodd"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not REPRODD.exists():
        pytest.fail(f"reprodd not built at {REPRODD} (set REPROD_BIN_DIR)")
    tmp = tmp_path_factory.mktemp("reflection")
    port_file = tmp / "port"
    proc = subprocess.Popen(
        [str(REPRODD), "--listen", "127.0.0.1:0", "--store", "memory", "--http-listen", "off",
         "--port-file", str(port_file), "--backend", "cpu", "--log-level", "warn"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 30
    while not port_file.exists() or not port_file.read_text().strip():
        assert proc.poll() is None, proc.stdout.read().decode()
        assert time.time() < deadline, "reprodd did not listen"
        time.sleep(0.05)
    address = f"127.0.0.1:{port_file.read_text().strip()}"
    yield address
    proc.terminate()
    assert proc.wait(timeout=30) == 0


def test_reflection_lists_every_service(server):
    with grpc.insecure_channel(server) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        services = set(db.get_services())
    assert {
        "reprod.v1.RunService",
        "reprod.v1.IngestService",
        "reprod.v1.CompareService",
        "reprod.v1.ReportService",
        "grpc.health.v1.Health",
    } <= services, services
    assert any(s.startswith("grpc.reflection.") for s in services), services


def test_reflection_describes_the_methods(server):
    with grpc.insecure_channel(server) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        ingest = pool.FindServiceByName("reprod.v1.IngestService")
        method = ingest.FindMethodByName("Ingest")
        assert method.input_type.full_name == "reprod.v1.IngestRequest"
        assert method.output_type.full_name == "reprod.v1.IngestResponse"
        compare = pool.FindServiceByName("reprod.v1.CompareService")
        assert {m.name for m in compare.methods} == {"Compare", "Watch"}
        header = pool.FindMessageTypeByName("reprod.v1.TensorHeader")
        assert [f.name for f in header.fields] == [
            "address", "dtype", "shape", "byte_length", "crc32c", "placement"]


def test_health_check_serving(server):
    with grpc.insecure_channel(server) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
