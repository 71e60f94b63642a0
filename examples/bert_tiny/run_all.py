#!/usr/bin/env python3
"""Runs the whole bert_tiny example against a reprod server and judges it.

  1. prepares the fake data and the shared weights in the workdir
     (make_data.py, convert_weights.py);
  2. runs every acceptance script -- forward, metric, loss, lr, bp_align,
     train_align -- three times, each in its own process, streaming into:
       bert_tiny/torch-SUFFIX          the reference
       bert_tiny/paddle-SUFFIX         the port
       bert_tiny/paddle-broken-SUFFIX  the port with --break (square Linear
                                       weights loaded untransposed)
     (--namespace replaces "bert_tiny");
  3. seals the three runs (reprodctl runs seal);
  4. compares torch with each paddle run under the competition preset
     (reprodctl compare --preset competition), prints both reports as
     Markdown and a one-line summary.

Exit status 0 only when the good port passes and the broken one fails with
its first failure at forward/logits; 1 when the verdicts are not those;
2 when a step could not run. Progress goes to stderr, the reports to stdout.
This process never imports torch or paddle.

Examples:
  .venv/bin/python examples/bert_tiny/run_all.py                  # own reprodd
  .venv/bin/python examples/bert_tiny/run_all.py --server 127.0.0.1:50051
  .venv/bin/python examples/bert_tiny/run_all.py --out out/bert_tiny --workdir /tmp/bt
  # a review server with --auth tokens, as team42's submitter:
  REPROD_TOKEN=rpd_... .venv/bin/python examples/bert_tiny/run_all.py --server HOST:PORT --namespace team42
"""
import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCRIPTS = ["forward", "metric", "loss", "lr", "bp_align", "train_align"]
EXPECTED_FIRST_FAILURE = {"checkpoint": "forward", "key": "logits"}
SCRIPT_TIMEOUT_S = 300

START = time.time()


def progress(msg):
    print(f"[{time.time() - START:6.1f}s] {msg}", file=sys.stderr, flush=True)


class StepFailed(Exception):
    pass


def run_checked(cmd, what, timeout=SCRIPT_TIMEOUT_S, ok_codes=(0,)):
    """Runs cmd, returns the CompletedProcess; StepFailed (with its output)
    when it exits with a code outside ok_codes or runs past the timeout."""
    try:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{what}: still running after {timeout}s")
    except OSError as e:
        raise StepFailed(f"{what}: {e}")
    if proc.returncode not in ok_codes:
        raise StepFailed(f"{what}: exit {proc.returncode}\n--- stdout\n{proc.stdout}"
                         f"--- stderr\n{proc.stderr}")
    return proc


