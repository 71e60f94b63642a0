#!/usr/bin/env python3
"""Scale-out benchmark: ingest and compare on 1 and 2 reprodd replicas over one
PostgreSQL + S3 store, against the object store's own PUT/GET throughput.

One run starts its own PostgreSQL 15 and single-node Ceph radosgw on loopback
(tests/services/: PostgresServer, CephRgw) and measures, on the same engines,
the same bytes and the same machine:
  yardsticks   S3 PUT and GET with curl (`curl --aws-sigv4`, the same SigV4
               signer as tests/services/s3curl.py; `-T FILE` for PUT, `-o
               /dev/null` for GET; curl's Expect: 100-continue stays, as in the
               store's own client: curl 7.88 signs an emptied Expect header it
               does not send, and radosgw answers 100 Continue at once) of the ingest
               payload as objects of the tensor size (default 8 x 64 MiB), one
               object per request, one stream (the objects one after another)
               and 2 parallel streams (half the objects each); over http (the
               default) every PUT signs its payload's SHA-256, curl's computed
               before the clock starts (radosgw still checks it), so these are
               the store's throughput, not the client's hashing; with --https
               (radosgw with a throwaway CA's certificate, curl --cacert,
               reprodd --s3-ca-file) every PUT signs UNSIGNED-PAYLOAD, as the
               AWS SDKs do there and reprodd's --s3-payload-signing auto does;
               and, as context for the compare
               (no goal), GET of the compare's own objects (the BERT pair's
               tensors as the store holds them, listed from PostgreSQL, sizes
               from 3 KB to 94 MB) by one curl per stream over one reused
               connection, 1 and 2 streams (latency-bound: a lower bound);
  ingest       the payload (float32, default 512 MiB as 64 MiB tensors) through
               reprod_client (open_run/log/close) in child processes: one
               client into one replica, and two clients in parallel, each half
               the payload into its own replica (aggregate: bytes over first
               log to last ack of both); the clock runs from the first
               run.log() to the return of run.close() (every tensor acked,
               i.e. committed to PostgreSQL + S3); each measured twice: a
               later step (the goal rows: the client logged the same tensors
               once, untimed, so log()'s copies reuse its buffers, as at
               every training step after the first) and the first step of a
               fresh client (context: every copy in fresh pages);
  compare      a BERT-base pair (the shapes of bench/server_bench.cc, ref ~
               N(0, 0.02) float32, cand = ref + U(-1e-7, 1e-7)), both runs
               sealed in the store, `client.compare(ref, cand)` on replica A
               while it is the only replica (it submits the batches to the
               shared work queue and reduces all of them itself) and while
               replica B also runs (B's compare worker takes batches; its log
               is checked: "compare worker: job J batch B reduced"); one
               untimed warm-up first. Throughput = (ref + cand bytes) / time:
               every byte is read from S3, against the GET yardstick.
Replica B is started for the 2-replica measurements and stopped for the
1-replica ones. Every repeat measures, in this order: the 1-stream
yardsticks, the 1-replica ingests and compare, the 2-stream yardsticks, the
2-replica ingests and compare; so a drift of the machine's speed or the OSD
filling up hits a yardstick and what it judges alike. Medians of --repeats;
ratios against the issue's goal (>= 70 % of the object store's throughput):
ingest / PUT, compare / GET, 1 replica against 1 stream, 2 replicas against 2
streams. Writes STEM.json and STEM.md (default
bench/results/scaleout-<date>[-quick]) and prints the table. Every child
(reprodd, clients, curl, PostgreSQL, Ceph daemons) is stopped by its own PID
and every temporary folder removed, also on errors or Ctrl-C.

Usage: bench/run_scaleout_bench.py [--bin-dir build] [--total-mib 512]
                                   [--tensor-mib 64] [--repeats 5] [--out STEM]
                                   [--https] [--quick]
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

from run_cpu_bench import cpu_model  # bench/ is the script's own folder
from run_io_bench import bert_base_shapes, git_commit, process_cpu_s, ram_gib, stop_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))  # tests/services

from services.ceph_rgw import CephRgw  # noqa: E402
from services.postgres import PG_BIN, PostgresServer  # noqa: E402
from services.s3curl import require_curl_sigv4  # noqa: E402

MiB = 1 << 20
GOAL = 0.70  # of the object store's own throughput
BUCKET = "reprod-scaleout"
YARD_BUCKET = "reprod-yardstick"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

# One ingest client: reads its tensors (raw float32 files) and opens the run
# untimed; "warm": also logs every tensor once under other checkpoints and
# waits for the acks (a training step before the measured one: log()'s copy
# buffers are then in use, reprod_client/buffers.py); says "ready", waits
# for a line on stdin, then logs every tensor and closes (waits for every
# ack); prints its monotonic (system-wide clock) start and end and its CPU
# time.
INGEST_CHILD = r"""
import json, sys, time
import numpy as np
import reprod_client.crc32c
from reprod_client import Client
address, run_name, mode, files = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
tensors = [np.fromfile(f, dtype=np.float32) for f in files]
reprod_client.crc32c.crc32c(np.zeros(1 << 20, np.uint8))  # lazy tables, untimed
client = Client(address, timeout=600)
run = client.open_run(run_name, framework="torch")
if mode == "warm":
    for i, t in enumerate(tensors):
        run.log(f"step0-t{i}", {"output": t})
    run.flush()
