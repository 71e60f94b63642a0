"""pytest fixtures over the throwaway services. A test module imports the
ones it uses (pytest picks them up from the module's namespace):

    from services.fixtures import postgres_server, ceph_s3  # noqa: F401

Each is module-scoped (one server per test module), skips with a message
naming the Debian package when a binary is missing, and after stopping the
server checks that none of its processes is left and its folder is gone
(a failure there shows as a teardown error).
"""
import os

import pytest

from ._common import ServiceUnavailable, keep_dirs
from .ceph_rgw import CephRgw
from .postgres import PostgresServer


def processes_naming(path):
    """PIDs of processes whose command line contains `path` (our daemons
    name files under their own temporary folder)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if str(path).encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids


def check_stopped(pids, folder):
    left = [p for p in pids if os.path.exists(f"/proc/{p}")] + processes_naming(folder)
    assert not left, f"processes left running after stop: {sorted(set(left))}"
    if not keep_dirs():
        assert not os.path.exists(folder), f"{folder} left behind"


def start_or_skip(factory):
    try:
        return factory()
    except ServiceUnavailable as e:
        pytest.skip(f"needs the Debian package {e.package}: {e}")


@pytest.fixture(scope="module")
def postgres_server():
    """A PostgresServer (started; .url, .psql(), .ready_seconds)."""
    server = start_or_skip(PostgresServer)
    pids, folder = [server.proc.pid], server.dir
    try:
        yield server
    finally:
        server.stop()
    check_stopped(pids, folder)


def serve_ceph(factory):
    """Starts a CephRgw from `factory` (or skips), yields it, stops it and
    checks that none of its daemons or its folder is left."""
    server = start_or_skip(factory)
    pids, folder = [p.pid for p in server.procs.values()], server.dir
    try:
        yield server
    finally:
        server.stop()
    check_stopped(pids, folder)


@pytest.fixture(scope="module")
def ceph_s3():
    """A CephRgw (started; .endpoint, .access_key, .secret_key, .region)."""
    yield from serve_ceph(CephRgw)


@pytest.fixture(scope="module")
def ceph_s3_tls():
    """A CephRgw serving https only (.endpoint https://..., .ca_file), its
    radosgw logging each request's canonical SigV4 form (debug rgw = 10;
    .rgw_log())."""
    yield from serve_ceph(lambda: CephRgw(tls=True, extra_rgw_conf="debug rgw = 10\n"))
