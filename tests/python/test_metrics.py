"""reprodd's Prometheus metrics at GET /metrics (server/metrics/).

Against a real reprodd (memory store): the Python client pushes tensors of a
known total size, then the scraped text must show exactly those bytes and
tensors, no stream left open, the per-namespace stored bytes, and after a
compare the compare count and reduced bytes of the cpu backend. A second
reprodd with --auth tokens counts refused calls by reason (gRPC and HTTP).
Last, a real Prometheus (Debian's `prometheus`, skipped with a message where
it is not installed) scrapes reprodd on loopback every second, and its
query API must return the pushed byte count.
"""
import re
import shutil
import socket
import subprocess
import time
import warnings

import grpc
import numpy as np
import pytest

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # Debian's requests warns about urllib3's version
    import requests

from conftest import Reprodd, stop_process
from reprod_client import Client, ReprodError
from test_auth_server import _token

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def scrape(server):
    r = requests.get(f"http://127.0.0.1:{server.http_port}/metrics", timeout=30)
    assert r.status_code == 200, r.text[:500]
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.text


def parse(text):
    """{(name, 'labels text'): float} of every sample line; checks the
    HELP/TYPE lines precede each family's samples."""
    samples, typed = {}, set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            typed.add(line.split()[2])
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in typed or base in typed, f"{name} has no # TYPE line before it"
        samples[(name, labels)] = float(value)
    return samples


def tensors_of(seed):
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((16, 8)).astype(np.float32),  # 512 bytes
        "b": rng.standard_normal(8).astype(np.float64),  # 64 bytes
        "ids": np.arange(10, dtype=np.int32),  # 40 bytes
    }


def push(client, run_name, seed, steps):
    run = client.open_run(run_name)
    nbytes = 0
    for step in range(steps):
        tensors = tensors_of(seed + step)
        run.log("forward", tensors, step=step)
        nbytes += sum(t.nbytes for t in tensors.values())
    run.seal()
    return nbytes, 3 * steps


