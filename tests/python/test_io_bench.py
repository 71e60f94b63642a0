"""bench/run_io_bench.py --quick runs end to end against the built binaries.

A smoke test so the benchmark harness cannot rot: every yardstick, ingest
path (shared memory included) and compare is measured (positive times and
throughputs), the ratios are the issue's six and are positive, nothing is
listed as not built, and no reprodd, temp folder or shared-memory object is
left behind.
"""
import json
import os
import subprocess
import sys

from conftest import BIN_DIR, ROOT, processes_naming

SCRIPT = ROOT / "bench" / "run_io_bench.py"


def _shm_objects():
    """The reprod client's shared-memory objects (/dev/shm/reprod-*)."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("reprod-")}


def test_quick_run_writes_every_row(tmp_path):
    data_root = tmp_path / "data"
    data_root.mkdir()
    shm_before = _shm_objects()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--bin-dir", str(BIN_DIR),
         "--data-root", str(data_root), "--out", str(tmp_path / "io")],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "io.json").read_text())
    md = (tmp_path / "io.md").read_text()

    assert res["settings"] == {**res["settings"], "total_mib": 64, "repeats": 1, "quick": True}
    assert res["machine"]["nproc"] >= 1 and res["machine"]["ram_gib"] > 0
    assert len(res["git_commit"]) == 40
    names = [r["name"] for r in res["rows"]]
    for want in ("raw TCP loopback", "dd ", "memcpy", "memory store", "RocksDB",
                 "from files", "stored in RocksDB"):
        assert any(want in n for n in names), (want, names)
    assert sum("ingest" in n for n in names) == 5  # 2 clients x 2 stores, and shm
    assert any("via shared memory" in n and "memory store" in n for n in names), names
    for r in res["rows"]:
        assert r["seconds"] > 0 and all(s > 0 for s in r["samples_s"]), r
        assert r["GBps"] > 0 and r["bytes"] > 0, r
        # Ingest moves the payload: bytes are the same 64 MiB everywhere but compare.
        if "ingest" in r["name"] or "TCP" in r["name"] or "memcpy" in r["name"]:
            assert r["bytes"] == 64 << 20, r
        if "ingest" in r["name"]:  # both sides did the work: CPU time was counted
            assert r["client_cpu_s"] > 0 and r["server_cpu_s"] > 0, r
        assert r["name"] in md
    assert len(res["ratios"]) == 6
    assert any("shared memory / memcpy" in r["name"] for r in res["ratios"])
    for r in res["ratios"]:
        assert 0 < r["value"] < 1000, r
        assert r["met"] == (r["value"] >= r["goal"] if r["goal_kind"] == "min"
                            else r["value"] <= r["goal"]), r
    # The fresh-pages yardstick and the context ratios against it.
    assert any(n.startswith("memcpy into fresh pages") for n in names), names
    assert [r["name"].split(",")[1].strip().split(" ")[0] for r in res["context_ratios"]] == \
        ["Python", "C++"]
    for r in res["context_ratios"]:
        assert 0 < r["value"] < 1000, r
        assert f"{r['name']} (context, no goal)" in md
    assert res["not_built"] == [] and res["ratios_not_built"] == []
    assert "not built" not in md

    # Everything the bench started or made is gone.
    assert processes_naming(tmp_path) == []
    assert list(data_root.iterdir()) == []
    assert [p for p in tmp_path.iterdir() if p.name.startswith("reprod-io-bench")] == []
    assert _shm_objects() - shm_before == set()
