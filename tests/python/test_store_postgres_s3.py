"""The postgres+s3 store against the real engines: a throwaway PostgreSQL 15
and a single-node Ceph radosgw (tests/services/) come up, and the C++ suites
run against them:

* the Store conformance suite (storage/store_conformance_test.cc), the one
  the memory and RocksDB stores pass, for the PostgresS3 backends;
* postgres_s3_store_test: multipart uploads, crash leftovers reclaimed by
  the sweep, lifecycle-safe deletes, checksums on read, schema versions,
  two replicas on one database.

Without the servers those binaries skip these tests, saying so; here every
one of them must run (no "[  SKIPPED ]"), and the counts are checked so a
filter that matched nothing cannot pass.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for services

from conftest import BIN_DIR  # noqa: E402
from services.fixtures import ceph_s3, postgres_server  # noqa: E402,F401


def run_gtest(binary, gtest_filter, postgres_server, ceph_s3, timeout=900):
    path = BIN_DIR / binary
    if not path.exists():
        pytest.skip(f"{path} not built (cmake --build build --target {binary.split('/')[-1]})")
    env = dict(os.environ,
               REPROD_TEST_PG_URL=postgres_server.url,
               REPROD_TEST_S3_ENDPOINT=ceph_s3.endpoint,
               REPROD_TEST_S3_ACCESS_KEY=ceph_s3.access_key,
               REPROD_TEST_S3_SECRET_KEY=ceph_s3.secret_key,
               REPROD_TEST_S3_REGION=ceph_s3.region)
    proc = subprocess.run([str(path), f"--gtest_filter={gtest_filter}", "--gtest_color=no"],
                          env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    assert "[  SKIPPED ]" not in out, out[-6000:]
    passed = re.search(r"\[  PASSED  \] (\d+) test", out)
    assert passed, out[-3000:]
    return int(passed.group(1)), out


def conformance_cases():
    """The conformance suite's test names, from its own list."""
    source = (Path(__file__).resolve().parents[2] / "storage" / "store_conformance_test.cc").read_text()
    return re.findall(r"^TEST_P\(StoreTest, (\w+)\)", source, re.M)


def test_conformance_suite_on_postgres_s3(postgres_server, ceph_s3):
    cases = conformance_cases()
    assert len(cases) > 30
    passed, out = run_gtest("storage/store_conformance_test", "*/StoreTest.*/PostgresS3*",
                            postgres_server, ceph_s3)
    # Both backends (one PUT per tensor, and 5 MiB multipart parts).
    assert passed == 2 * len(cases), out[-3000:]
    for case in cases:
        for backend in ("PostgresS3", "PostgresS3Multipart"):
            assert f"[       OK ] Backends/StoreTest.{case}/{backend} (" in out, (case, backend)


def test_store_specifics_on_postgres_s3(postgres_server, ceph_s3):
    source = (Path(__file__).resolve().parents[2] / "storage" / "postgres_s3" /
              "postgres_s3_store_test.cc").read_text()
    expected = len(re.findall(r"^TEST_F\(PostgresS3StoreTest, \w+\)", source, re.M))
    assert expected >= 7
    passed, out = run_gtest("storage/postgres_s3_store_test", "*", postgres_server, ceph_s3)
    assert passed == expected, out[-3000:]
