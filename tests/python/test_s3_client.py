"""Runs the C++ S3 client's gtest binary (storage/s3/s3_client_test) against
a real radosgw: a throwaway single-node Ceph from tests/services/, its
endpoint and keys handed over in REPROD_TEST_S3_*. Without them the binary
skips its server tests; here none may skip and all must pass. Twice: over
plain http (every payload's SHA-256 signed) and over https with a throwaway
CA (REPROD_TEST_S3_CA_FILE; payloads signed as UNSIGNED-PAYLOAD, which
radosgw's log must show).

The binary is found under $REPROD_BUILD_DIR (or $REPROD_BIN_DIR, as the other
tests here; default build/) at storage/s3_client_test; missing, the test
skips saying so.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from services.fixtures import ceph_s3, ceph_s3_tls  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
BUILD_DIR = Path(os.environ.get("REPROD_BUILD_DIR")
                 or os.environ.get("REPROD_BIN_DIR") or ROOT / "build")
if not BUILD_DIR.is_absolute():
    BUILD_DIR = ROOT / BUILD_DIR
BINARY = BUILD_DIR / "storage" / "s3_client_test"

# Every TEST/TEST_F in storage/s3/s3_client_test.cc: 11 against the server,
# 6 without one.
EXPECTED_TESTS = 17


# Checked before the Ceph fixture starts anything.
pytestmark = pytest.mark.skipif(
    not BINARY.exists(),
    reason=f"{BINARY} is not built (cmake --build <dir> --target s3_client_test; "
           "set REPROD_BUILD_DIR)")


def run_suite(s3, **extra_env):
    env = dict(os.environ,
               REPROD_TEST_S3_ENDPOINT=s3.endpoint,
               REPROD_TEST_S3_ACCESS_KEY=s3.access_key,
               REPROD_TEST_S3_SECRET_KEY=s3.secret_key,
               REPROD_TEST_S3_REGION=s3.region, **extra_env)
    proc = subprocess.run([str(BINARY)], capture_output=True, text=True, env=env,
                          timeout=600)
    out = proc.stdout + proc.stderr
    print(out[-4000:])
    assert proc.returncode == 0, out[-8000:]
    assert "[  SKIPPED ]" not in out, out[-8000:]
    ran = re.search(r"\[==========\] (\d+) tests? from \d+ test suites? ran", out)
    passed = re.search(r"\[  PASSED  \] (\d+) tests?\.", out)
    assert ran and passed, out[-8000:]
    assert int(ran.group(1)) == EXPECTED_TESTS, out[-8000:]
    assert int(passed.group(1)) == EXPECTED_TESTS, out[-8000:]
    # The throughput line the 64 MiB test prints (for the record, -rP shows it).
    assert re.search(r"64 MiB object: PUT [\d.]+ s \(\d+ MB/s\), GET", out), out[-8000:]


def test_s3_client_against_radosgw(ceph_s3):
    run_suite(ceph_s3)


def test_s3_client_against_radosgw_over_https(ceph_s3_tls):
    run_suite(ceph_s3_tls, REPROD_TEST_S3_CA_FILE=ceph_s3_tls.ca_file)
    # radosgw's own view: object PUTs (PutObject, UploadPart) arrived
    # unsigned, and none with a payload hash.
    put_hashes = [h for path, h in ceph_s3_tls.put_payload_hashes()
                  if path.count("/") >= 2]  # /bucket/key, not CreateBucket's /bucket
    assert len(put_hashes) >= 10, len(put_hashes)
    assert set(put_hashes) == {"UNSIGNED-PAYLOAD"}, set(put_hashes)
