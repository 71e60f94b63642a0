#!/usr/bin/env python3
"""Finds the first module where the paddle port diverges from torch.

Runs one forward and backward pass of bert_tiny (the fixed forward batch,
cross-entropy loss, eval mode: dropout off) under reprod_client.capture in
each framework -- one process per framework -- logging every Embedding,
LayerNorm and Linear module's output and output gradient into checkpoint
"layers" of two runs; then compares them with

    reprodctl compare REF CAND --policy localize_policy.yaml --format json

whose policy renames the paddle module paths to torch's, and prints the
report's first_divergence: the module, forward or backward, the first
failing key and the modules that passed before it.

--bug plants a bug in the paddle port's encoder layer 1 (model_paddle.py):
  forward   norm1 with LayerNorm epsilon 1e-5 instead of 1e-12: the first
            divergence is bert.encoder.layer.1.attention.output.LayerNorm,
            forward;
  backward  norm1's residual input detached: every forward value is the
            same, the first gradient that differs is the one flowing into
            layer 1, bert.encoder.layer.0.output.LayerNorm, backward;
  none      (default) the port as it is: nothing diverges.

Exit status 0 when the compare ran (whatever it found), 2 when a step could
not run. This process imports neither torch nor paddle.

Examples:
  .venv/bin/python examples/bert_tiny/localize.py --bug forward     # own reprodd
  .venv/bin/python examples/bert_tiny/localize.py --bug backward --server 127.0.0.1:50051 --out /tmp/loc
  # the torch side once, then each paddle variant against it:
  .venv/bin/python examples/bert_tiny/localize.py --server HOST:PORT --suffix a
  .venv/bin/python examples/bert_tiny/localize.py --server HOST:PORT --bug forward \
      --ref bert_tiny/localize-torch-a
  # every module, with the mapping reprodctl suggests from the correct port:
  .venv/bin/python examples/bert_tiny/localize.py --server HOST:PORT --suffix b --modules all
  reprodctl suggest-mapping bert_tiny/localize-torch-b bert_tiny/localize-paddle-none-b \
      --out mapping.yaml
  (cat mapping.yaml; sed -n '/^rules:/,$p' examples/bert_tiny/localize_policy.yaml) > all.yaml
  .venv/bin/python examples/bert_tiny/localize.py --server HOST:PORT --modules all \
      --bug forward --ref bert_tiny/localize-torch-b --policy all.yaml
"""
import argparse
import json
import os
import sys
import time
from pathlib import Path

import common
from run_all import StepFailed, abort_runs, progress, run_checked, server_and_workdir

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
POLICY = HERE / "localize_policy.yaml"
CHECKPOINT = "layers"
LEAF_TYPES = ("Embedding", "LayerNorm", "Linear")


def capture_main(args):
    """One framework's side: forward + backward of the forward batch with
    every Embedding / LayerNorm / Linear module captured (the leaves both
    models have; containers and dropouts differ between them)."""
    fw = common.framework(args)
    import reprod_client

    data = common.load_data(args.workdir)
    keys = ("input_ids", "token_type_ids", "attention_mask", "labels")
    ids, types, mask, labels = fw.tensors(*(data[f"forward_{k}"] for k in keys))
    if args.framework == "torch":
        model = fw.load_model(args.workdir)
        named = model.named_modules()
    else:
        model = fw.load_model(args.workdir, bug=None if args.bug == "none" else args.bug)
        named = model.named_sublayers()
    leaves = tuple(getattr(fw.nn, t) for t in LEAF_TYPES)
    # --modules all: every module, the containers and dropouts too (what
    # `reprodctl suggest-mapping` pairs up).
    include = (None if args.modules == "all"
               else [name for name, m in named if isinstance(m, leaves)])
    criterion = fw.nn.CrossEntropyLoss()
    with common.streaming_run(args, fw.VERSION) as run, \
            reprod_client.capture(model, run, checkpoint=CHECKPOINT, include=include,
                                  inputs=args.inputs) as cap:
        loss = criterion(model(ids, types, mask), labels)
        loss.backward()
        print(f"localize[{args.framework}]: {len(cap.modules)} modules captured, "
              f"loss {float(loss):.6f}", file=sys.stderr)


