"""`reprodctl suggest-mapping` on bert_tiny end to end: real torch, real
paddle, a real reprodd.

localize.py --modules all captures every module of both models (containers
and dropouts too, which nest differently: torch has attention.self,
attention.output and intermediate containers, paddle a self_attn that
includes out_proj). suggest-mapping must recover, with no manual edit, the
mapping the example's authors wrote by hand (common.TORCH_TO_PADDLE): every
paddle module whose torch counterpart exists maps onto it, applied to keys
as the server applies policy renames (checked here with Python's re, an
independent regex engine). The suggested entries plus localize_policy.yaml's
rules then localise the planted forward bug to its LayerNorm, and on the
correct port nothing diverges: the only non-passing tensors are those of the
modules suggest-mapping listed as unmatched.
"""
import json
import re
import subprocess
import sys

import pytest
import yaml

from conftest import REPRODCTL, ROOT

EXAMPLE = ROOT / "examples" / "bert_tiny"
LOCALIZE = EXAMPLE / "localize.py"
POLICY = EXAMPLE / "localize_policy.yaml"
CHECKPOINT = "layers"

sys.path.insert(0, str(EXAMPLE))
import common  # noqa: E402  (framework-free: the name mapping)


def localize(address, workdir, out, suffix, bug, *extra):
    proc = subprocess.run(
        [sys.executable, str(LOCALIZE), "--server", address, "--reprodctl", str(REPRODCTL),
         "--workdir", str(workdir), "--suffix", suffix, "--bug", bug, "--modules", "all",
         "--out", str(out / suffix), *extra],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return (json.loads((out / suffix / "report.json").read_text()),
            json.loads((out / suffix / "runs.json").read_text()))


def modules(reprodd, run):
    proc = subprocess.run([str(REPRODCTL), "--server", reprodd.address, "runs", "show", run,
                           "--format", "json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    keys = [t["key"] for t in json.loads(proc.stdout)["tensors"]
            if t["checkpoint"] == CHECKPOINT]
    return {k.split("/", 1)[0] for k in keys}


def rename(entries, module):
    """The policy's regex renames applied in order to a capture key, with
    Python's re (RE2's syntax for these patterns is the same)."""
    key = module + "/forward/output/0"
    for e in entries:
        key = re.sub(e["regex"], e["to"], key)
    return key.split("/", 1)[0]


def commented_modules(text, title):
    """The '#   module' lines after the comment line starting with `title`."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"# {title}"))
    out = []
    for line in lines[start + 1:]:
        if not line.startswith("#   "):
            break
        out.append(line[4:])
    return out


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_suggest_mapping_recovers_bert_tiny_and_localises(reprodd, tmp_path):
    if not REPRODCTL.exists():
        pytest.fail(f"{REPRODCTL} is not built (set REPROD_BIN_DIR)")
    workdir, out = tmp_path / "work", tmp_path / "out"
    _, runs = localize(reprodd.address, workdir, out, "sm-good", "none")
    ref, cand = runs["ref"], runs["cand"]

    mapping = tmp_path / "mapping.yaml"
    proc = subprocess.run([str(REPRODCTL), "--server", reprodd.address, "suggest-mapping", ref,
                           cand, "--out", str(mapping)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "module pairs" in proc.stderr and str(mapping) in proc.stderr
    text = mapping.read_text()
    entries = yaml.safe_load(text)["rename"]
    assert entries and all(set(e) == {"regex", "to"} for e in entries), entries
    # Generalised over the layer number: far fewer entries than modules.
    assert len(entries) <= 15, text

    torch_modules, paddle_modules = modules(reprodd, ref), modules(reprodd, cand)
    # The hand-written mapping is the oracle.
    checked = 0
    for t in sorted(torch_modules):
        p = common.paddle_name(t)
        if p in paddle_modules:
            assert rename(entries, p) == t, (p, t, text)
            checked += 1
    assert checked >= 22 + 8  # the 22 leaves localize.py's default captures, and more
    assert rename(entries, "bert.encoder.layers.1") == "bert.encoder.layer.1"
    # Modules the other side lacks are listed, and renamed onto nothing.
    unmatched_cand = commented_modules(text, "unmatched candidate modules")
    unmatched_ref = commented_modules(text, "unmatched reference modules")
    assert unmatched_cand == ["bert.encoder.layers.0.self_attn", "bert.encoder.layers.1.self_attn"]
    assert "bert.encoder.layer.0.attention.self" in unmatched_ref
    for m in unmatched_cand:
        assert rename(entries, m) not in torch_modules

    # The suggested entries and the example's rules make a working policy.
    policy = tmp_path / "all.yaml"
    rules = POLICY.read_text().split("\nrules:", 1)[1]
    policy.write_text(text + "\nrules:" + rules)

    proc = subprocess.run([str(REPRODCTL), "--server", reprodd.address, "compare", ref, cand,
                           "--policy", str(policy), "--format", "json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr  # unmatched modules are missing on one side
    good = json.loads(proc.stdout)
    assert good["first_divergence"] is None
    failing = {t["key"].split("/", 1)[0] for t in good["tensors"] if t["status"] != "pass"}
    assert all(t["status"] in ("pass", "missing_in_ref", "missing_in_cand")
               for t in good["tensors"])
    assert failing == set(unmatched_cand) | set(unmatched_ref), failing
    assert good["summary"]["passed"] >= 70

    report, _ = localize(reprodd.address, workdir, out, "sm-forward", "forward", "--ref", ref,
                         "--policy", str(policy))
    fd = report["first_divergence"]
    assert (fd["module"], fd["direction"]) == (
        "bert.encoder.layer.1.attention.output.LayerNorm", "forward"), fd
    assert set(fd["unmatched"]) == {m for m in set(unmatched_cand) | set(unmatched_ref)}
    statuses = {t["key"]: t["status"] for t in report["tensors"]}
    for m in fd["passed_before"]:
        assert statuses[f"{m}/forward/output/0"] == "pass", m


def test_suggest_mapping_errors_name_the_run_and_checkpoint(reprodd, run_ns, tmp_path):
    import numpy as np
    import reprod_client

    x = np.ones(3, dtype=np.float32)
    with reprod_client.Client(reprodd.address) as client:
        for name in ("a", "b"):
            with client.open_run(f"{run_ns}/{name}", framework="torch") as run:
                run.log("forward", {"logits": x})            # not a capture key
                run.log("layers", {"m/forward/output/0": x, "m/backward/grad_output/0": x})

    def suggest(*args, server=reprodd.address):
        return subprocess.run([str(REPRODCTL), "--server", server, "suggest-mapping", *args],
                              capture_output=True, text=True, timeout=60)

    proc = suggest(f"{run_ns}/a", f"{run_ns}/b", "--checkpoint", "forward")
    assert proc.returncode == 2
    assert f"run '{run_ns}/a' has no captured forward outputs" in proc.stderr
    assert "checkpoint 'forward'" in proc.stderr and "capture(" in proc.stderr
    proc = suggest(f"{run_ns}/a", f"{run_ns}/missing")
    assert proc.returncode == 2 and "missing" in proc.stderr, proc.stderr
    # Same module names, same values: nothing to rename.
    proc = suggest(f"{run_ns}/a", f"{run_ns}/b")
    assert proc.returncode == 0, proc.stderr
    assert "rename: []" in proc.stdout and "1 module pairs" in proc.stdout
    proc = suggest(f"{run_ns}/a", f"{run_ns}/b", server="127.0.0.1:1")
    assert proc.returncode == 3, proc.stderr