warm_acked = run.stats.acked
print("ready", flush=True)
sys.stdin.readline()
c0, t0 = time.process_time(), time.monotonic()
for i, t in enumerate(tensors):
    run.log(f"t{i}", {"output": t})
run.close()
t1, c1 = time.monotonic(), time.process_time()
acked = run.stats.acked - warm_acked
client.close()
print(json.dumps({"t0": t0, "t1": t1, "cpu_s": c1 - c0, "acked": acked}), flush=True)
"""


# --- child processes --------------------------------------------------------

class Replica:
    """reprodd --store postgres+s3 on 127.0.0.1 (port 0, port file), cpu
    backend, no web UI, log level info (the compare lines are read). The S3
    keys go in its environment, never in argv. Use as a context manager."""

    def __init__(self, bin_dir, workdir, name, store_args, env):
        self.binary = os.path.join(bin_dir, "server", "reprodd")
        self.workdir = workdir
        self.name = name
        self.store_args = list(store_args)
        self.env = env
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, f"reprodd-{name}.log")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def log_text(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def __enter__(self):
        port_file = os.path.join(self.workdir, f"port-{self.name}")
        if os.path.exists(port_file):
            os.unlink(port_file)
        args = [self.binary, "--listen", "127.0.0.1:0", "--port-file", port_file,
                "--backend", "cpu", "--http-listen", "off", "--log-level", "info",
                *self.store_args]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         env=self.env)
        deadline = time.monotonic() + 60
        while True:
            text = ""
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
            # Serving, and its compare worker is taking batches.
            if text and "compare worker: takes distributed" in self.log_text():
                self.port = int(text)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                       else "was not ready within 60 s")
                stop_process(self.proc)
                raise RuntimeError(f"reprodd {self.name} {why}: {self.log_text()[-2000:]}")
            time.sleep(0.02)

    def __exit__(self, *exc):
        stop_process(self.proc)
        return False


def cpu_of(procs):
    """CPU seconds of each running process in procs (name -> Popen)."""
    out = {}
    for name, p in procs.items():
        try:
            out[name] = process_cpu_s(p.pid)
        except (OSError, IndexError):
            pass
    return out


def cpu_delta(before, after):
    return {k: round(after[k] - before[k], 3) for k in after if k in before}


def version(args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip().split("\n")[0]
    except (OSError, subprocess.SubprocessError):
        return "unknown"


# --- yardsticks: curl PUT / GET ----------------------------------------------

class CurlS3:
    def __init__(self, s3):
        self.curl = require_curl_sigv4()
        self.s3 = s3
        self.tls = s3.endpoint.startswith("https://")

    def payload_hash(self, sha):
        """What a PUT signs: over https "UNSIGNED-PAYLOAD" (what the AWS SDKs
        and CLI send there, and reprodd's --s3-payload-signing auto), over
        http the payload's SHA-256 `sha`."""
        return "UNSIGNED-PAYLOAD" if self.tls else sha

    def _args(self, sha):
        tls = ["--cacert", self.s3.ca_file] if self.tls else []
        return [self.curl, "-sS", "--fail", "--noproxy", "*", "--max-time", "600", *tls,
                "--aws-sigv4", f"aws:amz:{self.s3.region}:s3",
                "--user", f"{self.s3.access_key}:{self.s3.secret_key}",
                "-H", f"x-amz-content-sha256: {sha}", "-o", "/dev/null",
                "-w", "%{http_code} %{size_upload} %{size_download}"]

    def _check(self, proc, what, want):
        if proc.returncode != 0:
            raise RuntimeError(f"curl {what} exited {proc.returncode}: {proc.stderr[-1000:]}")
        code, up, down = proc.stdout.split()
        if code != "200" or (want is not None and int(float(down)) != want):
            raise RuntimeError(f"curl {what}: HTTP {code}, {up} up, {down} down")
        return int(float(up))

    def make_bucket(self, bucket):
        proc = subprocess.run([*self._args(EMPTY_SHA256), "-X", "PUT",
                               f"{self.s3.endpoint}/{bucket}"],
                              capture_output=True, text=True, timeout=120)
        self._check(proc, f"PUT /{bucket}", None)

    def put(self, bucket, key, path, sha, size):
        proc = subprocess.run([*self._args(self.payload_hash(sha)), "-T", path,
                               f"{self.s3.endpoint}/{bucket}/{key}"],
                              capture_output=True, text=True, timeout=660)
        if self._check(proc, f"PUT {key}", None) != size:
            raise RuntimeError(f"curl PUT {key}: not every byte went up")

    def get(self, bucket, key, size):
        proc = subprocess.run([*self._args(EMPTY_SHA256), f"{self.s3.endpoint}/{bucket}/{key}"],
                              capture_output=True, text=True, timeout=660)
        self._check(proc, f"GET {key}", size)


    def get_many(self, bucket, objects, n_streams):
        """GETs every (key, size) in `objects` as n_streams parallel curl
        processes (objects dealt largest first to the stream with the fewest
        bytes), each one curl with many URLs (one connection, reused, as a
        client's handle pool does); returns the wall time to the last one."""
        shares = [[] for _ in range(n_streams)]
        for key, size in sorted(objects, key=lambda o: -o[1]):
            min(shares, key=lambda sh: sum(z for _, z in sh)).append((key, size))

        def job(share):
            args = [*self._args(EMPTY_SHA256)[:-4], "-w", "%{http_code} %{size_download}\\n"]
            for key, _ in share:
                args += ["-o", "/dev/null", f"{self.s3.endpoint}/{bucket}/{key}"]
            proc = subprocess.run(args, capture_output=True, text=True, timeout=900)
            got = [line.split() for line in proc.stdout.strip().split("\n")]
            want = [["200", str(size)] for _, size in share]
            if proc.returncode != 0 or [[c, str(int(float(z)))] for c, z in got] != want:
                raise RuntimeError(f"curl GET of {len(share)} objects exited "
                                   f"{proc.returncode}: {proc.stderr[-1000:]}")
        return streams([lambda sh=sh: job(sh) for sh in shares if sh], n_streams)


def streams(jobs, n_streams):
    """Runs the callables in `jobs` as n_streams parallel sequences (stream s
    takes jobs s, s + n, ...); returns the wall time to the last one's end."""
    errors = []

    def stream(mine):
        try:
            for job in mine:
                job()
        except Exception as e:  # noqa: BLE001 - re-raised below
            errors.append(e)
    threads = [threading.Thread(target=stream, args=(jobs[s::n_streams],))
               for s in range(n_streams)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    return wall


class Yardsticks:
    """The curl PUT and GET yardsticks of the ingest payload, measured in each
    repeat right next to the measurements they judge (`measure(r, 1)` before
    the 1-replica ones, `measure(r, 2)` before the 2-replica ones), so that a
    drift of this shared VM's speed, or the OSD filling up, hits a yardstick
    and its measurement alike."""

    def __init__(self, s3, files):
        self.curl = CurlS3(s3)
        self.curl.make_bucket(YARD_BUCKET)
        self.files = files
        self.shas = []
        for path in files:
            with open(path, "rb") as f:
                self.shas.append(hashlib.file_digest(f, "sha256").hexdigest())
        self.size = os.path.getsize(files[0])
        self.samples = {("PUT", 1): [], ("PUT", 2): [], ("GET", 1): [], ("GET", 2): []}

    def measure(self, r, n):
        curl, size = self.curl, self.size
        keys = [f"y{r}-{n}/obj{i}" for i in range(len(self.files))]
        self.samples[("PUT", n)].append(streams(
            [lambda k=k, p=p, h=h: curl.put(YARD_BUCKET, k, p, h, size)
             for k, p, h in zip(keys, self.files, self.shas)], n))
        self.samples[("GET", n)].append(streams(
            [lambda k=k: curl.get(YARD_BUCKET, k, size) for k in keys], n))


# --- ingest -----------------------------------------------------------------

def ingest(targets, mode, procs):
    """targets: [(address, run name, files)], one client process each, all
    released at once; mode "cold" (the client's first log of these tensors)
    or "warm" (a later step, INGEST_CHILD); returns (wall s from the first
    log to the last ack, [client CPU s], the CPU s of `procs` (name ->
    Popen) from the release to the last client's end: a warm client's
    earlier step is not counted)."""
    children = []
    try:
        for address, run, files in targets:
            children.append(subprocess.Popen([sys.executable, "-c", INGEST_CHILD, address, run,
                                              mode, *files], stdin=subprocess.PIPE,
                                             stdout=subprocess.PIPE, text=True))
        for c in children:
            line = c.stdout.readline().strip()
            if line != "ready":
                c.wait(timeout=60)
                raise RuntimeError(f"ingest client said {line!r}, exited {c.returncode}")
        c0 = cpu_of(procs)
        for c in children:
            c.stdin.write("go\n")
            c.stdin.flush()
        results = []
        for (_, _, files), c in zip(targets, children):
            out, _ = c.communicate(timeout=900)
            if c.returncode != 0:
                raise RuntimeError(f"ingest client exited {c.returncode}")
            res = json.loads(out.strip().split("\n")[-1])
            if res["acked"] != len(files):
                raise RuntimeError(f"{res['acked']} of {len(files)} tensors acked")
            results.append(res)
        servers_cpu = cpu_delta(c0, cpu_of(procs))
    finally:
        for c in children:
            stop_process(c, timeout=10)
            for s in (c.stdin, c.stdout):
                if s:
                    s.close()
    wall = max(r["t1"] for r in results) - min(r["t0"] for r in results)
    return wall, [r["cpu_s"] for r in results], servers_cpu


# --- compare ----------------------------------------------------------------

def bert_pair(quick):
    rng = np.random.default_rng(1)
    ref, cand, elements = {}, {}, 0
    for key, shape in bert_base_shapes(quick):
        a = rng.standard_normal(shape, dtype=np.float32)
        a *= np.float32(0.02)
        ref[key] = a
        cand[key] = a + rng.uniform(-1e-7, 1e-7, size=shape).astype(np.float32)
        elements += a.size
    return ref, cand, elements


def push_sealed(address, name, tensors):
    from reprod_client import Client
    with Client(address, timeout=600) as client:
        run = client.open_run(name, framework="torch")
        for key, value in tensors.items():
            run.log("weights", {key: value})
        run.seal()


def compare_once(address, log_a, log_b, n_tensors):
    """(seconds, batches planned, batches B reduced) of one compare on A."""
    from reprod_client import Client
    before_b = log_b().count("compare worker: job") if log_b else 0
    with Client(address, timeout=600) as client:
        t0 = time.perf_counter()
        report = client.compare("bert/ref", "bert/cand", timeout=900)
        seconds = time.perf_counter() - t0
    got = len(json.loads(report.json())["tensors"])
    if got != n_tensors:
        raise RuntimeError(f"the report holds {got} of {n_tensors} pairs")
    plans = re.findall(r"distributed compare bert/ref vs bert/cand: (\d+) pairs in (\d+) batches",
                       log_a())
    batches = int(plans[-1][1]) if plans else 0
    by_b = (log_b().count("compare worker: job") - before_b) if log_b else 0
    return seconds, batches, by_b


# --- report -----------------------------------------------------------------

def row(name, samples, nbytes, extra=None):
    med = statistics.median(samples)
    r = {"name": name, "seconds": med, "samples_s": samples, "bytes": nbytes,
         "MBps": nbytes / med / 1e6}
    r.update(extra or {})
    return r


S3_SCHEME_TEXT = {
    "https": "radosgw serves https only (--https; beast, a throwaway CA's certificate, TLS 1.3 on "
             "loopback), so every byte is encrypted by the sender and decrypted by radosgw, "
             "for the yardsticks and reprod alike; the PUTs (curl's and reprodd's) sign "
             "UNSIGNED-PAYLOAD, as the AWS SDKs and CLI do over https and reprodd's "
             "--s3-payload-signing auto does: TLS protects the bytes, and nobody hashes them.",
    "http": "radosgw serves plain http, so every PUT signs its payload's SHA-256: "
            "curl's were computed before the clock starts, reprodd computes its own on the "
            "same cores; radosgw checks both.",
}


def markdown(res):
    m, s, load = res["machine"], res["settings"], res["load_average"]
    lines = [f"# Scale-out benchmark (PostgreSQL + S3, 1 and 2 replicas), {res['date']}", "",
             f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['ram_gib']} GiB RAM, "
             f"{m['kernel']}. Commit {res['git_commit'][:12]}. {res['versions']['ceph']}; "
             f"{res['versions']['postgres']}; {res['versions']['curl']}. Load average "
             f"(1/5/15 min) at start {'/'.join(f'{x:.2f}' for x in load['start'])}, at end "
             f"{'/'.join(f'{x:.2f}' for x in load['end'])}.", "",
             f"**Everything shares these {m['nproc']} cores**: the Ceph monitor, OSD "
             "(BlueStore on a sparse file on the local disk) and radosgw, PostgreSQL, the "
             "reprodd replicas and the clients (Python, or curl for the yardsticks). A second "
             "replica adds no CPU here, so 2 replicas are not expected to beat 1 on this "
             "machine; the scale-out gain needs replicas (and an object store) on their own "
             "cores. The yardsticks pay the same sharing (curl + radosgw + OSD), and the "
             "ratios compare like with like in the same run.", ""]
    if load["start"][0] > m["nproc"]:
        lines += [f"**The machine was loaded (1-minute load average {load['start'][0]:.2f} "
                  f"> {m['nproc']} before the run): other processes shared the cores too.**", ""]
    lines += [f"Produced by `bench/run_scaleout_bench.py{' --quick' if s['quick'] else ''}`: "
              f"medians of {s['repeats']} runs; ingest payload {s['total_mib']} MiB as "
              f"{s['tensors']} float32 tensors of {s['tensor_mib']} MiB (yardstick objects of "
              f"the same size and bytes); compare: BERT-{'subset' if s['quick'] else 'base'} "
              f"pair, {res['compare']['tensors_per_run']} tensors, "
              f"{res['compare']['elements_per_run'] / 1e6:.1f}M float32 per run, both sealed; "
              "MB = 10^6 bytes. Each repeat measures the curl yardsticks right before the "
              "measurements they judge (1 stream before the 1-replica ones, 2 streams before "
              "the 2-replica ones).", "",
              "| measurement | median | throughput | samples (s) | CPU s (medians) |",
              "|---|---|---|---|---|"]
    for r in res["rows"]:
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in r.get("cpu_s", {}).items())
        lines.append(f"| {r['name']} | {r['seconds']:.2f} s | {r['MBps']:.0f} MB/s | "
                     f"{', '.join(f'{x:.2f}' for x in r['samples_s'])} | {cpu} |")
    lines += ["", "| ratio (of the medians) | value | goal | met | each repeat |",
              "|---|---|---|---|---|"]
    for r in res["ratios"]:
        lines.append(f"| {r['name']} | {100 * r['value']:.0f} % | >= {100 * r['goal']:.0f} % | "
                     f"{'yes' if r['met'] else '**no**'} | "
                     f"{', '.join(f'{100 * x:.0f} %' for x in r['per_repeat'])} |")
    for r in res["context_ratios"]:
        lines.append(f"| {r['name']} (context, no goal) | {100 * r['value']:.0f} % | - | - | |")
    lines += ["", "The goal ratios pair 1 replica with 1 curl stream and 2 replicas (2 clients) "
              "with 2 parallel streams, against objects of the tensor size (the store's best "
              "case: large objects, few requests). The goal's ingest rows are a later step of "
              "a client (as every training step after the first): the client logged the same "
              "tensors once before the clock starts, so log()'s copies go into buffers it "
              "already has; the first-step rows (context) are a fresh client process, whose "
              "every copy needs fresh pages, which the kernel zeroes (on this VM that cost "
              "dominates a cold client's CPU). The store writes tensors over 16 MiB as "
              "multipart uploads of 16 MiB parts. " + S3_SCHEME_TEXT[s["s3_scheme"]] +
              " The compare reads its runs' objects in CRC-checked "
              "ranges. The GETs of the compare's own objects (context rows: one curl per stream, "
              "one object after another; most are small, 3 KB biases and 2.4-9.4 MB matrices) "
              "are bound by per-request latency; the compare reads the same bytes faster, so "
              "those rows are a lower bound, not the store's limit."]
    c = res["compare"]
    lines += ["", f"Distributed compare: {c['batches'][0] if c['batches'] else 0} batches of "
              "about 256 MiB per compare (A's log); batches reduced by replica B in the "
              f"2-replica compares: {c['batches_by_b_2']} (per repeat); in the 1-replica "
              f"compares B was not running."]
    if not all(c["batches_by_b_2"]):
        lines.append("**In some 2-replica compares replica B reduced no batch** (fewer than "
                     "two batches are compared locally, or A took them all).")
    return "\n".join(lines) + "\n"


