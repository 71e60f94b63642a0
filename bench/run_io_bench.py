#!/usr/bin/env python3
"""Side-by-side I/O benchmark: ingest and stored compare against the machine's limits.

One run measures, on the same machine, the same bytes and the same disk:
  yardsticks   raw TCP loopback (two processes: Python socket.sendall of 1 MiB
               memoryview slices of the payload, the reader recv_into one
               preallocated 1 MiB buffer, discarding, like server_bench.cc's raw
               TCP; both loops spend their time in the kernel, not in Python),
               `dd if=/dev/zero bs=1M conv=fsync` of the same byte count into the
               data root (the disk the RocksDB data dirs live on), memcpy
               bandwidth (np.copyto between preallocated, touched arrays) and
               memcpy into fresh pages (a new array each time: faults and the
               kernel's zeroing included, as for any store that keeps new bytes);
  ingest       the payload (float32 tensors, default 512 MiB as 64 MiB tensors)
               through `reprodctl push` of .npy files (C++ client) and through
               reprod_client (open_run/log/close), each into a reprodd with
               --store memory and one with the RocksDB store (durable acks); the
               clock runs from the start of the push to the last ack (reprodctl's
               exit, Run.close()); a fresh reprodd (cpu backend, no web UI,
               loopback port 0) per measurement, started and stopped untimed;
               and reprod_client with shm=True (same-host shared memory,
               reprodd --allow-shm) into the memory store, against memcpy;
  compare      a BERT-base pair (params + grads checkpoints, the shapes of
               bench/server_bench.cc; ref ~ N(0, 0.02) float32, cand = ref +
               U(-1e-7, 1e-7)) compared from reprod_log-style .npy dict files
               (`reprodctl compare params_torch.npy params_paddle.npy`, then
               grads: two processes, their times added) and from a RocksDB
               reprodd after pushing the same files (`reprodctl compare RUN RUN`,
               one process); one untimed warm-up of each first, so both read
               from the page cache.
Medians of --repeats runs; ratios against the goals of the ingest/compare
issue. Writes STEM.json and STEM.md (default bench/results/io-<date>) and
prints the table. Every child process is stopped by its own PID and every
temporary folder removed, also on errors or Ctrl-C.

Usage: bench/run_io_bench.py [--bin-dir build] [--total-mib 512] [--repeats 3]
                             [--data-root DIR] [--out STEM] [--quick]
"""
import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from run_cpu_bench import cpu_model  # bench/ is the script's own folder

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
PIECE = MiB  # TCP yardstick write size, as reprod's 1 MiB chunks

# Goals of the issue (fractions of the yardstick; compare: at most this factor).
GOAL_MEM_CPP = 0.50
GOAL_MEM_PY = 0.35
GOAL_DURABLE = 0.80
GOAL_SHM = 0.50
GOAL_COMPARE = 2.0

# The TCP reader: serves one connection per measurement, reads exactly N
# bytes into one preallocated 1 MiB buffer (discarding them, as the raw TCP
# of server_bench.cc does), answers one byte.
TCP_READER = r"""
import socket, sys
n = int(sys.argv[1])
buf = bytearray(1 << 20)
mv = memoryview(buf)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
print(srv.getsockname()[1], flush=True)
while True:
    conn, _ = srv.accept()
    got = 0
    while got < n:
        k = conn.recv_into(mv, min(1 << 20, n - got))
        if not k:
            break
        got += k
    conn.sendall(b"k" if got == n else b"x")
    conn.close()
"""


def bert_base_shapes(quick=False):
    """(key, shape) of BERT-base parameters, as BertBaseShapes() in server_bench.cc.

    quick: a subset without the word embedding and with one encoder layer."""
    s = [("embeddings/word", (30522, 768)), ("embeddings/position", (512, 768)),
         ("embeddings/token_type", (2, 768)), ("embeddings/ln/w", (768,)),
         ("embeddings/ln/b", (768,))]
    for layer in range(1 if quick else 12):
        p = f"encoder/layer{layer}/"
        for m in ("q", "k", "v", "o"):
            s += [(p + m + "/w", (768, 768)), (p + m + "/b", (768,))]
        s += [(p + "ln1/w", (768,)), (p + "ln1/b", (768,)), (p + "ffn1/w", (768, 3072)),
              (p + "ffn1/b", (3072,)), (p + "ffn2/w", (3072, 768)), (p + "ffn2/b", (768,)),
              (p + "ln2/w", (768,)), (p + "ln2/b", (768,))]
    s += [("pooler/w", (768, 768)), ("pooler/b", (768,))]
    if quick:
        s = s[1:]
    return s


