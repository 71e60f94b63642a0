#!/usr/bin/env python3
"""Capture overhead benchmark: bert_tiny training-step time with capture on vs off.

One run starts its own reprodd (memory store, cpu backend, no web UI,
loopback port 0), prepares the bert_tiny data and shared weights
(examples/bert_tiny/run_all.prepare, in a temporary folder) and then, for
each framework -- torch, then paddle, each in its own subprocess (one
process never imports both) -- times one training step of bert_tiny:
forward, cross-entropy loss, backward, AdamW step and zero-grad (the
examples' common_*.make_optimizer and step), in train mode (dropout on) with
the examples' fixed seed and one math thread, on the same batch (the first
training batch, 32 x 16 tokens) every step. Four configurations:

  off     no capture;
  all     reprod_client.capture of every module (containers, dropouts and
          the root included), what=("forward", "backward"): each module's
          outputs and their gradients, streamed into a run of the reprodd;
  leaves  the same for the Embedding / LayerNorm / Linear modules only (the
          leaves both ports have, as examples/bert_tiny/localize.py selects);
  stats   every module with stats=True: [mean, mean |x|, rms, max |x|]
          (float64, 32 bytes) in place of each tensor. The reductions run on
          the training thread, a few framework ops per tensor, where the
          full capture's copies run on the sender's thread: on a CPU with
          bert_tiny's small tensors that costs more than it saves; the mode
          is for tensors too large to move off an accelerator.

The configurations are interleaved: each round runs one step of each, in an
order rotated every round, so load drifts hit all of them. --warmup rounds
first (not reported), then --steps rounds. The timed region is the step
itself (the hooks, Run.log's detach-and-copy of every captured tensor and
its queueing are in it); installing and removing the hooks is not. The
client streams asynchronously, so each captured step is followed by
Run.flush(), timed apart as "drain": the work the background sender still
had when the step returned, until the server acked every tensor. Draining
after every step keeps one step's backlog from slowing the next steps (of
any configuration) on a small machine; "drain" is what the stream costs on
top of the step when it cannot overlap with the next step's compute. The
final Run.close() of each run is timed too ("close" column). Every step's
tensors and bytes are counted from Run.stats after its drain.

Reported per framework and configuration: median and p90 of the step time,
ratio of the medians on / off, the median CPU time of the worker process
over the step (every thread: the sender's share during the step included;
on a shared machine it moves less with other load than the wall time) and
its ratio on / off, median drain, close, tensors and payload bytes logged
per step, modules captured.

Machine (CPU model, cores, load average at start and end), torch and paddle
versions, date and git commit are recorded. Writes STEM.json and STEM.md
(default bench/results/capture-<date>[-quick]) and prints the table. The
reprodd and both workers are stopped by their own PIDs and the temporary
folder is removed, also on errors or Ctrl-C.

Usage: bench/run_capture_bench.py [--bin-dir build] [--steps 30] [--warmup 3]
                                  [--out STEM] [--quick]
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXAMPLE = ROOT / "examples" / "bert_tiny"
FRAMEWORKS = ("torch", "paddle")
CONFIGS = ("off", "all", "leaves", "stats")
CONFIG_LABEL = {
    "off": "capture off",
    "all": "capture on: every module, forward + backward",
    "leaves": "capture on: Embedding/LayerNorm/Linear only, forward + backward",
    "stats": "capture on: every module, forward + backward, statistics only (stats=True)",
}
NOT_BUILT = []
LEAF_TYPES = ("Embedding", "LayerNorm", "Linear")
CHECKPOINT = "layers"
WORKER_TIMEOUT_S = 600


# --- the worker: one framework, in its own process ------------------------

class CountingRun:
    """Run.log's signature: logs into `run` and counts the tensors and their
    payload bytes. Used in the warm-up rounds only, so the counting is not
    in any timed step."""

    def __init__(self, run):
        self.run = run
        self.tensors = 0
        self.bytes = 0

    def log(self, checkpoint, tensors, step=None):
        self.run.log(checkpoint, tensors, step=step)
        for t in tensors.values():
            self.tensors += 1
            self.bytes += int(t.numel()) * t.element_size()

def worker(args):
    """Times every configuration in this process's framework and writes
    the samples as JSON to args.result."""
    sys.path.insert(0, str(EXAMPLE))
    import common
    fw = common.framework(args)  # seeds, one thread; imports only this framework
    import reprod_client

    data = common.load_data(args.workdir)
    batch = next(common.train_batches(data, 1, common.TRAIN_BATCH))
    ids, types, mask, labels = fw.tensors(*batch)
    model = fw.load_model(args.workdir)
    model.train()  # a training step: dropout on (seeded by fw.setup)
    criterion = fw.nn.CrossEntropyLoss()
    rounds = args.warmup + args.steps
    optimizer, scheduler = fw.make_optimizer(model, "linear", common.TRAIN_LR,
                                             total=3 * rounds + 2, warmup=1)
    named = list(model.named_modules() if args.framework == "torch" else
                 model.named_sublayers(include_self=True))
    leaves = tuple(getattr(fw.nn, t) for t in LEAF_TYPES)
    include = {"all": None, "stats": None,
               "leaves": [name for name, m in named if isinstance(m, leaves)]}

    def train_step():
        loss = criterion(model(ids, types, mask), labels)
        loss.backward()
        fw.step(optimizer, scheduler)
        return loss

    client = reprod_client.Client(args.server)
    runs = {c: client.open_run(f"bench/capture-{args.framework}-{c}-{args.suffix}",
                               framework=args.framework)
            for c in ("all", "leaves", "stats")}
    res = {c: {"step_s": [], "cpu_s": [], "drain_s": [], "tensors": []} for c in CONFIGS}
    modules = {}
    losses = []
    logged_bytes = {c: set() for c in CONFIGS}
    closed = False
    try:
        for r in range(rounds):
            k = r % len(CONFIGS)
            for config in CONFIGS[k:] + CONFIGS[:k]:
                if config == "off":
                    c0, t0 = time.process_time(), time.perf_counter()
                    loss = train_step()
                    step_s = time.perf_counter() - t0
                    cpu_s = time.process_time() - c0
                    drain_s, tensors = 0.0, 0
                else:
                    run = runs[config]
                    before = run.stats
                    # Warm-up rounds count the bytes logged (outside the timed rounds).
                    target = CountingRun(run) if r < args.warmup else run
                    with reprod_client.capture(model, target, checkpoint=CHECKPOINT,
                                               what=("forward", "backward"),
                                               include=include[config], step=r,
                                               stats=config == "stats") as cap:
                        c0, t0 = time.process_time(), time.perf_counter()
                        loss = train_step()
                        step_s = time.perf_counter() - t0
                        cpu_s = time.process_time() - c0
                    modules[config] = len(cap.modules)
                    t0 = time.perf_counter()
                    run.flush()
                    drain_s = time.perf_counter() - t0
                    after = run.stats
                    tensors = after.acked - before.acked
                    if after.resent:
                        raise RuntimeError(f"{config}: {after} (resends)")
                    if target is not run:
                        if target.tensors != tensors:
                            raise RuntimeError(f"{config}: {target.tensors} tensors logged, "
                                               f"{tensors} acked")
                        logged_bytes[config].add(target.bytes)
                losses.append(float(loss))
                if r >= args.warmup:
                    out = res[config]
                    out["step_s"].append(step_s)
                    out["cpu_s"].append(cpu_s)
                    out["drain_s"].append(drain_s)
                    out["tensors"].append(tensors)
        for config, run in runs.items():
            t0 = time.perf_counter()
            run.close()
            res[config]["close_s"] = time.perf_counter() - t0
        res["off"]["close_s"] = None
        closed = True
    finally:
        if not closed:  # an error is on its way out: stop the senders, keep that error
            for run in runs.values():
                try:
                    run.abort()
                except Exception:  # noqa: BLE001
                    pass
        client.close()
    for config in CONFIGS:
        res[config]["modules"] = modules.get(config, 0)
        res[config]["bytes_per_warmup_step"] = sorted(logged_bytes[config]) or [0]
    with open(args.result, "w") as f:
        json.dump({"framework": args.framework, "version": fw.VERSION,
                   "all_modules": len(list(named)), "loss_first": losses[0],
                   "loss_last": losses[-1], "configs": res}, f)


# --- the driver -------------------------------------------------------------

def percentile(samples, q):
    import numpy as np
    return float(np.percentile(samples, q))


def summarize(framework, w):
    """Rows (one per configuration) from a worker's samples."""
    import statistics
    rows = []
    off = statistics.median(w["configs"]["off"]["step_s"])
    off_cpu = statistics.median(w["configs"]["off"]["cpu_s"])
    for config in CONFIGS:
        c = w["configs"][config]
        med = statistics.median(c["step_s"])
        rows.append({
            "framework": framework, "config": config, "name": CONFIG_LABEL[config],
            "median_s": med, "p90_s": percentile(c["step_s"], 90), "ratio_vs_off": med / off,
            "cpu_median_s": statistics.median(c["cpu_s"]),
            "cpu_ratio_vs_off": statistics.median(c["cpu_s"]) / off_cpu,
            "drain_median_s": statistics.median(c["drain_s"]), "close_s": c["close_s"],
            "tensors_per_step": statistics.median(c["tensors"]),
            "bytes_per_step": c["bytes_per_warmup_step"][0],
            "modules_captured": c["modules"], "samples_s": c["step_s"],
            "drain_samples_s": c["drain_s"],
            "constant_per_step": len(set(c["tensors"])) == 1
            and len(c["bytes_per_warmup_step"]) == 1,
        })
    return rows