def median_cpu(samples):
    keys = set().union(*samples) if samples else set()
    return {k: statistics.median(s[k] for s in samples if k in s) for k in sorted(keys)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("REPROD_BIN_DIR",
                                                        os.path.join(ROOT, "build")),
                    help="build folder with server/reprodd")
    ap.add_argument("--total-mib", type=int, default=512, help="ingest payload, MiB")
    ap.add_argument("--tensor-mib", type=int, default=64, help="size of each tensor/object, MiB")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", help="output stem: writes STEM.json and STEM.md "
                    "(default bench/results/scaleout-<date>[-quick])")
    ap.add_argument("--https", action="store_true",
                    help="radosgw on https with a throwaway CA (curl --cacert, reprodd "
                    "--s3-ca-file): every byte encrypted, and payloads unsigned, as the AWS "
                    "SDKs and reprodd's --s3-payload-signing auto do over TLS; default plain "
                    "http, where every PUT signs its payload's SHA-256")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 16 MiB as 4 MiB tensors, 1 repeat, a BERT subset (too "
                    "small to be cut into batches: the compare stays on A)")
    args = ap.parse_args()
    if args.quick:
        args.total_mib, args.tensor_mib, args.repeats = 16, 4, 1
    if args.total_mib <= 0 or args.tensor_mib <= 0 or args.total_mib % (2 * args.tensor_mib):
        ap.error("--total-mib must be a positive even multiple of --tensor-mib")
    if not os.access(os.path.join(args.bin_dir, "server", "reprodd"), os.X_OK):
        ap.error(f"{os.path.join(args.bin_dir, 'server', 'reprodd')} not built (give --bin-dir)")

    date = datetime.date.today().isoformat()
    stem = args.out or os.path.join(ROOT, "bench", "results",
                                    f"scaleout-{date}{'-quick' if args.quick else ''}")
    n_tensors = args.total_mib // args.tensor_mib
    nbytes = args.total_mib * MiB
    res = {"date": date, "git_commit": git_commit(),
           "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "ram_gib": ram_gib(),
                       "kernel": platform.release()},
           "versions": {"ceph": re.sub(r" \([0-9a-f]{40}\)", "",
                                       version(["ceph", "--version"])),
                        "postgres": version([os.path.join(PG_BIN, "postgres"), "--version"]),
                        "curl": " ".join(version(["curl", "--version"]).split()[:2]), "numpy": np.__version__},
           "load_average": {"start": list(os.getloadavg())},
           "settings": {"total_mib": args.total_mib, "tensor_mib": args.tensor_mib,
                        "tensors": n_tensors, "repeats": args.repeats, "quick": args.quick,
                        "s3_scheme": "https" if args.https else "http",
                        "bin_dir": args.bin_dir, "goal": GOAL}}

    tmp = tempfile.mkdtemp(prefix="reprod-scaleout-bench-")
    try:
        rng = np.random.default_rng(0)
        files = []
        for i in range(n_tensors):
            files.append(os.path.join(tmp, f"t{i}.f32"))
            rng.standard_normal(args.tensor_mib * MiB // 4, dtype=np.float32).tofile(files[-1])
        half = n_tensors // 2
        with PostgresServer() as pg, \
                CephRgw(block_size=(4 << 30) + 8 * nbytes * args.repeats,
                        tls=args.https) as s3:
            # For the smoke test's "nothing left behind" (all removed at the end).
            res["temp_dirs"] = [tmp, pg.dir, s3.dir]
            ceph_procs = {"radosgw": s3.procs.get("client.rgw.test"),
                          "ceph-osd": s3.procs.get("osd.0")}
            ceph_procs = {k: v for k, v in ceph_procs.items() if v is not None}
            yardsticks = Yardsticks(s3, files)
            yard = yardsticks.samples

            schema = "bench_" + uuid.uuid4().hex[:10]
            store_args = ["--store", "postgres+s3", "--pg-url", pg.url, "--pg-schema", schema,
                          "--s3-endpoint", s3.endpoint, "--s3-bucket", BUCKET,
                          "--s3-prefix", schema + "/",
                          *(["--s3-ca-file", s3.ca_file] if s3.ca_file else [])]
            env = {**os.environ, "AWS_ACCESS_KEY_ID": s3.access_key,
                   "AWS_SECRET_ACCESS_KEY": s3.secret_key}
            ref, cand, elements = bert_pair(args.quick)
            n_pairs = len(ref)
            ing1, ing2, cmp1, cmp2, get_objs1, get_objs2 = [], [], [], [], [], []
            ing1_cpu, ing2_cpu, cmp1_cpu, cmp2_cpu = [], [], [], []
            cold1, cold2, cold1_cpu, cold2_cpu = [], [], [], []
            batches, by_b_1, by_b_2 = [], [], []
            with Replica(args.bin_dir, tmp, "a", store_args, env) as a:
                t0 = time.perf_counter()
                push_sealed(a.address, "bert/ref", ref)
                push_sealed(a.address, "bert/cand", cand)
                bert_push_s = time.perf_counter() - t0
                del ref, cand
                # The compare's own objects, for the context yardstick.
                listing = pg.psql(
                    f"SELECT t.object_key, t.byte_length FROM {schema}.tensors t JOIN "
                    f"{schema}.runs r ON r.id = t.run_id WHERE r.name IN "
                    "(convert_to('bert/ref', 'UTF8'), convert_to('bert/cand', 'UTF8')) "
                    "AND t.object_key IS NOT NULL;")
                objects = [(k, int(n)) for k, n in
                           (line.split("|") for line in listing.strip().split("\n"))]
                if len(objects) != 2 * n_pairs or sum(n for _, n in objects) != 8 * elements:
                    raise RuntimeError(f"the store lists {len(objects)} objects of "
                                       f"{sum(n for _, n in objects)} bytes for the BERT pair")
                curl = CurlS3(s3)
                compare_once(a.address, a.log_text, None, n_pairs)  # warm-up
                for r in range(args.repeats):  # interleaved, so load drifts hit both
                    yardsticks.measure(r, 1)
                    procs = {**ceph_procs, "replica A": a.proc}
                    for mode, walls, cpus in (("cold", cold1, cold1_cpu), ("warm", ing1, ing1_cpu)):
                        wall, client_cpu, servers_cpu = ingest(
                            [(a.address, f"ingest/one-{mode}-{r}", files)], mode, procs)
                        walls.append(wall)
                        cpus.append({**servers_cpu, "client": client_cpu[0]})
                    get_objs1.append(curl.get_many(BUCKET, objects, 1))
                    get_objs2.append(curl.get_many(BUCKET, objects, 2))
                    c0 = cpu_of(procs)
                    seconds, planned, by_b = compare_once(a.address, a.log_text, None, n_pairs)
                    cmp1.append(seconds)
                    cmp1_cpu.append(cpu_delta(c0, cpu_of(procs)))
                    batches.append(planned)
                    by_b_1.append(by_b)
                    yardsticks.measure(r, 2)
                    with Replica(args.bin_dir, tmp, "b", store_args, env) as b:
                        procs = {**procs, "replica B": b.proc}
                        for mode, walls, cpus in (("cold", cold2, cold2_cpu),
                                                  ("warm", ing2, ing2_cpu)):
                            wall, client_cpu, servers_cpu = ingest(
                                [(a.address, f"ingest/two-a-{mode}-{r}", files[:half]),
                                 (b.address, f"ingest/two-b-{mode}-{r}", files[half:])], mode,
                                procs)
                            walls.append(wall)
                            cpus.append({**servers_cpu, "clients": sum(client_cpu)})
                        c0 = cpu_of(procs)
                        seconds, planned, by_b = compare_once(a.address, a.log_text, b.log_text,
                                                              n_pairs)
                        cmp2.append(seconds)
                        cmp2_cpu.append(cpu_delta(c0, cpu_of(procs)))
                        batches.append(planned)
                        by_b_2.append(by_b)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_average"]["end"] = list(os.getloadavg())

    bert_bytes = elements * 4 * 2  # ref + cand, every byte read from S3
    objs = f"{n_tensors} x {args.tensor_mib} MiB objects"
    rows = [row(f"S3 PUT, curl, 1 stream ({objs}, one after another)", yard[("PUT", 1)], nbytes),
            row(f"S3 PUT, curl, 2 parallel streams ({objs}, half each)", yard[("PUT", 2)],
                nbytes),
            row(f"S3 GET, curl, 1 stream ({objs})", yard[("GET", 1)], nbytes),
            row(f"S3 GET, curl, 2 parallel streams ({objs})", yard[("GET", 2)], nbytes),
            row(f"S3 GET, curl, the compare's own {2 * n_pairs} objects (both BERT runs, "
                "one curl, one connection), 1 stream", get_objs1, bert_bytes),
            row(f"S3 GET, curl, the compare's own {2 * n_pairs} objects, 2 parallel streams "
                "(balanced by bytes)", get_objs2, bert_bytes),
            row("ingest, reprod_client log/close, a later step -> 1 replica", ing1, nbytes,
                {"cpu_s": median_cpu(ing1_cpu)}),
            row("ingest, 2 reprod_client processes in parallel, half each, a later step -> "
                "its own replica (aggregate)", ing2, nbytes, {"cpu_s": median_cpu(ing2_cpu)}),
            row(f"compare BERT-{'subset' if args.quick else 'base'} pair (client.compare), "
                "1 replica", cmp1, bert_bytes, {"cpu_s": median_cpu(cmp1_cpu)}),
            row(f"compare BERT-{'subset' if args.quick else 'base'} pair (client.compare), "
                "2 replicas", cmp2, bert_bytes, {"cpu_s": median_cpu(cmp2_cpu)}),
            row("ingest, reprod_client log/close, the first step (cold client) -> 1 replica",
                cold1, nbytes, {"cpu_s": median_cpu(cold1_cpu)}),
            row("ingest, 2 reprod_client processes, half each, the first step (cold clients) "
                "-> its own replica (aggregate)", cold2, nbytes,
                {"cpu_s": median_cpu(cold2_cpu)})]
    res["rows"] = rows
    by = {k: r["MBps"] for k, r in zip(("put1", "put2", "get1", "get2", "objs1", "objs2", "ing1",
                                        "ing2", "cmp1", "cmp2", "cold1", "cold2"), rows)}

    def ratio(name, value, yard_s, yard_bytes, measured_s, measured_bytes):
        # per_repeat: each repeat's throughput over its yardstick's (the two
        # ran next to each other), to show the spread.
        return {"name": name, "value": value, "goal": GOAL, "goal_kind": "min",
                "met": value >= GOAL,
                "per_repeat": [(measured_bytes / x) / (yard_bytes / y)
                               for y, x in zip(yard_s, measured_s)]}
    res["ratios"] = [
        ratio("ingest 1 replica / S3 PUT 1 stream", by["ing1"] / by["put1"],
              yard[("PUT", 1)], nbytes, ing1, nbytes),
        ratio("ingest 2 replicas / S3 PUT 2 streams", by["ing2"] / by["put2"],
              yard[("PUT", 2)], nbytes, ing2, nbytes),
        ratio("compare 1 replica / S3 GET 1 stream", by["cmp1"] / by["get1"],
              yard[("GET", 1)], nbytes, cmp1, bert_bytes),
        ratio("compare 2 replicas / S3 GET 2 streams", by["cmp2"] / by["get2"],
              yard[("GET", 2)], nbytes, cmp2, bert_bytes)]
    best_put, best_get = max(by["put1"], by["put2"]), max(by["get1"], by["get2"])
    res["context_ratios"] = [
        {"name": "ingest 1 replica, first step (cold client) / S3 PUT 1 stream",
         "value": by["cold1"] / by["put1"]},
        {"name": "ingest 2 replicas, first step (cold clients) / S3 PUT 2 streams",
         "value": by["cold2"] / by["put2"]},
        {"name": "ingest 1 replica / best S3 PUT", "value": by["ing1"] / best_put},
        {"name": "ingest 2 replicas / best S3 PUT", "value": by["ing2"] / best_put},
        {"name": "compare 1 replica / best S3 GET", "value": by["cmp1"] / best_get},
        {"name": "compare 2 replicas / best S3 GET", "value": by["cmp2"] / best_get},
        {"name": "compare 1 replica / S3 GET of its own objects, 1 stream",
         "value": by["cmp1"] / by["objs1"]},
        {"name": "compare 2 replicas / S3 GET of its own objects, 2 streams",
         "value": by["cmp2"] / by["objs2"]},
        {"name": "2 replicas / 1 replica, ingest", "value": by["ing2"] / by["ing1"]},
        {"name": "2 replicas / 1 replica, compare", "value": by["cmp2"] / by["cmp1"]}]
    res["compare"] = {"elements_per_run": elements, "tensors_per_run": n_pairs,
                      "bytes_read": bert_bytes, "batches": batches,
                      "batches_by_b_1": by_b_1, "batches_by_b_2": by_b_2,
                      "push_both_runs_s": bert_push_s}
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
