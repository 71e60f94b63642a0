"""examples/bert_tiny/localize.py end to end: real torch, real paddle, a real
reprodd, reprodctl compare with localize_policy.yaml.

The correct port must pass with no first divergence. For each planted bug
the report's first_divergence must name the module where the port really
diverges, which the test works out on its own: it reads every captured
tensor of both runs back (Client.read_tensor), pairs them through
common.TORCH_TO_PADDLE (not the policy's rename), walks the candidate's
arrival order and takes the first module whose max |torch - paddle|
exceeds the policy's bound; every module of that direction before it must
pass. The forward bug must land on
bert.encoder.layer.1.attention.output.LayerNorm (the LayerNorm given the
wrong epsilon); the backward bug, a detached residual in that layer, changes
no forward value, and the first gradient it changes is the one flowing into
layer 1: bert.encoder.layer.0.output.LayerNorm. Takes 15-35 s on two cores.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

import reprod_client
from conftest import REPRODCTL, ROOT

EXAMPLE = ROOT / "examples" / "bert_tiny"
LOCALIZE = EXAMPLE / "localize.py"
POLICY = EXAMPLE / "localize_policy.yaml"
CHECKPOINT = "layers"

sys.path.insert(0, str(EXAMPLE))
import common  # noqa: E402  (framework-free: the name mapping)


def localize(reprodd, workdir, out, bug, ref=None, extra=()):
    name = bug + "".join(extra)
    args = [sys.executable, str(LOCALIZE), "--server", reprodd.address, "--reprodctl",
            str(REPRODCTL), "--workdir", str(workdir), "--suffix", f"e2e{name}", "--bug", bug,
            "--out", str(out / name), *extra]
    if ref:
        args += ["--ref", ref]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"--bug {bug}: exit {proc.returncode}\n{proc.stdout}\n" \
                                 f"{proc.stderr[-4000:]}"
    report = json.loads((out / name / "report.json").read_text())
    runs = json.loads((out / name / "runs.json").read_text())
    return proc.stdout, report, runs


def bounds():
    """{direction: max_abs bound} from the policy's rules."""
    rules = yaml.safe_load(POLICY.read_text())["rules"]
    out = {}
    for rule in rules:
        (check,) = rule["checks"]
        assert check["metric"] == "max_abs"
        out[rule["match"].split("/")[2]] = check["max"]
    return out


def split_key(key):
    module, direction, _ = key.split("/", 2)
    return module, direction


def independent_first_divergence(client, ref, cand):
    """[(direction, torch module, max |diff|)] in the candidate's arrival
    order, worked out from the stored tensors alone."""
    torch_keys = {t.key for t in client.list_tensors(ref, CHECKPOINT)}
    torch_modules = {split_key(k)[0] for k in torch_keys}
    to_torch = {common.paddle_name(m): m for m in torch_modules}
    assert len(to_torch) == len(torch_modules) == 22
    rows = []
    for t in client.list_tensors(cand, CHECKPOINT):
        module, direction = split_key(t.key)
        torch_module = to_torch[module]
        torch_key = torch_module + t.key[len(module):]
        assert torch_key in torch_keys, t.key
        a = client.read_tensor(ref, CHECKPOINT, torch_key, 0).astype(np.float64)
        b = client.read_tensor(cand, CHECKPOINT, t.key, 0).astype(np.float64)
        assert a.shape == b.shape, t.key
        rows.append((direction, torch_module, float(np.abs(a - b).max())))
    return rows


def first_over(rows, limits):
    for i, (direction, module, diff) in enumerate(rows):
        if diff > limits[direction]:
            return i
    return None


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_localize_finds_the_planted_module(reprodd, tmp_path):
    if not REPRODCTL.exists():
        pytest.fail(f"{REPRODCTL} is not built (set REPROD_BIN_DIR)")
    workdir, out = tmp_path / "work", tmp_path / "out"
    client = reprod_client.Client(reprodd.address)
    limits = bounds()

    # The correct port: nothing diverges.
    stdout, good, runs = localize(reprodd, workdir, out, "none")
    ref = runs["ref"]
    assert good["passed"] is True, stdout
    assert good["summary"]["tensors"] == 44 and good["summary"]["passed"] == 44
    assert good["first_failure"] is None
    assert "first_divergence" in good, "reprodctl's report has no first_divergence"
    assert good["first_divergence"] is None
    rows = independent_first_divergence(client, ref, runs["cand"])
    assert first_over(rows, limits) is None
    measured = {d: max(r[2] for r in rows if r[0] == d) for d in limits}
    print(f"good port: max |diff| forward {measured['forward']:.3g}, "
          f"backward {measured['backward']:.3g}")
    # The bounds leave a margin over the correct port's differences.
    assert all(measured[d] * 3 < limits[d] for d in limits), measured

    expected = {
        "forward": ("forward", "bert.encoder.layer.1.attention.output.LayerNorm"),
        "backward": ("backward", "bert.encoder.layer.0.output.LayerNorm"),
    }
    for bug, (direction, module) in expected.items():
        stdout, report, runs = localize(reprodd, workdir, out, bug, ref=ref)
        assert report["passed"] is False, stdout
        rows = independent_first_divergence(client, ref, runs["cand"])
        i = first_over(rows, limits)
        assert i is not None and rows[i][:2] == (direction, module), (bug, rows)
        # Every module of that direction before it passes, by its own diffs.
        before = []
        for d, m, diff in rows[:i]:
            if d == direction and m not in before:
                before.append(m)
        assert all(diff <= limits[d] for d, _, diff in rows[:i])
        if bug == "backward":  # the bug changes no forward value at all
            assert all(diff <= limits["forward"] for d, _, diff in rows if d == "forward")

        fd = report["first_divergence"]
        assert fd is not None, report["first_failure"]
        assert fd["checkpoint"] == CHECKPOINT and fd["step"] == 0
        assert (fd["direction"], fd["module"]) == (direction, module), fd
        assert fd["key"].startswith(f"{module}/{direction}/"), fd
        assert fd["inputs"] == "not_captured"  # localize.py captures outputs only
        assert fd["passed_before"] == before, (fd["passed_before"], before)
        assert fd["unmatched"] == []
        assert fd["reason"]
        statuses = {t["key"]: t["status"] for t in report["tensors"]}
        for m in fd["passed_before"]:
            keys = [k for k in statuses if k.startswith(f"{m}/{direction}/")]
            assert keys and all(statuses[k] == "pass" for k in keys), m
        assert module in stdout and f"({direction}, step 0)" in stdout

    # With the inputs captured too (both sides again), the forward bug's
    # module is found with inputs that still agree: the LayerNorm itself
    # computes differently. Its output and the inputs of the two modules fed
    # from it are the only tensors that fail.
    _, report, _ = localize(reprodd, workdir, out, "forward", extra=("--inputs",))
    fd = report["first_divergence"]
    assert (fd["module"], fd["direction"], fd["inputs"]) == (expected["forward"][1], "forward",
                                                             "pass"), fd
    assert report["summary"]["tensors"] == 66
    failed = sorted(t["key"] for t in report["tensors"] if t["status"] != "pass")
    assert failed == ["bert.encoder.layer.1.attention.output.LayerNorm/forward/output/0",
                      "bert.encoder.layer.1.intermediate.dense/forward/input/0",
                      "bert.encoder.layer.1.output.LayerNorm/forward/input/0"], failed