def size_text(n):
    """"13.71 MB", "3.0 kB", "0 B": payload bytes per step."""
    if n >= 1e6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB" if n >= 1e3 else f"{n:.0f} B"


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f} ms"


def markdown(res):
    m, load, s = res["machine"], res["load_average"], res["settings"]
    v = res["versions"]
    lines = [f"# Capture overhead benchmark, {res['date']}", "",
             f"Machine: {m['cpu_model']}, {m['nproc']} cores, {m['ram_gib']} GiB RAM, "
             f"{m['kernel']}. Commit {res['git_commit'][:12]}. torch {v['torch']}, paddle "
             f"{v['paddle']}, Python {v['python']}. Load average (1/5/15 min) at start "
             f"{'/'.join(f'{x:.2f}' for x in load['start'])}, at end "
             f"{'/'.join(f'{x:.2f}' for x in load['end'])}.", ""]
    if load["start"][0] > 1.5:
        lines += ["**The machine was loaded (1-minute load average > 1.5 before the run): "
                  "other processes shared the cores; the on/off ratios, taken interleaved in "
                  "the same run, are less affected than the absolute times.**", ""]
    lines += [f"Produced by `bench/run_capture_bench.py{' --quick' if s['quick'] else ''}`: "
              "one bert_tiny training step (forward, loss, backward, AdamW step; train mode, "
              f"fixed seed, one thread, the same batch of {s['batch']} x {s['seq_len']} tokens "
              f"every step), {s['steps']} steps per configuration after {s['warmup']} warm-up "
              f"round{'s' if s['warmup'] != 1 else ''} (bytes counted there), the "
              "configurations interleaved (rotated each round); each "
              "framework in its own process, streaming into one reprodd (memory store, "
              "loopback). Step = the timed training step with the hooks active; drain = the "
              "Run.flush() after it (the asynchronous sender's remaining work, untimed in the "
              "step); CPU / step = the worker process's CPU time over the step (all its threads: "
              "the background sender's share during the step included), less sensitive to "
              "other load on the machine than the wall time; close = the run's final "
              "Run.close().", "",
              "| framework | configuration | median step | p90 step | on / off | CPU / step "
              "| CPU on / off | median drain | close | tensors / step | bytes / step | modules |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['framework']} | {r['name']} | {r['median_s'] * 1e3:.2f} ms | "
            f"{r['p90_s'] * 1e3:.2f} ms | {r['ratio_vs_off']:.2f}x | "
            f"{ms(r['cpu_median_s'])} | {r['cpu_ratio_vs_off']:.2f}x | "
            f"{ms(r['drain_median_s'] if r['config'] != 'off' else None)} | {ms(r['close_s'])} | "
            f"{r['tensors_per_step']:.0f} | {size_text(r['bytes_per_step'])} | "
            f"{r['modules_captured'] or '-'} |")
    for fwk in FRAMEWORKS:
        for name in res["not_built"]:
            lines.append(f"| {fwk} | {name} | not built | | | | | | | | | |")
    return "\n".join(lines) + "\n"


