"""examples/bert_tiny end to end: real torch, real paddle, a real reprodd.

run_all.py starts its own reprodd (ephemeral port, temporary RocksDB dir),
streams the six acceptance scripts of the torch reference, the paddle port
and the broken paddle port (--break) through reprod_client, seals the runs
and compares them with `reprodctl compare --preset competition`. The good
port must pass every acceptance point (and lr), the broken one must fail
first at forward/logits. torch and paddle are required here: without them
the test fails, it does not skip. Takes about 40 s on a 2-core machine.
"""
import json
import subprocess
import sys
import time

import pytest

from conftest import BIN_DIR, REPRODCTL, ROOT

REPRODD = BIN_DIR / "server" / "reprodd"
RUN_ALL = ROOT / "examples" / "bert_tiny" / "run_all.py"
REQUIRED = ["forward", "metric", "loss", "bp_align", "train_align"]


def _require_framework(module):
    # Each in its own process: torch and paddle are never imported together.
    proc = subprocess.run([sys.executable, "-c", f"import {module}"],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.fail(f"the bert_tiny example needs {module}, which does not import in "
                    f"{sys.executable}:\n{proc.stderr[-2000:]}")


def test_bert_tiny_good_passes_broken_fails_at_forward(tmp_path):
    for module in ("torch", "paddle", "reprod_client"):
        _require_framework(module)
    for binary in (REPRODD, REPRODCTL):
        if not binary.exists():
            pytest.fail(f"{binary} is not built (set REPROD_BIN_DIR)")

    out = tmp_path / "out"
    start = time.time()
    proc = subprocess.run(
        [sys.executable, str(RUN_ALL), "--reprodd", str(REPRODD), "--reprodctl", str(REPRODCTL),
         "--workdir", str(tmp_path / "work"), "--out", str(out), "--suffix", "e2e"],
        capture_output=True, text=True, timeout=600)
    elapsed = time.time() - start
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout[-6000:]}\n" \
                                 f"stderr:\n{proc.stderr[-6000:]}"
    assert "bert_tiny: good PASSED" in proc.stdout
    print(f"run_all.py took {elapsed:.1f}s")

    good = json.loads((out / "good.json").read_text())
    assert good["schema"] == "reprod.report.v1"
    assert good["policy"] == "competition"
    assert good["passed"] is True
    assert good["first_failure"] is None
    assert good["summary"]["failed"] == 0 and good["summary"]["tensors"] > 0
    checkpoints = {c["name"]: c for c in good["checkpoints"]}
    for name in REQUIRED + ["lr"]:
        assert name in checkpoints, f"{name} missing from {sorted(checkpoints)}"
        c = checkpoints[name]
        assert c["passed"] is True, c
        assert c["tensors"] >= 1 and c["present_in_ref"] and c["present_in_cand"], c
    assert checkpoints["bp_align"]["steps"] >= 2
    assert checkpoints["lr"]["tensors"] == 3
    lr_keys = {t["key"] for t in good["tensors"] if t["checkpoint"] == "lr"}
    assert lr_keys == {"linear", "cosine", "polynomial"}
    assert all(t["shape_ref"] == [1000] for t in good["tensors"] if t["checkpoint"] == "lr")

    # train_align: clearly learnt, and the same accuracy on both sides.
    (acc,) = [t for t in good["tensors"] if (t["checkpoint"], t["key"]) == ("train_align", "acc")]
    assert acc["stats"]["ref_at_max"] >= 0.95, acc
    assert acc["stats"]["mean_abs"] <= 0.0015, acc

    broken = json.loads((out / "broken.json").read_text())
    assert broken["passed"] is False
    ff = broken["first_failure"]
    assert (ff["checkpoint"], ff["key"]) == ("forward", "logits"), ff
    (logits,) = [t for t in broken["tensors"] if (t["checkpoint"], t["key"]) == ("forward", "logits")]
    assert logits["status"] == "fail"
    assert logits["stats"]["mean_abs"] > 1e-3, logits  # far past 1e-6, not a rounding effect

    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["runs"]["torch"] == "bert_tiny/torch-e2e"
    assert (out / "good.md").read_text().startswith("# reprod report: PASSED")
