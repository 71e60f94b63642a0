"""torch.save files (.pt) written by the REAL torch, zip archive and legacy
stream: `reprodctl compare` stats must equal numpy float64 computations on the
values torch itself reports (1e-12 relative), `reprodctl inspect` must list
what torch saved, and hostile files must be refused without running anything.

torch runs in a subprocess (WRITER) that saves the files and, next to them,
the oracle: every tensor as torch hands it to numpy (bfloat16 widened to
float32, which is exact), so this process never imports torch."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from test_oracle_stats import POLICY, check_stats

WRITER = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import torch

    out = sys.argv[1]
    g = torch.Generator().manual_seed(1234)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(2, 3, 3)
            self.bn = torch.nn.BatchNorm2d(3)  # running stats, int64 0-d counter
            self.fc = torch.nn.Linear(12, 5)

    def views(base):
        # Non-contiguous views of one storage: transposed, rows at a storage
        # offset, every other column, one column, the diagonal (stride 8).
        return {"t": base.t(), "rows": base[2:5], "cols": base[:, 1::2], "col": base[:, 4],
                "diag": base.diagonal()}

    def noisy(t):
        if t.dtype == torch.bool:
            return t ^ (torch.rand(t.shape, generator=g) < 0.2)
        if not t.is_floating_point():
            return t + torch.randint(0, 2, t.shape, generator=g, dtype=t.dtype)
        noise = torch.randn(t.shape, generator=g, dtype=torch.float64) * 1e-3
        return (t.double() + noise).to(t.dtype)

    def perturb(d):
        return {k: perturb(v) if isinstance(v, dict) else noisy(v) for k, v in d.items()}

    torch.manual_seed(0)
    net = Net()
    base = torch.randn(8, 7, generator=g)
    ref = {
        "f32": torch.randn(3, 5, generator=g),
        "f64": torch.randn(7, generator=g, dtype=torch.float64),
        "f16": torch.randn(4, 4, generator=g).half(),
        "bf16": torch.randn(33, generator=g).bfloat16(),
        "i64": torch.randint(-100, 100, (2, 3, 4), generator=g),
        "i32": torch.randint(-100, 100, (10,), generator=g, dtype=torch.int32),
        "bool": torch.rand(9, generator=g) < 0.5,
        "scalar": torch.tensor(1.25),
        "scalar_i": torch.tensor(-3),
        "empty": torch.zeros(0, 3),
        "big": torch.randn(100003, generator=g),
        "views": views(base),
        "model": net.state_dict(),
        "nested": {"a": {"b": torch.randn(2, 2, generator=g)}},
    }
    cand = perturb({k: v for k, v in ref.items() if k != "views"})
    cand["views"] = views(noisy(base))
    cand = {k: cand[k] for k in ref}  # same key order

    def flatten(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flatten(v, f"{prefix}{k}/")
            else:
                yield f"{prefix}{k}", v

    for name, d in (("ref", ref), ("cand", cand)):
        torch.save(d, f"{out}/{name}_zip.pt")
        torch.save(d, f"{out}/{name}_legacy.pt", _use_new_zipfile_serialization=False)
        arrays, meta = {}, []
        for key, t in flatten(d):
            assert key != "views/t" or not t.is_contiguous()
            wide = t.float() if t.dtype == torch.bfloat16 else t
            arrays[key.replace("/", "|")] = wide.numpy()
            meta.append([key, str(t.dtype).replace("torch.", ""), list(t.shape)])
        np.savez(f"{out}/{name}_oracle.npz", **arrays)
        with open(f"{out}/{name}_oracle.json", "w") as f:
            json.dump(meta, f)
    torch.save(torch.arange(5, dtype=torch.float64) / 4, f"{out}/bare.pt")
    print(torch.__version__)
""")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Runs WRITER once; returns (dir, {"ref"/"cand": [(key, dtype, shape, array)]})."""
    out = tmp_path_factory.mktemp("torch_files")
    proc = subprocess.run([sys.executable, "-c", WRITER, str(out)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    oracle = {}
    for name in ("ref", "cand"):
        arrays = np.load(out / f"{name}_oracle.npz")
        meta = json.loads((out / f"{name}_oracle.json").read_text())
        oracle[name] = [(k, dt, shape, arrays[k.replace("/", "|")]) for k, dt, shape in meta]
    return out, oracle


@pytest.mark.requires_torch
@pytest.mark.parametrize("ref_layout,cand_layout",
                         [("zip", "zip"), ("legacy", "legacy"), ("zip", "legacy")])
def test_compare_stats_equal_numpy_float64(saved, reprodctl, ref_layout, cand_layout):
    out, oracle = saved
    policy = out / "policy.yaml"
    policy.write_text(POLICY)
    rp, cp = out / f"ref_{ref_layout}.pt", out / f"cand_{cand_layout}.pt"
    res = reprodctl("compare", rp, cp, "--policy", policy, "--format", "json")
    assert res.code == 1, res  # the 1e-3 noise fails mean_abs <= 1e-6
    tensors = {t["key"]: t for t in res.json()["tensors"]}
    assert list(tensors) == [k for k, _, _, _ in oracle["ref"]], res
    for (key, dtype, shape, ref), (_, _, _, cand) in zip(oracle["ref"], oracle["cand"]):
        t = tensors[key]
        assert t["dtype_ref"] == dtype and t["dtype_cand"] == dtype, key
        assert t["shape_ref"] == shape and t["shape_cand"] == shape, key
        check_stats(t, ref, cand)


@pytest.mark.requires_torch
@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_inspect_lists_what_torch_saved(saved, reprodctl, layout):
    out, oracle = saved
    path = out / f"ref_{layout}.pt"
    res = reprodctl("inspect", path, "--format", "json")
    assert res.code == 0, res
    report = res.json()
    assert report["format"] == "torch" and report["skipped"] == [], report
    assert [t["key"] for t in report["tensors"]] == [k for k, _, _, _ in oracle["ref"]]
    for t, (key, dtype, shape, want) in zip(report["tensors"], oracle["ref"]):
        assert (t["dtype"], t["shape"], t["count"]) == (dtype, shape, want.size), key
        assert t["nan"] == 0 and t["inf"] == 0, key
        if want.size == 0:
            assert t["min"] is None and t["max"] is None, key
            continue
        w = want.astype(np.float64)
        assert t["min"] == float(w.min()) and t["max"] == float(w.max()), key
        assert t["mean"] == pytest.approx(float(w.mean()), rel=1e-12, abs=1e-300), key


@pytest.mark.requires_torch
def test_identical_files_pass_and_bare_tensor_is_output(saved, reprodctl):
    out, _ = saved
    res = reprodctl("compare", out / "ref_zip.pt", out / "ref_legacy.pt", "--format", "json")
    assert res.code == 0, res
    assert all(t["stats"]["max_abs"] == 0 for t in res.json()["tensors"])
    res = reprodctl("inspect", out / "bare.pt", "--format", "json")
    assert res.code == 0, res
    (t,) = res.json()["tensors"]
    assert (t["key"], t["dtype"], t["shape"], t["max"]) == ("output", "float64", [5], 1.0)


@pytest.mark.requires_torch
def test_missing_storage_member_is_refused(saved, reprodctl, tmp_path):
    out, _ = saved
    src = zipfile.ZipFile(out / "ref_zip.pt")
    dropped = next(n for n in src.namelist() if n.endswith("/data/0"))
    bad = tmp_path / "missing.pt"
    with zipfile.ZipFile(bad, "w") as z:
        for info in src.infolist():
            if info.filename != dropped:
                z.writestr(info, src.read(info))
    res = reprodctl("inspect", bad)
    assert res.code == 2, res
    assert str(bad) in res.stderr and "storage '0'" in res.stderr and dropped in res.stderr, res


@pytest.mark.requires_torch
def test_review_pairs_torch_files(saved, reprodctl, tmp_path):
    """`reprodctl review` picks .pt / .pth files out of a folder (the one
    table of tensor-file types) and pairs them by checkpoint."""
    out, _ = saved
    shutil.copy(out / "ref_zip.pt", tmp_path / "forward_torch.pt")
    shutil.copy(out / "cand_legacy.pt", tmp_path / "forward_paddle.pth")
    shutil.copy(out / "ref_zip.pt", tmp_path / "loss_torch.pt")
    shutil.copy(out / "ref_legacy.pt", tmp_path / "loss_paddle.pt")
    res = reprodctl("review", tmp_path)
    assert res.code == 1, res
    assert re.search(r"^\s+forward\s+yes\s+FAIL", res.stdout, re.M), res
    assert re.search(r"^\s+loss\s+yes\s+PASS", res.stdout, re.M), res


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


TORCH_MAGIC = 0x1950A86A20F9469CFC6C


@pytest.mark.parametrize("container", ["zip", "legacy"])
def test_hostile_torch_file_refused_nothing_runs(tmp_path, reprodctl, container):
    """A torch-like file whose pickle calls os.system: exit 2, the message
    names the global (posix.system, as os.system pickles on Linux) and the
    file, and the command never runs. Built with pickle alone: no torch."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"w": Evil(marker)}, protocol=2)
    path = tmp_path / f"evil_{container}.pt"
    if container == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("evil/data.pkl", payload)
            z.writestr("evil/version", "3\n")
    else:
        with open(path, "wb") as f:
            for header in (TORCH_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True}):
                pickle.dump(header, f, protocol=2)
            f.write(payload)
            pickle.dump([], f, protocol=2)
    good = tmp_path / "good.npy"
    np.save(good, np.zeros(3, dtype=np.float32))
    for args in (("compare", good, path), ("inspect", path)):
        res = reprodctl(*args)
        assert res.code == 2, res
        assert str(path) in res.stderr and "refused pickle global 'posix.system'" in res.stderr, res
    assert not marker.exists(), "payload ran!"