# --- machine facts ----------------------------------------------------------

def ram_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    return None


def git_commit():
    try:
        return subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def disk_of(path):
    try:
        out = subprocess.run(["df", "--output=source,fstype", path], capture_output=True,
                             text=True, timeout=10, check=True).stdout.split("\n")[1]
        return " ".join(out.split())
    except (OSError, subprocess.SubprocessError, IndexError):
        return "unknown"


# --- child processes --------------------------------------------------------

def stop_process(proc, timeout=20):
    """SIGTERM `proc` (by its PID) and wait; SIGKILL after `timeout` s."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


class Reprodd:
    """A reprodd on 127.0.0.1 (port 0, port file), cpu backend, no web UI.

    store: "memory" or "rocksdb" (in data_dir). Use as a context manager."""

    def __init__(self, bin_dir, workdir, store, data_dir=None, extra_args=()):
        self.binary = os.path.join(bin_dir, "server", "reprodd")
        self.workdir = workdir
        self.store = store
        self.data_dir = data_dir
        self.extra_args = list(extra_args)
        self.proc = None
        self.port = None
        self.log_path = os.path.join(workdir, f"reprodd-{store}.log")

    @property
    def address(self):
        return f"127.0.0.1:{self.port}"

    def __enter__(self):
        port_file = os.path.join(self.workdir, f"port-{self.store}")
        if os.path.exists(port_file):
            os.unlink(port_file)
        args = [self.binary, "--listen", "127.0.0.1:0", "--port-file", port_file,
                "--backend", "cpu", "--http-listen", "off", "--log-level", "warn"]
        args += ["--store", "memory"] if self.store == "memory" else ["--data-dir", self.data_dir]
        args += self.extra_args
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            text = ""
            if os.path.exists(port_file):
                with open(port_file) as f:
                    text = f.read().strip()
            if text:
                self.port = int(text)
                return self
            if self.proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {self.proc.returncode}" if self.proc.poll() is not None
                       else "wrote no port file within 30 s")
                stop_process(self.proc)
                with open(self.log_path) as f:
                    tail = f.read()[-2000:]
                raise RuntimeError(f"reprodd ({' '.join(args)}) {why}: {tail}")
            time.sleep(0.02)

    def __exit__(self, *exc):
        stop_process(self.proc)
        return False


def run_checked(args, timeout, ok_codes=(0,)):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if proc.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {proc.returncode}: "
                           f"{proc.stderr[-2000:]}{proc.stdout[-1000:]}")
    return proc


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def row(name, samples, nbytes=None, cpu=None):
    """cpu: [(client CPU s, server CPU s)] per sample, for the ingest rows."""
    med = statistics.median(samples)
    r = {"name": name, "seconds": med, "samples_s": samples}
    if nbytes is not None:
        r["bytes"] = nbytes
        r["GBps"] = nbytes / med / 1e9
    if cpu:
        r["client_cpu_s"] = statistics.median(c for c, _ in cpu)
        r["server_cpu_s"] = statistics.median(s for _, s in cpu)
    return r


def process_cpu_s(pid):
    """User + system CPU seconds of a running process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rusage_cpu_s(who):
    u = resource.getrusage(who)
    return u.ru_utime + u.ru_stime


# --- yardsticks -------------------------------------------------------------

def tcp_loopback(payload, repeats):
    n = payload.nbytes
    mv = memoryview(payload).cast("B")
    reader = subprocess.Popen([sys.executable, "-c", TCP_READER, str(n)], stdout=subprocess.PIPE,
                              text=True)
    try:
        port = int(reader.stdout.readline())
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
                for off in range(0, n, PIECE):
                    s.sendall(mv[off:off + PIECE])
                if s.recv(1) != b"k":
                    raise RuntimeError("TCP reader did not receive every byte")
            samples.append(time.perf_counter() - t0)
    finally:
        stop_process(reader, timeout=5)
        reader.stdout.close()
    return samples