def wait_for(predicate, what, timeout=30):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.time() > deadline:
            pytest.fail(f"waited {timeout} s for {what}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """A reprodd with two runs of namespace 'metrics' pushed and compared."""
    server = Reprodd(tmp_path_factory.mktemp("metrics"))
    try:
        before = parse(scrape(server))
        with Client(server.address) as client:
            ref_bytes, ref_tensors = push(client, "metrics/ref", 1, steps=3)
            cand_bytes, cand_tensors = push(client, "metrics/cand", 1, steps=3)
            after_push = scrape(server)
            report = client.compare("metrics/ref", "metrics/cand")
        yield {"server": server, "before": before, "after_push": parse(after_push),
               "after_compare": parse(scrape(server)), "report": report,
               "bytes": ref_bytes + cand_bytes, "tensors": ref_tensors + cand_tensors}
    finally:
        server.stop()


def test_fresh_server_counts_nothing(pushed):
    before = pushed["before"]
    assert before[("reprod_ingest_bytes_total", "")] == 0
    assert before[("reprod_ingest_streams_open", "")] == 0
    assert before[("reprod_ingest_tensors_total", '{kind="stored"}')] == 0
    assert before[("reprod_auth_failures_total", '{reason="unauthenticated"}')] == 0
    build = [k for k in before if k[0] == "reprod_build_info"]
    assert len(build) == 1 and re.fullmatch(r'\{version="\d+\.\d+\.\d+"\}', build[0][1]), build
    assert before[build[0]] == 1
    assert not [k for k in before if k[0] == "reprod_store_bytes"]  # nothing stored yet
    # The cpu backend keeps no resident refs: the cache gauges are there, at 0.
    assert before[("reprod_gpu_cache_bytes", '{kind="budget"}')] == 0
    assert before[("reprod_gpu_cache_bytes", '{kind="used"}')] == 0
    for event in ("hit", "miss", "eviction", "rejection"):
        assert before[("reprod_gpu_cache_events", '{event="%s"}' % event)] == 0


def test_ingest_counters_equal_what_was_pushed(pushed):
    m = pushed["after_push"]
    assert pushed["bytes"] == 2 * 3 * (512 + 64 + 40)  # the oracle: numpy's nbytes
    assert m[("reprod_ingest_bytes_total", "")] == pushed["bytes"]
    assert m[("reprod_ingest_tensors_total", '{kind="stored"}')] == pushed["tensors"]
    assert m[("reprod_ingest_tensors_total", '{kind="already_present"}')] == 0
    assert m[("reprod_ingest_tensors_total", '{kind="replaced"}')] == 0
    assert m[("reprod_ingest_ack_seconds_count", "")] == pushed["tensors"]
    assert m[("reprod_ingest_ack_seconds_bucket", '{le="+Inf"}')] == pushed["tensors"]
    assert 0 < m[("reprod_ingest_ack_seconds_sum", "")] < 60 * pushed["tensors"]
    assert m[("reprod_store_bytes", '{namespace="metrics"}')] == pushed["bytes"]


def test_no_stream_left_open(pushed):
    # A stream's end is seen by the server shortly after the client closed it.
    wait_for(lambda: parse(scrape(pushed["server"]))[("reprod_ingest_streams_open", "")] == 0,
             "reprod_ingest_streams_open to return to 0")


def test_compare_counted_by_backend(pushed):
    before, after = pushed["after_push"], pushed["after_compare"]
    assert pushed["report"].summary["tensors"] == pushed["tensors"] // 2
    assert ("reprod_compare_total", '{backend="cpu"}') not in before
    assert after[("reprod_compare_total", '{backend="cpu"}')] == 1
    assert after[("reprod_compare_seconds_count", '{backend="cpu"}')] == 1
    # Every pair was reduced: ref plus cand bytes, i.e. all that was pushed.
    assert after[("reprod_compare_bytes_total", '{backend="cpu"}')] == pushed["bytes"]


def test_auth_failures_by_reason(tmp_path_factory):
    data = tmp_path_factory.mktemp("metrics-auth")
    sub = _token(data, "--role", "submitter", "--scope", "team42", "--label", "metrics-sub")[0]
    server = Reprodd(tmp_path_factory.mktemp("metrics-auth-server"), store="rocksdb",
                     data_dir=data, extra_args=["--auth", "tokens"])
    try:
        base = f"http://127.0.0.1:{server.http_port}"
        # /metrics itself needs no token (public in server/auth/acl.cc).
        assert parse(scrape(server))[("reprod_auth_failures_total",
                                      '{reason="unauthenticated"}')] == 0
        with Client(server.address) as anonymous:  # gRPC without a token
            with pytest.raises(ReprodError) as refused:
                anonymous.runs()
            assert refused.value.code == grpc.StatusCode.UNAUTHENTICATED, refused.value
        assert requests.get(f"{base}/api/v1/runs", timeout=30).status_code == 401
        bad = {"Authorization": "Bearer rpd_" + "0" * 64}
        assert requests.get(f"{base}/api/v1/runs", headers=bad, timeout=30).status_code == 401
        own = {"Authorization": f"Bearer {sub}"}
        assert requests.get(f"{base}/api/v1/tokens", headers=own, timeout=30).status_code == 403
        m = parse(scrape(server))
        assert m[("reprod_auth_failures_total", '{reason="unauthenticated"}')] == 3
        assert m[("reprod_auth_failures_total", '{reason="permission_denied"}')] == 1
    finally:
        server.stop()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_prometheus_scrapes_reprodd(pushed, tmp_path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("Debian's prometheus is not installed (scripts/setup.sh installs it): "
                    "the real-Prometheus scrape was NOT tested")
    server = pushed["server"]
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: reprodd\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{server.http_port}']\n")
    port = free_port()
    log = open(tmp_path / "prometheus.log", "w")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        def pushed_bytes_seen():
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            try:
                r = requests.get(f"http://127.0.0.1:{port}/api/v1/query",
                                 params={"query": "reprod_ingest_bytes_total"}, timeout=5)
            except requests.ConnectionError:
                return None  # not listening yet
            if r.status_code == 503:
                return None  # listening, but its TSDB is still starting ("Service Unavailable")
            body = r.json()
            assert body["status"] == "success", body
            for series in body["data"]["result"]:
                if float(series["value"][1]) == pushed["bytes"]:
                    return series
            return None

        series = wait_for(pushed_bytes_seen, "Prometheus to report the pushed bytes", 60)
        assert series["metric"]["job"] == "reprodd"
        assert series["metric"]["instance"] == f"127.0.0.1:{server.http_port}"
    finally:
        stop_process(proc)
        log.close()
