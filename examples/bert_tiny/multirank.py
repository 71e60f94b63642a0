#!/usr/bin/env python3
"""Data-parallel bert_tiny on 2 ranks in torch and 2 in paddle, compared rank to rank.

A distributed job logs into ONE run: every rank opens the same run and
every tensor it logs carries its rank (reprod_client finds it from
torch.distributed / paddle.distributed). This script trains bert_tiny
data-parallel -- each of the --world ranks (default 2) takes its share of
every global batch, the gradients are averaged with an all-reduce, every
rank applies the same AdamW step -- for --steps steps, once in torch
(gloo process group on 127.0.0.1) and once in paddle (init_parallel_env
with the gloo backend on CPU, set up through the PADDLE_* variables that
`python -m paddle.distributed.launch` would set), one process per rank.
Each rank logs, at every step:

  forward/logits       its rows of the global batch's logits, as
                       Shard(0, global_shape=(B_global, 2), offset=(rank*B, 0)):
                       the server merges the ranks' pieces into the
                       statistics of the global logits
  loss/loss            its local loss (no placement: rank to rank)
  grads_local/<param>  its gradients before the all-reduce, Partial()
  grads/<param>        the all-reduced (averaged) gradients, Replicate():
                       every rank must hold the same bytes (the compare
                       lists any rank that does not as a replica mismatch)
  layers/...           (unless --no-captures) every Embedding, LayerNorm
                       and Linear output and output gradient of its slice,
                       through reprod_client.capture, as localize.py does
and at the end weights/<param> (Replicate()). <param> are
common.BP_GRADS, in torch's layout and names on both sides.

Run protocol (each framework): rank 0 opens the run with recreate=True,
a barrier, then the other ranks open it; after the last step the other
ranks close() theirs (flush, no seal), a barrier, and rank 0 seals.

Then `reprodctl compare TORCH PADDLE --policy multirank_policy.yaml` pairs
the runs rank to rank and this script prints, per rank, how many pairs
passed and its first failure; the report's first_divergence names the
first rank and module that diverge; then the global logits of each step
(the ranks' shards merged) and the replica mismatches.

--bug plants a bug in the paddle port on one rank only:
  rank1  rank 1 builds its model with encoder layer 1's norm1 at LayerNorm
         epsilon 1e-5 instead of 1e-12 (model_paddle.py, bug="forward");
         rank 0's model is the correct port. That LayerNorm's outputs on
         rank 1 move by 1.7e-05, at every step: rank 1 fails in "layers"
         and the first divergence is rank 1,
         bert.encoder.layer.1.attention.output.LayerNorm, forward, step 0.
         The logits, losses and gradients move less than the two
         frameworks' own differences (the bug is found by the captures
         only; with --no-captures everything passes), and it reaches rank 0
         only through the all-reduced gradients and the weights, within the
         policy's bounds: rank 0 passes.
  sync   rank 1 all-reduces a copy of classifier.weight's gradient and
         steps with its own local one (a gradient left out of the sync):
         rank 1's "replicated" gradient differs from rank 0's at step 0, a
         replica mismatch of the paddle run, and the two ranks' weights
         drift apart from then on.
  none   (default) the port as it is: every rank passes.

Exit status 0 when the compare ran (whatever it found), 2 when a step
could not run. This process imports neither torch nor paddle.

Examples:
  .venv/bin/python examples/bert_tiny/multirank.py                    # own reprodd
  .venv/bin/python examples/bert_tiny/multirank.py --bug rank1 --steps 2
  # torch once, then each paddle variant against it, on a running server:
  .venv/bin/python examples/bert_tiny/multirank.py --server HOST:PORT --suffix a
  .venv/bin/python examples/bert_tiny/multirank.py --server HOST:PORT --bug rank1 \\
      --ref bert_tiny/multirank-torch-a
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import common
from run_all import StepFailed, abort_runs, progress, run_checked, server_and_workdir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POLICY = HERE / "multirank_policy.yaml"
LEAF_TYPES = ("Embedding", "LayerNorm", "Linear")
UNSYNCED = "classifier.weight"  # --bug sync: the gradient rank 1 leaves out
WORKER_TIMEOUT_S = 300


# --- one rank (a worker process) -------------------------------------------

class Collectives:
    """all_reduce (sum, in place) and barrier of the framework's process
    group: torch.distributed with gloo, or paddle.distributed with gloo."""

    def __init__(self, args):
        self.framework = args.framework
        if args.framework == "torch":
            import torch.distributed as dist
            dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{args.port}",
                                    rank=args.rank, world_size=args.world)
        else:
            # PADDLE_TRAINER_ID, PADDLE_TRAINERS_NUM, PADDLE_TRAINER_ENDPOINTS,
            # PADDLE_CURRENT_ENDPOINT, PADDLE_MASTER and PADDLE_DISTRI_BACKEND=gloo
            # come from the launching process (launch_ranks).
            import paddle.distributed as dist
            dist.init_parallel_env()
        self.dist = dist
        if (dist.get_rank(), dist.get_world_size()) != (args.rank, args.world):
            raise RuntimeError(f"{args.framework}.distributed says rank {dist.get_rank()} of "
                               f"{dist.get_world_size()}, expected {args.rank} of {args.world}")

    def all_reduce(self, tensor):
        self.dist.all_reduce(tensor)

    def barrier(self):
        self.dist.barrier()

    def close(self):
        if self.framework == "torch":
            self.dist.destroy_process_group()


def worker_main(args):
    """One rank of one framework: data-parallel training, logging into the
    shared run (see the module docstring)."""
    fw = common.framework(args)
    import reprod_client

    coll = Collectives(args)
    rank, world, b = args.rank, args.world, args.batch
    client = reprod_client.Client(address=args.server)
    labels = {"example": "bert_tiny-multirank", "bug": args.bug, "world_size": str(world)}
    # Rank 0 (re)creates the run; the others open it once it exists.
    if rank == 0:
        run = client.open_run(args.run, framework=args.framework, labels=labels, recreate=True)
    coll.barrier()
    if rank != 0:
        run = client.open_run(args.run, framework=args.framework, labels=labels)
    if (run.rank, run.world_size) != (rank, world):  # found by reprod_client itself
        raise RuntimeError(f"reprod_client detected rank {run.rank} of {run.world_size}, "
                           f"expected {rank} of {world}")

    buggy_rank = args.framework == "paddle" and rank == 1
    bug = "forward" if buggy_rank and args.bug == "rank1" else None
    unsynced = (common.paddle_name(UNSYNCED) if buggy_rank and args.bug == "sync" else None)
    model = fw.load_model(args.workdir, bug=bug) if bug else fw.load_model(args.workdir)
    named = model.named_modules() if args.framework == "torch" else model.named_sublayers()
    leaves = tuple(getattr(fw.nn, t) for t in LEAF_TYPES)
    include = [name for name, m in named if isinstance(m, leaves)]
    criterion = fw.nn.CrossEntropyLoss()
    optimizer, scheduler = fw.make_optimizer(model, "cosine", common.TRAIN_LR,
                                             common.TRAIN_STEPS)
    params = list(model.named_parameters())
    data = common.load_data(args.workdir)
    shard_of = reprod_client.Shard
    cap = (reprod_client.capture(model, run, checkpoint="layers", include=include)
           if args.captures else None)
    start = time.time()
    try:
        for i, batch in enumerate(common.train_batches(data, args.steps, b * world)):
            local = [a[rank * b:(rank + 1) * b] for a in batch]
            ids, types, mask, target = fw.tensors(*local)
            logits = model(ids, types, mask)
            loss = criterion(logits, target)
            # The global loss is the mean of the ranks' means: each rank
            # back-propagates its share (1/world is a power of two here, so
            # the scaling is exact) and the all-reduce sums the shares.
            (loss / world).backward()
            run.log("forward", {"logits": logits}, step=i,
                    placement=shard_of(0, (b * world, logits.shape[1]), (rank * b, 0)))
            run.log("loss", {"loss": loss}, step=i)
            run.log("grads_local", {n: fw.grad(model, n) for n in common.BP_GRADS}, step=i,
                    placement=reprod_client.Partial())
            for name, p in params:
                if p.grad is None:
                    continue
                if name == unsynced:  # --bug sync: the sum lands in a copy
                    coll.all_reduce(p.grad.clone())
                else:
                    coll.all_reduce(p.grad)
            run.log("grads", {n: fw.grad(model, n) for n in common.BP_GRADS}, step=i,
                    placement=reprod_client.Replicate())
            fw.step(optimizer, scheduler)
            if cap is not None:
                cap.next_step()
        if cap is not None:
            cap.close()
        run.log("weights", {n: weight(args.framework, model, n) for n in common.BP_GRADS},
                placement=reprod_client.Replicate())
        elapsed = time.time() - start
        # Every rank's tensors are on the server before rank 0 seals.
        if rank != 0:
            run.close()
        coll.barrier()
        if rank == 0:
            run.seal()
    except BaseException:
        run.close() if rank != 0 else run.abort()
        raise
    print(f"multirank[{args.framework} rank {rank}/{world}]: {args.steps} steps of "
          f"{b} rows in {elapsed:.1f}s, last loss {float(loss):.6f}"
          + (f", bug {bug!r}" if bug else "")
          + (f", {unsynced} not synchronised" if unsynced else ""), file=sys.stderr)
    coll.close()


def weight(framework, model, torch_name):
    """A parameter's value in torch's layout (Linear weights transposed back
    on the paddle side), as common_paddle.grad does for gradients."""
    if framework == "torch":
        return model.get_parameter(torch_name)
    p = dict(model.named_parameters())[common.paddle_name(torch_name)]
    return p.T if common.is_linear_weight(torch_name, p) else p


# --- the launcher ------------------------------------------------------------

def free_ports(n):
    """n distinct free loopback ports (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def launch_ranks(args, framework, run, address, workdir):
    """Starts the --world ranks of `framework` as processes, waits for all;
    returns their stderr lines; StepFailed (every rank stopped) when one
    fails or runs past the timeout."""
    ports = free_ports(args.world + 1)
    master, endpoints = ports[0], [f"127.0.0.1:{p}" for p in ports[1:]]
    base_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("PADDLE_", "MASTER_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    procs = []
    for rank in range(args.world):
        env = dict(base_env)
        if framework == "paddle":
            env.update(PADDLE_TRAINER_ID=str(rank), PADDLE_TRAINERS_NUM=str(args.world),
                       PADDLE_TRAINER_ENDPOINTS=",".join(endpoints),
                       PADDLE_CURRENT_ENDPOINT=endpoints[rank],
                       PADDLE_MASTER=f"127.0.0.1:{master}", PADDLE_DISTRI_BACKEND="gloo")
        cmd = [args.python, str(Path(__file__).resolve()), "--worker", "--framework", framework,
               "--rank", str(rank), "--world", str(args.world), "--port", str(master),
               "--run", run, "--workdir", str(workdir), "--server", address,
               "--bug", args.bug, "--steps", str(args.steps), "--batch", str(args.batch)]
        if not args.captures:
            cmd.append("--no-captures")
        log = tempfile.TemporaryFile(mode="w+")
        procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True,
                                       env=env, start_new_session=True), log))
    deadline = time.time() + args.timeout
    failed = []
    try:
        # A rank that fails leaves its peers waiting in a collective forever:
        # watch all of them, stop the rest at the first failure.
        while not failed and any(proc.poll() is None for proc, _ in procs):
            if time.time() > deadline:
                failed.append(f"still running after {args.timeout:g}s")
            for rank, (proc, log) in enumerate(procs):
                if proc.poll() not in (None, 0):
                    log.seek(0)
                    failed.append(f"rank {rank}: exit {proc.returncode}\n{log.read()[-4000:]}")
            time.sleep(0.05)
        outputs = []
        for rank, (proc, log) in enumerate(procs):
            log.seek(0)
            outputs.append(log.read())
            if not failed and proc.returncode != 0:
                failed.append(f"rank {rank}: exit {proc.returncode}\n{outputs[-1][-4000:]}")
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()
    if failed:
        raise StepFailed(f"multirank.py --worker --framework {framework}: " + "\n".join(failed))
    return [line for out in outputs for line in out.splitlines()
            if line.startswith("multirank[")]