def run_worker(cmd, result, timeout):
    """Runs one worker and returns its result JSON; the worker (which starts
    no processes of its own) is stopped by its PID on a timeout or Ctrl-C."""
    from run_io_bench import stop_process
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        stop_process(proc, timeout=10)
        proc.communicate()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n"
                           f"{err[-4000:]}{out[-1000:]}")
    with open(result) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin-dir", default=os.environ.get("REPROD_BIN_DIR", str(ROOT / "build")),
                    help="build folder with server/reprodd")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=3, help="untimed rounds first")
    ap.add_argument("--out", help="output stem: writes STEM.json and STEM.md "
                    "(default bench/results/capture-<date>[-quick])")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 steps, 1 warm-up round")
    ap.add_argument("--python", default=sys.executable, help="interpreter of the workers")
    # Internal: one framework's measurement.
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--framework", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    ap.add_argument("--server", help=argparse.SUPPRESS)
    ap.add_argument("--workdir", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--suffix", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.quick:
        args.steps, args.warmup = 5, 1
    if args.steps < 1 or args.warmup < 1:
        ap.error("--steps and --warmup must be >= 1 (the warm-up rounds count the bytes)")
    if args.worker:
        args.broken = False
        worker(args)
        return 0

    from run_cpu_bench import cpu_model  # bench/ is the script's own folder
    from run_io_bench import Reprodd, git_commit, ram_gib
    if not os.access(os.path.join(args.bin_dir, "server", "reprodd"), os.X_OK):
        ap.error(f"{os.path.join(args.bin_dir, 'server', 'reprodd')} not built (give --bin-dir)")
    sys.path.insert(0, str(EXAMPLE))
    import run_all  # framework-free: data and weights preparation

    date = datetime.date.today().isoformat()
    stem = args.out or str(BENCH / "results" / f"capture-{date}{'-quick' if args.quick else ''}")
    res = {"date": date, "git_commit": git_commit(),
           "machine": {"nproc": os.cpu_count(), "cpu_model": cpu_model(), "ram_gib": ram_gib(),
                       "kernel": platform.release()},
           "load_average": {"start": list(os.getloadavg())},
           "settings": {"steps": args.steps, "warmup": args.warmup, "quick": args.quick,
                        "bin_dir": args.bin_dir}}
    workers = {}
    tmp = tempfile.mkdtemp(prefix="reprod-capture-bench-")
    try:
        workdir = Path(tmp) / "bert_tiny"
        workdir.mkdir()
        run_all.prepare(args.python, workdir)
        with Reprodd(args.bin_dir, tmp, "memory") as srv:
            for framework in FRAMEWORKS:
                result = os.path.join(tmp, f"{framework}.json")
                cmd = [args.python, str(Path(__file__).resolve()), "--worker",
                       "--framework", framework, "--server", srv.address, "--workdir",
                       str(workdir), "--result", result, "--steps", str(args.steps),
                       "--warmup", str(args.warmup), "--suffix", str(os.getpid())]
                t = time.time()
                workers[framework] = run_worker(cmd, result, WORKER_TIMEOUT_S)
                print(f"[capture bench] {framework}: {time.time() - t:.1f}s", file=sys.stderr,
                      flush=True)
            import numpy as np
            seq_len = np.load(workdir / "data" / "train_input_ids.npy").shape[1]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_average"]["end"] = list(os.getloadavg())
    import common  # examples/bert_tiny, framework-free
    res["settings"].update({"batch": common.TRAIN_BATCH, "seq_len": seq_len})
    res["versions"] = {"torch": workers["torch"]["version"],
                       "paddle": workers["paddle"]["version"],
                       "python": platform.python_version()}
    res["rows"] = [r for fwk in FRAMEWORKS for r in summarize(fwk, workers[fwk])]
    res["models"] = {fwk: {"modules": workers[fwk]["all_modules"],
                           "loss_first": workers[fwk]["loss_first"],
                           "loss_last": workers[fwk]["loss_last"]} for fwk in FRAMEWORKS}
    res["not_built"] = NOT_BUILT
    os.makedirs(os.path.dirname(os.path.abspath(stem)), exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump(res, f, indent=2)
    md = markdown(res)
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