def describe(fd):
    """first_divergence as a few readable lines."""
    if fd is None:
        return "first divergence: none (every captured module agrees)"
    lines = [f"first divergence: {fd['module']} ({fd['direction']}, step {fd['step']})",
             f"  key     {fd['checkpoint']}/{fd['key']}",
             f"  reason  {fd['reason']}",
             f"  inputs  {fd['inputs']}",
             f"  passed before it ({len(fd['passed_before'])}): "
             + ("... " if len(fd["passed_before"]) > 4 else "")
             + ", ".join(fd["passed_before"][-4:])]
    if fd.get("unmatched"):
        lines.append(f"  unmatched: {', '.join(fd['unmatched'])}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__.split(
        "\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bug", choices=["none", "forward", "backward"], default="none",
                   help="bug planted in the paddle port (default: %(default)s)")
    p.add_argument("--server", default=None,
                   help="use this reprodd (HOST:PORT) instead of starting one")
    p.add_argument("--reprodd", default=str(ROOT / "build" / "server" / "reprodd"))
    p.add_argument("--reprodctl", default=str(ROOT / "build" / "client" / "cpp" / "reprodctl"))
    p.add_argument("--workdir", help="data and weights folder (default: a temporary one); "
                                     "prepared when empty")
    p.add_argument("--namespace", default="bert_tiny")
    p.add_argument("--suffix", default=time.strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}")
    p.add_argument("--inputs", action="store_true",
                   help="also capture each module's inputs: the first divergence then says "
                        "whether its inputs still agreed (the module itself differs)")
    p.add_argument("--modules", choices=["leaves", "all"], default="leaves",
                   help="capture the Embedding/LayerNorm/Linear modules both models have "
                        "(default), or every module (containers and dropouts too; their "
                        "structures differ, so give a --policy that maps them, e.g. from "
                        "`reprodctl suggest-mapping`)")
    p.add_argument("--policy", default=str(POLICY),
                   help="policy of the compare (default: localize_policy.yaml)")
    p.add_argument("--ref", help="compare against this sealed torch run of an earlier "
                                 "localize.py instead of capturing torch again")
    p.add_argument("--out", help="also write the report JSON into DIR/report.json")
    p.add_argument("--python", default=sys.executable)
    # Internal: one framework's capture (run by the main process).
    p.add_argument("--capture", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--framework", choices=["torch", "paddle"], help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.capture:
        args.broken = False  # common.streaming_run's label
        capture_main(args)
        return 0
    for name in ("reprodd", "reprodctl", "python", "policy"):
        value = getattr(args, name)
        if os.sep in value:
            setattr(args, name, os.path.abspath(value))

    ref = args.ref or f"{args.namespace}/localize-torch-{args.suffix}"
    cand = f"{args.namespace}/localize-paddle-{args.bug}-{args.suffix}"
    opened = []
    try:
        with server_and_workdir(args) as (address, workdir):
            try:
                sides = [(cand, "paddle")] if args.ref else [(ref, "torch"), (cand, "paddle")]
                for run, framework in sides:
                    opened.append(run)
                    t = time.time()
                    proc = run_checked(
                        [args.python, Path(__file__).resolve(), "--capture", "--framework",
                         framework, "--run", run, "--workdir", workdir, "--server", address,
                         "--bug", args.bug, "--modules", args.modules]
                        + (["--inputs"] if args.inputs else []),
                        f"localize.py --capture --framework {framework}")
                    progress(f"{run}: captured ({time.time() - t:.1f}s) "
                             f"{proc.stderr.strip()[-200:]}")
                for run in list(opened):
                    run_checked([args.reprodctl, "--server", address, "runs", "seal", run],
                                f"reprodctl runs seal {run}")
                    opened.remove(run)
                proc = run_checked([args.reprodctl, "--server", address, "compare", ref, cand,
                                    "--policy", args.policy, "--format", "json"],
                                   f"reprodctl compare {ref} {cand}", ok_codes=(0, 1))
                report = json.loads(proc.stdout)
                progress(f"reprodctl compare --policy {Path(args.policy).name}: "
                         f"exit {proc.returncode}")
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
    print(f"{ref} vs {cand} (--bug {args.bug}): {'PASSED' if report['passed'] else 'FAILED'}, "
          f"{s['passed']}/{s['tensors']} tensors passed")
    if "first_divergence" in report:
        print(describe(report["first_divergence"]))
    else:
        ff = report.get("first_failure")
        print("this reprodctl's report has no first_divergence; first failure: "
              + (f"{ff['checkpoint']}/{ff['key']}@{ff['step']}" if ff else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
