"""bench/run_capture_bench.py --quick runs end to end against the built reprodd.

A smoke test so the capture overhead benchmark cannot rot: real torch and
paddle workers each time the four configurations (capture off, every
module, leaves only, every module as statistics), with positive step times,
p90 >= median and positive on/off ratios; the captured configurations log
tensors (the leaves, each with one output that takes part in autograd, log
exactly one output and one gradient per module; both frameworks' leaves log
the same bytes, as their outputs have the same shapes; every module logs
more than the leaves; statistics are 32 bytes per tensor); and no reprodd or
temporary folder is left behind. Takes 10-25 s on two cores.
"""
import json
import os
import subprocess
import sys

import pytest

from conftest import BIN_DIR, ROOT, processes_naming

SCRIPT = ROOT / "bench" / "run_capture_bench.py"


@pytest.mark.requires_torch
@pytest.mark.requires_paddle
def test_quick_run_writes_every_row(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--bin-dir", str(BIN_DIR),
         "--out", str(tmp_path / "capture")],
        capture_output=True, text=True, timeout=180,
        env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((tmp_path / "capture.json").read_text())
    md = (tmp_path / "capture.md").read_text()

    assert res["settings"] == {**res["settings"], "steps": 5, "warmup": 1, "quick": True}
    assert res["machine"]["nproc"] >= 1 and res["machine"]["cpu_model"]
    assert len(res["load_average"]["start"]) == 3 and len(res["load_average"]["end"]) == 3
    assert len(res["git_commit"]) == 40
    assert res["versions"]["torch"] and res["versions"]["paddle"]

    rows = {(r["framework"], r["config"]): r for r in res["rows"]}
    assert sorted(rows) == sorted((f, c) for f in ("torch", "paddle")
                                  for c in ("off", "all", "leaves", "stats"))
    for (fw, config), r in rows.items():
        assert len(r["samples_s"]) == 5 and all(s > 0 for s in r["samples_s"]), r
        assert 0 < r["median_s"] <= r["p90_s"], r
        assert r["ratio_vs_off"] > 0 and r["cpu_median_s"] > 0 and r["cpu_ratio_vs_off"] > 0, r
        assert r["ratio_vs_off"] == pytest.approx(r["median_s"] / rows[fw, "off"]["median_s"])
        assert r["constant_per_step"], r
        if config == "off":
            assert r["ratio_vs_off"] == 1 and r["tensors_per_step"] == 0, r
            assert r["bytes_per_step"] == 0 and r["close_s"] is None, r
        else:
            assert r["tensors_per_step"] > 0 and r["bytes_per_step"] > 0, r
            assert r["close_s"] >= 0 and r["drain_median_s"] >= 0, r
        assert f"| {fw} | {r['name']} | {r['median_s'] * 1e3:.2f} ms |" in md
    for fw in ("torch", "paddle"):
        leaves, every = rows[fw, "leaves"], rows[fw, "all"]
        # 3 embeddings + 1 LayerNorm, 8 per encoder layer (2), pooler, classifier.
        assert leaves["modules_captured"] == 22, leaves
        assert leaves["tensors_per_step"] == 2 * leaves["modules_captured"], leaves
        assert every["modules_captured"] > leaves["modules_captured"], every
        assert every["tensors_per_step"] > leaves["tensors_per_step"], every
        assert every["bytes_per_step"] > leaves["bytes_per_step"], every
        # Statistics only: the same tensors as "all", 4 float64 values each.
        stats = rows[fw, "stats"]
        assert stats["modules_captured"] == every["modules_captured"], stats
        assert stats["tensors_per_step"] == every["tensors_per_step"], stats
        assert stats["bytes_per_step"] == 32 * stats["tensors_per_step"], stats
    assert rows["torch", "leaves"]["bytes_per_step"] == rows["paddle", "leaves"]["bytes_per_step"]
    assert res["not_built"] == [] and "not built" not in md

    # Everything the bench started or made is gone.
    assert processes_naming(tmp_path) == []
    assert [p for p in tmp_path.iterdir() if p.name.startswith("reprod-capture-bench")] == []
