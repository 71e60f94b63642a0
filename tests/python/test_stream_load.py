"""Server resources stay bounded whatever the number of ingest streams
(acceptance of the hardening issue; the load comes from ingest_load.py in a
subprocess, grpc.aio, so the test process measures only reprodd):

* 2,000 stalled streams (a BeginTensor, then nothing): reprodd's threads
  and RSS stay under stated bounds, every stalled stream ends by the idle
  timeout with DEADLINE_EXCEEDED naming its run and tensor, and a normal
  client meanwhile pushes and compares;
* 200 concurrent 8 MiB streams: peak RSS under a stated bound, every
  stream succeeds (after retries if refused with RESOURCE_EXHAUSTED), and
  every tensor is stored with the crc32c of the bytes sent.

Bounds are stated as constants below; the measured values are printed.
"""
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
from conftest import Reprodd  # noqa: E402
from reprod_client.crc32c import crc32c  # noqa: E402

LOADER = Path(__file__).with_name("ingest_load.py")
MiB = 1 << 20

STALLED_STREAMS = 2000
STALLED_MAX_THREADS = 64          # reprodd threads while 2,000 streams are open
STALLED_MAX_RSS = 256 * MiB       # reprodd peak RSS meanwhile
PUSH_STREAMS = 200
PUSH_MAX_RSS = 512 * MiB          # reprodd peak RSS for 200 x 8 MiB at once


class ProcSampler:
    """Samples a process's thread count from /proc every 20 ms; its peak RSS
    is the kernel's own (VmHWM)."""

    def __init__(self, pid):
        self.pid, self.max_threads = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            try:
                status = Path(f"/proc/{self.pid}/status").read_text()
            except OSError:
                return
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            self.max_threads = max(self.max_threads, int(fields["Threads"]))
            self._stop.wait(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join()

    def peak_rss(self):
        """VmHWM: the kernel's own peak, which no sampling gap can miss."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024


def create_runs(client, prefix, n):
    """Creates runs PREFIX/r0 .. PREFIX/r{n-1} (what ingest_load.py pushes to)."""
    for k in range(n):
        client._runs_stub.CreateRun(client._pb.runs.CreateRunRequest(
            run=client._pb.runs.Run(name=f"{prefix}/r{k}", framework="t")))


def run_loader(address, tmp_path, streams, nbytes, mode, prefix):
    out = tmp_path / f"{prefix}.json"
    proc = subprocess.Popen([sys.executable, str(LOADER), address, "--streams", str(streams),
                             "--bytes", str(nbytes), "--mode", mode, "--prefix", prefix,
                             "--out", str(out)])
    return proc, out


def test_2000_stalled_streams_end_by_the_idle_timeout(tmp_path):
    timeout_s = 4
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data",
                     extra_args=["--stream-idle-timeout", timeout_s, "--max-streams", 0])
    sampler = ProcSampler(server.proc.pid)
    try:
        client = reprod_client.Client(server.address)
        create_runs(client, "stall", STALLED_STREAMS)
        started = time.monotonic()
        loader, out = run_loader(server.address, tmp_path, STALLED_STREAMS, MiB, "stall", "stall")
        # Meanwhile a normal client pushes two runs and compares them.
        time.sleep(1)
        data = np.random.default_rng(3).standard_normal(1 << 18).astype(np.float32)
        for name in ("ok/a", "ok/b"):
            r = client.open_run(name, framework="test")
            r.log("ck", {"w": data})
            r.close()
        report = client.compare("ok/a", "ok/b")
        assert report.passed
        assert client.read_tensor("ok/b", "ck", "w").tobytes() == data.tobytes()
        pushed_at = time.monotonic() - started
        loader.wait(timeout=60)
        sampler.stop()
        ends = json.loads(out.read_text())["ends"]
        print(f"\n2,000 stalled: peak threads {sampler.max_threads}, peak RSS "
              f"{sampler.peak_rss() / MiB:.0f} MiB, normal push+compare done after "
              f"{pushed_at:.1f} s, stalled ends at {min(e[2] for e in ends):.1f}-"
              f"{max(e[2] for e in ends):.1f} s")
        assert len(ends) == STALLED_STREAMS
        codes = {e[0] for e in ends}
        assert codes == {"DEADLINE_EXCEEDED"}, codes
        for code, details, at in ends:
            assert re.fullmatch(
                rf"ingest stream idle for {timeout_s}s \(--stream-idle-timeout\) at run "
                r"'stall/r\d+' tensor ck/x after 0 of 1048576 bytes; cancelled, the tensor "
                r"discarded", details), details
            assert timeout_s - 0.5 <= at <= timeout_s + 60, at
        assert pushed_at < timeout_s, "the normal client waited for the stalled streams"
        assert sampler.max_threads <= STALLED_MAX_THREADS, sampler.max_threads
        assert sampler.peak_rss() <= STALLED_MAX_RSS, sampler.peak_rss()
        assert client.list_tensors("stall/r0") == []
        assert server.proc.poll() is None
    finally:
        sampler.stop()
        server.stop()


def test_200_concurrent_8mib_streams_stay_under_the_memory_bound(tmp_path):
    size = 8 * MiB
    server = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data", log_level="info")
    sampler = ProcSampler(server.proc.pid)
    try:
        client = reprod_client.Client(server.address)
        create_runs(client, "load", PUSH_STREAMS)
        loader, out = run_loader(server.address, tmp_path, PUSH_STREAMS, size, "push", "load")
        assert loader.wait(timeout=300) == 0
        sampler.stop()
        result = json.loads(out.read_text())
        peak = sampler.peak_rss()
        print(f"\n200 x 8 MiB: peak RSS {peak / MiB:.0f} MiB (bound {PUSH_MAX_RSS / MiB:.0f}), "
              f"{result['retries']} retries, last ack after {max(e[2] for e in result['ends']):.1f} s")
        assert [e[0] for e in result["ends"]] == ["OK"] * PUSH_STREAMS, result["ends"][:3]
        for run, crc in result["crc32c"].items():
            [t] = client.list_tensors(run)
            assert (t.key, t.byte_length, t.crc32c) == ("x", size, crc), run
        # Spot-check the stored bytes themselves against the stored crc32c.
        for k in (0, PUSH_STREAMS // 2, PUSH_STREAMS - 1):
            got = client.read_tensor(f"load/r{k}", "ck", "x").tobytes()
            assert crc32c(got) == result["crc32c"][f"load/r{k}"]
        assert peak <= PUSH_MAX_RSS, peak
    finally:
        sampler.stop()
        server.stop()
    log = (tmp_path / "reprodd.log").read_text()
    held = int(re.search(r"ingest buffer: at most (\d+) bytes held or reserved at once "
                         r"\(--ingest-buffer-bytes (\d+)\)", log).group(1))
    limit = 64 * MiB
    print(f"ingest buffer peak {held / MiB:.1f} MiB (--ingest-buffer-bytes {limit / MiB:.0f} MiB)")
    # The documented bound (ingest_budget.h): the limit plus at most one
    # message per stream whose first chunk was read on a small reservation.
    assert held <= limit + PUSH_STREAMS * (MiB + 64), held