def dd_fsync(directory, mib, repeats):
    samples, dd_rates = [], []
    path = os.path.join(directory, "dd-fsync-test")
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = run_checked(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={mib}",
                               "conv=fsync"], timeout=600)
            samples.append(time.perf_counter() - t0)
            m = re.search(r"copied, ([0-9.]+) s", out.stderr)
            if m:
                dd_rates.append(mib * MiB / float(m.group(1)) / 1e9)
            os.unlink(path)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return samples, dd_rates


def memcpy_bw(src, repeats):
    dst = np.empty_like(src)
    dst.fill(0)  # touch every page
    samples = [timed(lambda: np.copyto(dst, src)) for _ in range(repeats)]
    if not np.array_equal(dst[-16:], src[-16:]):
        raise RuntimeError("np.copyto copied wrong bytes")
    return samples


def memcpy_fresh_bw(src, repeats):
    """np.copyto into a newly allocated array each time: the kernel faults in
    and zeroes every destination page first, as for any store that keeps new
    bytes (the memory store's tensors, the server's receive buffers)."""
    samples = []
    for _ in range(repeats):
        dst = None

        def copy():
            nonlocal dst
            dst = np.empty_like(src)
            np.copyto(dst, src)
        samples.append(timed(copy))
        if not np.array_equal(dst[-16:], src[-16:]):
            raise RuntimeError("np.copyto copied wrong bytes")
        del dst
    return samples


# --- ingest -----------------------------------------------------------------

def ingest_cpp(reprodctl, files, address, run):
    """(wall s, client CPU s) of one reprodctl push."""
    c0 = rusage_cpu_s(resource.RUSAGE_CHILDREN)  # reprodd is not waited for: not counted
    wall = timed(lambda: run_checked(
        [reprodctl, "-q", "--server", address, "push", *files, "--run", run], timeout=600))
    return wall, rusage_cpu_s(resource.RUSAGE_CHILDREN) - c0


def ingest_python(tensors, address, run, shm=False):
    """(wall s, client CPU s) of one open_run/log/close (shm: through shared
    memory)."""
    from reprod_client import Client

    def push():
        client = Client(address)
        try:
            r = client.open_run(run, framework="torch", shm=shm)
            for i, t in enumerate(tensors):
                r.log(f"t{i}", {"output": t})
            r.close()  # waits for every ack
            if r.stats.acked != len(tensors):
                raise RuntimeError(f"{r.stats.acked} of {len(tensors)} tensors acked")
        finally:
            client.close()
    c0 = rusage_cpu_s(resource.RUSAGE_SELF)  # the bench process does nothing else meanwhile
    wall = timed(push)
    return wall, rusage_cpu_s(resource.RUSAGE_SELF) - c0


def measure_ingest(args, tmp, files, tensors):
    reprodctl = os.path.join(args.bin_dir, "client", "cpp", "reprodctl")
    out = {}
    configs = [(store, client) for store in ("memory", "rocksdb") for client in ("cpp", "python")]
    configs.append(("memory", "shm"))
    for store, client in configs:
        samples, cpu = [], []
        for r in range(args.repeats):
            data_dir = os.path.join(args.data_dir, f"{store}-{client}-{r}")
            extra = ["--allow-shm"] if client == "shm" else []
            try:
                with Reprodd(args.bin_dir, tmp, store, data_dir, extra) as srv:
                    run = f"bench/{client}-{r}"
                    s0 = process_cpu_s(srv.proc.pid)
                    wall, client_cpu = (ingest_cpp(reprodctl, files, srv.address, run)
                                        if client == "cpp" else
                                        ingest_python(tensors, srv.address, run,
                                                      shm=client == "shm"))
                    samples.append(wall)
                    cpu.append((client_cpu, process_cpu_s(srv.proc.pid) - s0))
            finally:
                shutil.rmtree(data_dir, ignore_errors=True)
        out[(store, client)] = (samples, cpu)
    return out


# --- compare ----------------------------------------------------------------