class OwnServer:
    """A reprodd on an ephemeral loopback port with a temporary RocksDB
    data dir; stopped with SIGTERM (then SIGKILL) on close."""

    def __init__(self, reprodd):
        if not Path(reprodd).exists():
            raise StepFailed(f"reprodd not found at {reprodd} (build it, or pass --reprodd "
                             "PATH or --server ADDR)")
        self.dir = Path(tempfile.mkdtemp(prefix="bert_tiny_reprodd_"))
        port_file = self.dir / "port"
        self.log = open(self.dir / "reprodd.log", "w")
        self.proc = subprocess.Popen(
            [str(reprodd), "--listen", "127.0.0.1:0", "--port-file", str(port_file),
             "--http-listen", "127.0.0.1:0",
             "--data-dir", str(self.dir / "data"), "--log-level", "warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            if self.proc.poll() is not None:
                self.close()
                raise StepFailed(f"reprodd exited with {self.proc.returncode} before listening")
            text = port_file.read_text().strip() if port_file.exists() else ""
            if text:
                self.address = f"127.0.0.1:{int(text)}"
                return
            if time.time() > deadline:
                self.close()
                raise StepFailed("reprodd did not write its port file within 30s")
            time.sleep(0.05)

    def close(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def prepare(python, workdir):
    if (workdir / "weights_paddle.npz").exists() and (workdir / "data").is_dir():
        progress(f"data and weights already in {workdir}")
        return
    for script in ("make_data.py", "convert_weights.py"):
        t = time.time()
        run_checked([python, HERE / script, "--workdir", workdir], script)
        progress(f"{script} ({time.time() - t:.1f}s)")


@contextlib.contextmanager
def server_and_workdir(args):
    """(address, workdir) for the example's scripts: args.server or a reprodd
    of its own, args.workdir or a temporary folder, prepared (data and
    weights). The own reprodd is stopped and the temporary folder removed
    when the block ends."""
    server = tmp_workdir = None
    try:
        if args.server:
            address = args.server
        else:
            server = OwnServer(args.reprodd)
            address = server.address
            progress(f"started reprodd on {address}")
        if args.workdir:
            workdir = Path(args.workdir).resolve()
        else:
            workdir = tmp_workdir = Path(tempfile.mkdtemp(prefix="bert_tiny_work_"))
        workdir.mkdir(parents=True, exist_ok=True)
        prepare(args.python, workdir)
        yield address, workdir
    finally:
        if server:
            server.close()
        if tmp_workdir:
            shutil.rmtree(tmp_workdir, ignore_errors=True)


def abort_runs(reprodctl, address, runs):
    """Marks `runs` ABORTED, best effort: nothing is left OPEN on a shared
    server after a failed step."""
    for run in runs:
        subprocess.run([reprodctl, "--server", address, "runs", "seal", run, "--abort"],
                       capture_output=True, timeout=30)


def run_variant(python, server, workdir, framework, run, extra):
    """Runs every acceptance script into `run`; returns the train_align
    accuracy line the script printed."""
    train_line = ""
    for name in SCRIPTS:
        t = time.time()
        proc = run_checked([python, HERE / f"{name}.py", "--framework", framework,
                            "--run", run, "--workdir", workdir, "--server", server, *extra],
                           f"{name}.py --framework {framework} {' '.join(extra)}".strip())
        m = re.search(r"^train_align\[.*$", proc.stderr, re.MULTILINE)
        if m:
            train_line = m.group(0)
        progress(f"{run}: {name}.py ({time.time() - t:.1f}s)" + (f"  {train_line}" if m else ""))
    return train_line


def compare(reprodctl, server, ref, cand):
    """reprodctl compare under the competition preset; returns (markdown,
    report JSON dict)."""
    what = f"reprodctl compare {ref} {cand}"
    proc = run_checked([reprodctl, "--server", server, "compare", ref, cand,
                        "--preset", "competition", "--format", "markdown"],
                       what, ok_codes=(0, 1))
    m = re.search(r"\b(rpt-[0-9a-f]+)\b", proc.stderr)
    if not m:
        raise StepFailed(f"{what}: no report id on stderr:\n{proc.stderr}")
    got = run_checked([reprodctl, "--server", server, "report", "get", m.group(1),
                       "--format", "json"], f"reprodctl report get {m.group(1)}",
                      ok_codes=(0, 1))  # it exits like compare: 1 = a failed report
    report = json.loads(got.stdout)
    if report["passed"] != (proc.returncode == 0):
        raise StepFailed(f"{what}: exit {proc.returncode} but the report says "
                         f"passed={report['passed']}")
    return proc.stdout, report


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--server", help="use this reprodd (HOST:PORT) instead of starting one")
    p.add_argument("--reprodd", default=str(ROOT / "build" / "server" / "reprodd"),
                   help="reprodd to start on an ephemeral port when --server is not given "
                        "(default: %(default)s)")
    p.add_argument("--reprodctl", default=str(ROOT / "build" / "client" / "cpp" / "reprodctl"),
                   help="the CLI used to seal and compare (default: %(default)s)")
    p.add_argument("--workdir", help="data and weights folder (default: a temporary one, "
                                     "removed at the end); prepared when empty")
    p.add_argument("--suffix", default=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}",
                   help="run name suffix (default: time and pid, so reruns never collide)")
    p.add_argument("--namespace", default="bert_tiny",
                   help="namespace of the three runs, NAMESPACE/torch-SUFFIX etc. (default: "
                        "%(default)s); on a server with --auth tokens, REPROD_TOKEN (passed on "
                        "to every script and reprodctl) must be a submitter token scoped to "
                        "this namespace, or an admin's")
    p.add_argument("--out", help="also write good.{md,json}, broken.{md,json} and "
                                 "summary.json into this folder")
    p.add_argument("--python", default=sys.executable,
                   help="interpreter for the scripts (default: this one)")
    args = p.parse_args()
    # Absolute, but without resolving symlinks: a venv's python is one.
    for name in ("reprodd", "reprodctl", "python"):
        value = getattr(args, name)
        if os.sep in value:
            setattr(args, name, os.path.abspath(value))

    if not Path(args.reprodctl).exists():
        progress(f"reprodctl not found at {args.reprodctl} (build it or pass --reprodctl)")
        return 2
    runs = {
        "torch": (f"{args.namespace}/torch-{args.suffix}", "torch", []),
        "paddle": (f"{args.namespace}/paddle-{args.suffix}", "paddle", []),
        "broken": (f"{args.namespace}/paddle-broken-{args.suffix}", "paddle", ["--break"]),
    }
    opened = []
    try:
        with server_and_workdir(args) as (address, workdir):
            try:
                train = {}
                for label, (run, framework, extra) in runs.items():
                    opened.append(run)
                    train[label] = run_variant(args.python, address, workdir, framework, run,
                                               extra)
                for run in list(opened):
                    run_checked([args.reprodctl, "--server", address, "runs", "seal", run],
                                f"reprodctl runs seal {run}")
                    opened.remove(run)
                progress("sealed " + ", ".join(r for r, _, _ in runs.values()))

                good_md, good = compare(args.reprodctl, address, runs["torch"][0],
                                        runs["paddle"][0])
                broken_md, broken = compare(args.reprodctl, address, runs["torch"][0],
                                            runs["broken"][0])
            except StepFailed:
                abort_runs(args.reprodctl, address, opened)
                raise
    except StepFailed as e:
        progress(f"FAILED: {e}")
        return 2

    print(f"## good port: {runs['torch'][0]} vs {runs['paddle'][0]}\n")
    print(good_md)
    print(f"## broken port (--break): {runs['torch'][0]} vs {runs['broken'][0]}\n")
    print(broken_md)

    ff = broken.get("first_failure") or {}
    broken_as_expected = (not broken["passed"] and ff.get("checkpoint")
                          == EXPECTED_FIRST_FAILURE["checkpoint"]
                          and ff.get("key") == EXPECTED_FIRST_FAILURE["key"])
    ok = good["passed"] and broken_as_expected
    elapsed = time.time() - START
    where = f"{ff.get('checkpoint')}/{ff.get('key')}" if ff else "nowhere"
    summary = (f"bert_tiny: good {'PASSED' if good['passed'] else 'FAILED'} "
               f"({good['summary']['passed']}/{good['summary']['tensors']} tensors), "
               f"broken {'FAILED' if not broken['passed'] else 'PASSED'} first at {where} "
               f"({'as expected' if broken_as_expected else 'NOT as expected: forward/logits'}); "
               f"{'OK' if ok else 'NOT OK'} in {elapsed:.1f}s")

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "good.md").write_text(good_md)
        (out / "broken.md").write_text(broken_md)
        (out / "good.json").write_text(json.dumps(good, indent=1))
        (out / "broken.json").write_text(json.dumps(broken, indent=1))
        (out / "summary.json").write_text(json.dumps({
            "ok": ok, "runs": {k: v[0] for k, v in runs.items()},
            "good_passed": good["passed"], "broken_passed": broken["passed"],
            "broken_first_failure": broken.get("first_failure"),
            "train_align": train, "elapsed_s": round(elapsed, 1)}, indent=1))
    print(summary)
    progress(f"done in {elapsed:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