def rank_verdicts(report):
    """[(rank, tensors, passed, failed, first failure text)] from the
    report's "ranks" or, for a reprodctl without them, from its tensors."""
    def where(ff):
        if not ff:
            return "none"
        return f"{ff['checkpoint']}/{ff['key']}" + ("" if ff.get("step") is None
                                                     else f"@{ff['step']}")
    if report.get("ranks"):
        return [(r["rank"], r["tensors"], r["passed"], r["failed"], where(r["first_failure"]))
                for r in report["ranks"]]
    by_rank = {}
    for t in report.get("tensors", []):
        by_rank.setdefault(t.get("rank", 0), []).append(t)
    out = []
    for rank, ts in sorted(by_rank.items()):
        bad = [t for t in ts if t["status"] not in ("pass", "warn")]
        out.append((rank, len(ts), sum(t["status"] == "pass" for t in ts), len(bad),
                    where(bad[0] if bad else None)))
    return out


def describe(report):
    lines = []
    for rank, n, passed, failed, first in rank_verdicts(report):
        lines.append(f"  rank {rank}: {'PASSED' if failed == 0 else 'FAILED'} "
                     f"({passed}/{n} pairs passed)" + (f", first failure {first}"
                                                       if failed else ""))
    fd = report.get("first_divergence")
    if fd:
        lines.append(f"first divergence: rank {fd.get('rank', '?')}, {fd['module']} "
                     f"({fd['direction']}, step {fd['step']}), key {fd['checkpoint']}/{fd['key']}")
    elif "first_divergence" in report:
        lines.append("first divergence: none")
    for g in report.get("global_tensors", []):
        s = g.get("stats", {})
        lines.append(f"global {g['checkpoint']}/{g['key']}@{g.get('step')} of ranks "
                     f"{g.get('ranks')}: {g['status']}, max |d| {s.get('max_abs')}, "
                     f"mean |d| {s.get('mean_abs')}")
    for m in report.get("replica_mismatches", []):
        lines.append(f"replica mismatch in {m['run']}: {m['checkpoint']}/{m['key']}@"
                     f"{m.get('step')} rank {m['rank']} vs rank {m['against_rank']}: "
                     f"{m['reason']}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bug", choices=["none", "rank1", "sync"], default="none",
                   help="bug planted in the paddle port on one rank (default: %(default)s)")
    p.add_argument("--steps", type=int, default=3, help="training steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=4,
                   help="rows per rank and step; the global batch is --world times that "
                        "(default: %(default)s)")
    p.add_argument("--world", type=int, default=2, help="ranks per framework (default: "
                                                         "%(default)s)")
    p.add_argument("--no-captures", dest="captures", action="store_false",
                   help="do not capture the layers (checkpoint 'layers'): no first_divergence")
    p.add_argument("--server", default=None,
                   help="use this reprodd (HOST:PORT) instead of starting one")
    p.add_argument("--reprodd", default=str(ROOT / "build" / "server" / "reprodd"))
    p.add_argument("--reprodctl", default=str(ROOT / "build" / "client" / "cpp" / "reprodctl"))
    p.add_argument("--workdir", help="data and weights folder (default: a temporary one); "
                                     "prepared when empty")
    p.add_argument("--namespace", default="bert_tiny")
    p.add_argument("--suffix", default=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}",
                   help="run name suffix (default: time and pid)")
    p.add_argument("--ref", help="compare against this sealed torch run of an earlier "
                                 "multirank.py (same --steps, --batch, --world and --captures) "
                                 "instead of training torch again")
    p.add_argument("--policy", default=str(POLICY),
                   help="policy of the compare (default: multirank_policy.yaml)")
    p.add_argument("--out", help="also write report.json and runs.json into this folder")
    p.add_argument("--timeout", type=float, default=WORKER_TIMEOUT_S,
                   help="seconds the ranks of one framework may take (default: %(default)s)")
    p.add_argument("--python", default=sys.executable)
    # Internal: one rank (started by launch_ranks).
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", choices=["torch", "paddle"], help=argparse.SUPPRESS)
    p.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.steps < 1 or args.batch < 1 or args.world < 2 - (args.bug == "none"):
        p.error("--steps and --batch must be >= 1, --world >= 1 (>= 2 with a --bug)")
    if args.worker:
        args.broken = False
        worker_main(args)
        return 0
    for name in ("reprodd", "reprodctl", "python", "policy"):
        value = getattr(args, name)
        if os.sep in value:
            setattr(args, name, os.path.abspath(value))

    ref = args.ref or f"{args.namespace}/multirank-torch-{args.suffix}"
    cand = f"{args.namespace}/multirank-paddle-{args.bug}-{args.suffix}"
    opened = []
    try:
        with server_and_workdir(args) as (address, workdir):
            try:
                sides = [(cand, "paddle")] if args.ref else [(ref, "torch"), (cand, "paddle")]
                for run, framework in sides:
                    opened.append(run)
                    t = time.time()
                    lines = launch_ranks(args, framework, run, address, workdir)
                    opened.remove(run)  # rank 0 sealed it
                    progress(f"{run}: {args.world} ranks ({time.time() - t:.1f}s)\n  "
                             + "\n  ".join(lines))
                proc = run_checked([args.reprodctl, "--server", address, "compare", ref, cand,
                                    "--policy", args.policy, "--format", "json"],
                                   f"reprodctl compare {ref} {cand}", ok_codes=(0, 1))
                report = json.loads(proc.stdout)
            except StepFailed:
                abort_runs(args.reprodctl, address, opened)
                raise
    except StepFailed as e:
        progress(f"FAILED: {e}")
        return 2

    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=1))
        (out / "runs.json").write_text(json.dumps({"ref": ref, "cand": cand}))
    s = report["summary"]
    print(f"{ref} vs {cand} (--bug {args.bug}, {args.world} ranks, {args.steps} steps): "
          f"{'PASSED' if report['passed'] else 'FAILED'}, {s['passed']}/{s['tensors']} pairs "
          "passed")
    print(describe(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