def write_bert_pair(directory, quick, rng):
    """params/grads _torch/_paddle .npy dicts; returns (file paths, elements per run)."""
    paths, elements = {}, 0
    for ckpt in ("params", "grads"):
        ref, cand = {}, {}
        for key, shape in bert_base_shapes(quick):
            a = rng.standard_normal(shape, dtype=np.float32)
            a *= np.float32(0.02)
            ref[key] = a
            cand[key] = a + rng.uniform(-1e-7, 1e-7, size=shape).astype(np.float32)
            elements += a.size
        for side, d in (("torch", ref), ("paddle", cand)):
            paths[(ckpt, side)] = os.path.join(directory, f"{ckpt}_{side}.npy")
            np.save(paths[(ckpt, side)], d, allow_pickle=True)
        del ref, cand
    return paths, elements


def measure_compare(args, tmp, rng):
    reprodctl = os.path.join(args.bin_dir, "client", "cpp", "reprodctl")
    bert_dir = os.path.join(tmp, "bert")
    os.makedirs(bert_dir)
    paths, elements = write_bert_pair(bert_dir, args.quick, rng)
    report = os.path.join(tmp, "report.json")
    ok = (0, 1)  # 1: a check failed (the noise may exceed a threshold); both are timings

    def file_compare():
        for ckpt in ("params", "grads"):
            run_checked([reprodctl, "-q", "--backend", "cpu", "compare", paths[(ckpt, "torch")],
                         paths[(ckpt, "paddle")], "--format", "json", "--out", report],
                        timeout=600, ok_codes=ok)

    data_dir = os.path.join(args.data_dir, "bert")
    try:
        with Reprodd(args.bin_dir, tmp, "rocksdb", data_dir) as srv:
            push_s = []
            for side in ("torch", "paddle"):
                push_s.append(timed(lambda: run_checked(
                    [reprodctl, "-q", "--server", srv.address, "push", paths[("params", side)],
                     paths[("grads", side)], "--run", f"bert/{side}", "--seal"], timeout=600)))

            def stored_compare():
                run_checked([reprodctl, "-q", "--server", srv.address, "compare", "bert/torch",
                             "bert/paddle", "--format", "json", "--out", report],
                            timeout=600, ok_codes=ok)
            file_compare()
            stored_compare()  # warm-ups
            file_s, stored_s = [], []
            for _ in range(args.repeats):  # interleaved, so load drifts hit both
                file_s.append(timed(file_compare))
                stored_s.append(timed(stored_compare))
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(bert_dir, ignore_errors=True)
    return {"elements_per_run": elements, "tensors_per_run": 2 * len(bert_base_shapes(args.quick)),
            "file_s": file_s, "stored_s": stored_s, "push_s": push_s}


# --- report -----------------------------------------------------------------

def ratio(name, value, goal, kind):
    """kind "min": value >= goal passes; "max": value <= goal passes."""
    met = value >= goal if kind == "min" else value <= goal
    return {"name": name, "value": value, "goal": goal, "goal_kind": kind, "met": met}


def fmt_goal(r):
    if r["goal_kind"] == "min":
        return f">= {100 * r['goal']:.0f} %"
    return f"<= {r['goal']:.0f}x"


def fmt_value(r):
    if r["goal_kind"] == "min":
        return f"{100 * r['value']:.0f} %"
    return f"{r['value']:.2f}x"


