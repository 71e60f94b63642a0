"""The postgres+s3 store over an https S3 endpoint (a real Ceph radosgw
serving TLS with a throwaway CA, tests/services/): --s3-ca-file trusts a
private CA, and --s3-payload-signing decides whether each upload's SHA-256
is signed (auto: not over https, where TLS protects the bytes; always: yes).

Oracles: radosgw's own log of every request's canonical SigV4 form (the
payload hash it checked), hashlib's SHA-256 of the tensor bytes and of each
multipart part, and the tensors read back through reprod equal to numpy's.
"""
import hashlib
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from conftest import REPRODD, Reprodd  # noqa: E402
from reprod_client import Client  # noqa: E402
from services.fixtures import ceph_s3_tls, postgres_server  # noqa: E402,F401

MIB = 1 << 20
BUCKET = "reprod-tls"
PART = 5 * MIB


def store_args(postgres_server, ceph_s3_tls, name, *extra):
    return ["--store", "postgres+s3", "--pg-url", postgres_server.url, "--pg-schema", name,
            "--s3-endpoint", ceph_s3_tls.endpoint, "--s3-bucket", BUCKET,
            "--s3-prefix", name + "/", "--s3-part-size", str(PART), *extra]


@pytest.fixture
def s3_keys(ceph_s3_tls, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ceph_s3_tls.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", ceph_s3_tls.secret_key)


def push_and_read_back(tmp_path, args, run_name):
    """A 12 MiB tensor (3 parts of 5, 5, 2 MiB) and a 4 KiB one through a
    replica on `args`; both read back equal. Returns the tensors."""
    rng = np.random.default_rng(7)
    big = rng.standard_normal(12 * MIB // 4).astype(np.float32)
    small = rng.standard_normal(1024).astype(np.float32)
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "unused", extra_args=args)
    try:
        with Client(server.address) as client:
            run = client.open_run(run_name, framework="torch")
            run.log("fwd", {"big": big, "small": small})
            run.seal()
            np.testing.assert_array_equal(client.read_tensor(run_name, "fwd", "big"), big)
            np.testing.assert_array_equal(client.read_tensor(run_name, "fwd", "small"), small)
    finally:
        server.kill()
    return big, small


def object_put_hashes(s3, prefix):
    """The payload hash of every PUT radosgw checked under /BUCKET/prefix."""
    return [h for path, h in s3.put_payload_hashes() if path.startswith(f"/{BUCKET}/{prefix}")]


def test_https_store_with_private_ca_sends_unsigned_payloads(
        tmp_path, postgres_server, ceph_s3_tls, s3_keys):
    name = "tls_" + uuid.uuid4().hex[:10]
    args = store_args(postgres_server, ceph_s3_tls, name, "--s3-ca-file", ceph_s3_tls.ca_file)
    push_and_read_back(tmp_path, args, "tls/auto")
    hashes = object_put_hashes(ceph_s3_tls, name + "/")
    # The small tensor's PUT and the big one's 3 parts: none hashed.
    assert len(hashes) == 4, hashes
    assert set(hashes) == {"UNSIGNED-PAYLOAD"}, hashes


def test_payload_signing_always_signs_every_byte_over_https(
        tmp_path, postgres_server, ceph_s3_tls, s3_keys):
    name = "tls_" + uuid.uuid4().hex[:10]
    args = store_args(postgres_server, ceph_s3_tls, name, "--s3-ca-file", ceph_s3_tls.ca_file,
                      "--s3-payload-signing", "always")
    big, small = push_and_read_back(tmp_path, args, "tls/always")
    raw = big.tobytes()
    want = sorted([hashlib.sha256(small.tobytes()).hexdigest()] +
                  [hashlib.sha256(raw[i:i + PART]).hexdigest() for i in range(0, len(raw), PART)])
    assert sorted(object_put_hashes(ceph_s3_tls, name + "/")) == want


def test_untrusted_s3_certificate_is_refused_naming_the_cause(
        tmp_path, postgres_server, ceph_s3_tls, s3_keys):
    # No --s3-ca-file: the throwaway CA is in no system store.
    args = store_args(postgres_server, ceph_s3_tls, "tls_" + uuid.uuid4().hex[:10])
    proc = subprocess.run([str(REPRODD), "--listen", "127.0.0.1:0", "--http-listen", "off",
                           *args], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert ceph_s3_tls.endpoint in out and "certificate" in out, out
    assert "S3 CA file" in out, out


def test_s3_ca_file_with_an_http_endpoint_is_refused(
        tmp_path, postgres_server, ceph_s3_tls, s3_keys):
    args = store_args(postgres_server, ceph_s3_tls, "tls_" + uuid.uuid4().hex[:10],
                      "--s3-ca-file", ceph_s3_tls.ca_file)
    args[args.index(ceph_s3_tls.endpoint)] = ceph_s3_tls.endpoint.replace("https:", "http:")
    proc = subprocess.run([str(REPRODD), "--listen", "127.0.0.1:0", "--http-listen", "off",
                           *args], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "for an https endpoint" in out and ceph_s3_tls.ca_file in out, out