def markdown(res, quick):
    m = res["machine"]
    load = res["load_average"]
    lines = [f"# I/O benchmark, {res['date']}", "",
             f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['ram_gib']} GiB RAM, "
             f"{m['kernel']}; data root {res['settings']['data_root']} on {m['data_disk']}. "
             f"Commit {res['git_commit'][:12]}. Load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.2f}' for x in load['start'])}, at end "
             f"{'/'.join(f'{x:.2f}' for x in load['end'])} (the bench's own client and server "
             "add up to 2).",
             ""]
    # The end figure counts the bench's own busy client and server (about 2).
    if load["start"][0] > 2:
        lines += ["**The machine was loaded (1-minute load average > 2 before the run): other "
                  "processes shared the cores, so every number here is lower than on a quiet "
                  "machine; ratios taken in the same run are less affected.**", ""]
    s = res["settings"]
    lines += [f"Produced by `bench/run_io_bench.py{' --quick' if quick else ''}`: medians of "
              f"{s['repeats']} runs; payload {s['total_mib']} MiB as {s['tensors']} float32 "
              f"tensors of {s['tensor_mib']} MiB; Python client CRC-32C: "
              f"{res['python_crc32c']}.", "",
              "| measurement | median | throughput | CPU s client / server |",
              "|---|---|---|---|"]
    for r in res["rows"]:
        tp = f"{r['GBps']:.2f} GB/s" if "GBps" in r else ""
        cpu = (f"{r['client_cpu_s']:.2f} / {r['server_cpu_s']:.2f}" if "client_cpu_s" in r
               else "")
        lines.append(f"| {r['name']} | {r['seconds'] * 1e3:.0f} ms | {tp} | {cpu} |")
    for name in res["not_built"]:
        lines.append(f"| {name} | not built | | |")
    lines += ["", "| ratio | value | goal | met |", "|---|---|---|---|"]
    for r in res["ratios"]:
        lines.append(f"| {r['name']} | {fmt_value(r)} | {fmt_goal(r)} | "
                     f"{'yes' if r['met'] else '**no**'} |")
    for name in res["ratios_not_built"]:
        lines.append(f"| {name} | not built | >= {100 * GOAL_SHM:.0f} % | - |")
    for r in res.get("context_ratios", []):
        lines.append(f"| {r['name']} (context, no goal) | {100 * r['value']:.0f} % | - | - |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("REPROD_BIN_DIR",
                                                        os.path.join(ROOT, "build")),
                    help="build folder with server/reprodd and client/cpp/reprodctl")
    ap.add_argument("--total-mib", type=int, default=512, help="ingest payload, MiB")
    ap.add_argument("--tensor-mib", type=int, default=64, help="size of each ingest tensor, MiB")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default=tempfile.gettempdir(),
                    help="where the dd file and the RocksDB data dirs go (the disk measured)")
    ap.add_argument("--out", help="output stem: writes STEM.json and STEM.md "
                    "(default bench/results/io-<date>[-quick])")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 64 MiB as 16 MiB tensors, 1 repeat, a BERT subset")
    args = ap.parse_args()
    if args.quick:
        args.total_mib, args.tensor_mib, args.repeats = 64, 16, 1
    if args.total_mib <= 0 or args.tensor_mib <= 0 or args.total_mib % args.tensor_mib:
        ap.error("--total-mib must be a positive multiple of --tensor-mib")
    for b in (("server", "reprodd"), ("client", "cpp", "reprodctl")):
        if not os.access(os.path.join(args.bin_dir, *b), os.X_OK):
            ap.error(f"{os.path.join(args.bin_dir, *b)} not built (give --bin-dir)")
    import reprod_client.crc32c
    # Builds the numpy CRC-32C's lazy tables now: a training job pays that once,
    # not per push.
    reprod_client.crc32c.crc32c(np.zeros(MiB, np.uint8))

    date = datetime.date.today().isoformat()
    stem = args.out or os.path.join(ROOT, "bench", "results",
                                    f"io-{date}{'-quick' if args.quick else ''}")
    res = {"date": date, "git_commit": git_commit(),
           "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "ram_gib": ram_gib(),
                       "kernel": platform.release(), "data_disk": disk_of(args.data_root)},
           "load_average": {"start": list(os.getloadavg())},
           "python_crc32c": reprod_client.crc32c.IMPLEMENTATION,
           "numpy": np.__version__}
    n_tensors = args.total_mib // args.tensor_mib
    nbytes = args.total_mib * MiB
    res["settings"] = {"total_mib": args.total_mib, "tensor_mib": args.tensor_mib,
                       "tensors": n_tensors, "repeats": args.repeats, "quick": args.quick,
                       "data_root": args.data_root, "bin_dir": args.bin_dir}

    tmp = tempfile.mkdtemp(prefix="reprod-io-bench-")
    args.data_dir = tempfile.mkdtemp(prefix="reprod-io-bench-data-", dir=args.data_root)
    try:
        rng = np.random.default_rng(0)
        per = args.tensor_mib * MiB // 4
        tensors = [rng.standard_normal(per, dtype=np.float32) for _ in range(n_tensors)]
        files = []
        for i, t in enumerate(tensors):
            files.append(os.path.join(tmp, f"t{i}.npy"))
            np.save(files[-1], t)
        payload = np.concatenate(tensors)

        tcp = tcp_loopback(payload, args.repeats)
        dd, dd_rates = dd_fsync(args.data_dir, args.total_mib, args.repeats)
        mem = memcpy_bw(payload, args.repeats)
        mem_fresh = memcpy_fresh_bw(payload, args.repeats)
        del payload
        ingest = measure_ingest(args, tmp, files, tensors)
        del tensors
        cmp = measure_compare(args, tmp, rng)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(args.data_dir, ignore_errors=True)
    res["load_average"]["end"] = list(os.getloadavg())

    bert_bytes = cmp["elements_per_run"] * 4 * 2  # both runs are read
    label = {"memory": "memory store", "rocksdb": "RocksDB (durable acks)"}
    rows = [row("raw TCP loopback (2 processes: Python sendall of 1 MiB memoryview slices -> "
                "recv_into a reused 1 MiB buffer)", tcp, nbytes),
            row(f"dd if=/dev/zero bs=1M count={args.total_mib} conv=fsync on the data root "
                f"(process wall time; dd itself says {statistics.median(dd_rates):.2f} GB/s)"
                if dd_rates else "dd conv=fsync on the data root", dd, nbytes),
            row("memcpy (np.copyto, preallocated touched arrays)", mem, nbytes),
            row("memcpy into fresh pages (np.empty_like + np.copyto: page faults and the "
                "kernel's zeroing included)", mem_fresh, nbytes)]
    for (store, client), (samples, cpu) in ingest.items():
        who = {"cpp": "reprodctl push (C++), .npy files",
               "python": "reprod_client (Python) open_run/log/close",
               "shm": "reprod_client (Python) open_run(shm=True)/log/close via shared memory "
                      "(reprodd --allow-shm)"}[client]
        rows.append(row(f"ingest {who} -> {label[store]}", samples, nbytes, cpu))
    rows += [row(f"compare BERT-{'subset' if args.quick else 'base'} pair from files "
                 f"({cmp['tensors_per_run']} tensors, {cmp['elements_per_run'] / 1e6:.1f}M f32 "
                 "per side; two reprodctl compare, params + grads)", cmp["file_s"], bert_bytes),
             row("compare the same pair stored in RocksDB (reprodctl compare RUN RUN)",
                 cmp["stored_s"], bert_bytes),
             row("push of each BERT run (reprodctl push, 2 dict files, -> RocksDB; 2 samples: "
                 "ref, cand)", cmp["push_s"], bert_bytes // 2)]
    res["rows"] = rows
    res["not_built"] = []
    tcp_bw, dd_bw, memcpy = rows[0]["GBps"], rows[1]["GBps"], rows[2]["GBps"]
    memcpy_fresh = rows[3]["GBps"]
    rows_by = {key: rows[4 + i]["GBps"] for i, key in enumerate(ingest)}
    durable = min(tcp_bw, dd_bw)
    res["ratios"] = [
        ratio("memory store, C++ client / raw TCP", rows_by[("memory", "cpp")] / tcp_bw,
              GOAL_MEM_CPP, "min"),
        ratio("memory store, Python client / raw TCP", rows_by[("memory", "python")] / tcp_bw,
              GOAL_MEM_PY, "min"),
        ratio("RocksDB, C++ client / min(raw TCP, dd fsync)",
              rows_by[("rocksdb", "cpp")] / durable, GOAL_DURABLE, "min"),
        ratio("RocksDB, Python client / min(raw TCP, dd fsync)",
              rows_by[("rocksdb", "python")] / durable, GOAL_DURABLE, "min"),
        ratio("memory store, Python client via shared memory / memcpy",
              rows_by[("memory", "shm")] / memcpy, GOAL_SHM, "min"),
        ratio("stored compare / file compare (time)",
              statistics.median(cmp["stored_s"]) / statistics.median(cmp["file_s"]),
              GOAL_COMPARE, "max"),
    ]
    res["ratios_not_built"] = []
    # Not goals of the issue: the same paths against a yardstick that pays for
    # fresh destination pages too (what any store that keeps the bytes pays).
    res["context_ratios"] = [
        {"name": "memory store, Python client via shared memory / memcpy into fresh pages",
         "value": rows_by[("memory", "shm")] / memcpy_fresh},
        {"name": "memory store, C++ client / memcpy into fresh pages",
         "value": rows_by[("memory", "cpp")] / memcpy_fresh},
    ]
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res, args.quick)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)


if __name__ == "__main__":
    main()
