"""reprodctl behaviour: exit codes, safety on hostile files, review, inspect."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

import layouts


def write_pair(tmp_path, stem, ref, cand):
    layouts.save_reprod_log(tmp_path / f"{stem}_torch.npy", ref)
    layouts.save_reprod_log(tmp_path / f"{stem}_paddle.npy", cand)
    return tmp_path / f"{stem}_torch.npy", tmp_path / f"{stem}_paddle.npy"


def test_exit_codes(tmp_path, reprodctl):
    a = {"x": np.arange(5, dtype=np.float32)}
    ok_ref, ok_cand = write_pair(tmp_path, "ok", a, a)
    assert reprodctl("compare", ok_ref, ok_cand).code == 0
    bad_ref, bad_cand = write_pair(tmp_path, "bad", a, {"x": np.arange(5, dtype=np.float32) + 1})
    assert reprodctl("compare", bad_ref, bad_cand).code == 1
    missing = reprodctl("compare", tmp_path / "nope.npy", ok_cand)
    assert missing.code == 2 and "nope.npy" in missing.stderr
    assert reprodctl("compare", ok_ref).code == 2  # usage
    assert reprodctl("compare", ok_ref, ok_cand, "--preset", "no-such-preset").code == 2
    assert reprodctl("compare", ok_ref, ok_cand, "--format", "pdf").code == 2


def test_help_teaches(reprodctl):
    res = reprodctl("--help")
    assert res.code == 0
    for word in ("compare", "review", "inspect"):
        assert word in res.stdout
    res = reprodctl("compare", "--help")
    assert res.code == 0 and "Example" in res.stdout


class Evil:
    """Unpickling this would run its payload."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def evil_payloads(marker):
    import builtins
    import subprocess as sp
    return {
        "os.system": Evil(os.system, f"touch {marker}"),
        "builtins.eval": Evil(builtins.eval, f"open('{marker}', 'w')"),
        "subprocess.Popen": Evil(sp.Popen, ["touch", str(marker)]),
        "numpy.load": Evil(np.load, str(marker)),
        "builtins.exec": Evil(builtins.exec, f"open('{marker}', 'w')"),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "subprocess.Popen", "numpy.load", "builtins.exec"])
@pytest.mark.parametrize("container", ["npy", "pickle"])
def test_hostile_pickle_rejected_nothing_runs(tmp_path, reprodctl, name, container):
    marker = tmp_path / "pwned"
    payload = {"logits": np.zeros(3, dtype=np.float32), "evil": evil_payloads(marker)[name]}
    path = tmp_path / ("evil_paddle.npy" if container == "npy" else "evil.pdparams")
    if container == "npy":
        np.save(path, payload, allow_pickle=True)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)
    good = tmp_path / "evil_torch.npy"
    np.save(good, {"logits": np.zeros(3, dtype=np.float32)}, allow_pickle=True)
    res = reprodctl("compare", good, path)
    assert res.code == 2, res
    assert "refused" in res.stderr and str(path) in res.stderr, res
    # The message names the global as pickled: os.system is posix.system on
    # Linux, and protocol 2 writes builtins as __builtin__.
    fn = name.split(".")[1]
    aliases = {name, name.replace("os.", "posix."), name.replace("builtins.", "__builtin__."),
               name.replace("subprocess.", "commands.")}
    assert any(f"'{a}'" in res.stderr for a in aliases), (aliases, res)
    assert fn in res.stderr
    assert not marker.exists(), "payload ran!"


@pytest.mark.parametrize("layout", ["reprod_log", "npz", "npz_deflated", "safetensors", "pickle"])
def test_truncated_and_corrupt_files_fail_cleanly(tmp_path, reprodctl, layout):
    rng = np.random.default_rng(0)
    data = {"w": rng.standard_normal((64, 64)).astype(np.float32), "b": np.ones(3)}
    path = tmp_path / "f_paddle.bin"
    if layout == "reprod_log":
        np.save(str(path) + ".npy", data, allow_pickle=True)
        os.rename(str(path) + ".npy", path)
    elif layout.startswith("npz"):
        layouts.save_npz(str(path) + ".npz", data, compressed=layout == "npz_deflated")
        os.rename(str(path) + ".npz", path)
    elif layout == "safetensors":
        layouts.save_safetensors(path, data)
    else:
        layouts.save_pickle(path, data, 4)
    blob = path.read_bytes()
    good = tmp_path / "f_torch.npy"
    np.save(good, data, allow_pickle=True)
    cut_points = sorted({1, 8, 16, len(blob) // 3, len(blob) // 2, len(blob) - 1})
    for cut in cut_points:
        path.write_bytes(blob[:cut])
        res = reprodctl("compare", good, path)
        assert res.code == 2, (cut, res)
        assert str(path) in res.stderr, (cut, res)
    # Flip bytes in the header region.
    corrupt = bytearray(blob)
    for i in range(0, min(len(corrupt), 200), 7):
        corrupt[i] ^= 0xA5
    path.write_bytes(bytes(corrupt))
    res = reprodctl("compare", good, path)
    assert res.code == 2 and str(path) in res.stderr, res  # rejected cleanly, never a crash


def test_huge_declared_sizes_refused(tmp_path, reprodctl):
    # An .npy header declaring 2**40 x 2**40 float64 elements, with 16 bytes of data.
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }"
    header += " " * (-(len(header) + 11) % 64) + "\n"
    blob = b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + b"\0" * 16
    path = tmp_path / "huge_paddle.npy"
    path.write_bytes(blob)
    good = tmp_path / "huge_torch.npy"
    np.save(good, np.zeros(4))
    res = reprodctl("compare", good, path)
    assert res.code == 2 and "huge_paddle.npy" in res.stderr, res
    # safetensors header length of 2**60
    path2 = tmp_path / "huge.safetensors"
    path2.write_bytes((1 << 60).to_bytes(8, "little") + b"{}")
    res = reprodctl("inspect", path2)
    assert res.code == 2 and "huge.safetensors" in res.stderr, res


def test_review_sample_submission(tmp_path, reprodctl):
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    sub = tmp_path / "log_reprod"
    subprocess.run([sys.executable, str(root / "scripts" / "make_sample_submission.py"), str(sub)], check=True,
                   capture_output=True)
    out = tmp_path / "logs"
    res = reprodctl("review", sub, "--preset", "competition", "--out-dir", out)
    assert res.code == 1, res  # the sample's loss pair is broken on purpose
    for point in ("forward", "metric", "loss", "bp_align", "train_align"):
        assert point in res.stdout
        assert (out / f"{point}_diff.log").exists(), point
    loss_log = (out / "loss_diff.log").read_text().splitlines()
    assert loss_log[-1].endswith("root INFO: diff check failed")
    fwd_log = (out / "forward_diff.log").read_text().splitlines()
    assert fwd_log[-1].endswith("root INFO: diff check passed")
    # Missing files are listed.
    (sub / "metric_paddle.npy").unlink()
    res = reprodctl("review", sub, "--out-dir", out)
    assert res.code == 1 and "metric" in res.stdout and "missing" in res.stdout.lower(), res


def test_inspect_matches_numpy(tmp_path, reprodctl):
    rng = np.random.default_rng(2)
    a = rng.standard_normal((10, 10))
    a[0, 0] = np.nan
    a[1, 1] = np.inf
    np.save(tmp_path / "x.npy", {"w": a, "n": np.arange(4, dtype=np.int32)}, allow_pickle=True)
    res = reprodctl("inspect", tmp_path / "x.npy", "--format", "json")
    assert res.code == 0, res
    info = {t["key"]: t for t in res.json()["tensors"]}
    finite = a[np.isfinite(a)]
    assert info["w"]["dtype"] == "float64" and info["w"]["shape"] == [10, 10]
    assert info["w"]["nan"] == 1 and info["w"]["inf"] == 1
    assert info["w"]["min"] == pytest.approx(finite.min(), rel=0)
    assert info["w"]["max"] == pytest.approx(finite.max(), rel=0)
    assert info["w"]["mean"] == pytest.approx(finite.mean(), rel=1e-12)
    assert info["n"]["dtype"] == "int32" and info["n"]["max"] == 3


@pytest.mark.parametrize("protocol", [2, 4])
def test_inspect_reads_unsigned_arrays_from_pickles(tmp_path, reprodctl, protocol):
    """pickled uint16/32/64 arrays (paddle.save's layout), little- and
    big-endian, are read, not skipped; min/max/mean are numpy's float64."""
    arrays = {"u16": np.array([0, 7, 65535], np.uint16),
              "u32": np.array([[1, 2**32 - 1], [5, 0]], ">u4"),
              "u64": np.array([3, 2**53 + 1, 2**64 - 1], np.uint64)}
    path = tmp_path / "w.pdparams"
    path.write_bytes(pickle.dumps(arrays, protocol=protocol))
    res = reprodctl("inspect", path, "--format", "json")
    assert res.code == 0, res
    out = res.json()
    assert out["skipped"] == []
    info = {t["key"]: t for t in out["tensors"]}
    for key, a in arrays.items():
        f = a.astype(np.float64)
        assert info[key]["dtype"] == a.dtype.name and info[key]["shape"] == list(a.shape), key
        assert (info[key]["min"], info[key]["max"]) == (f.min(), f.max()), key
        assert info[key]["mean"] == pytest.approx(f.mean(), rel=1e-15), key


def test_global_options_after_subcommand_and_version(tmp_path, reprodctl):
    a = {"x": np.arange(5, dtype=np.float32)}
    ref, cand = write_pair(tmp_path, "g", a, a)
    assert reprodctl("compare", ref, cand, "--backend", "cpu", "-q").code == 0
    res = reprodctl("--version")
    assert res.code == 0 and "reprodctl" in res.stdout and "cpu" in res.stdout
    if "without CUDA" in res.stdout:
        # A build without nvcc says so, and an explicit cuda request is bad input.
        res = reprodctl("compare", ref, cand, "--backend", "cuda")
        assert res.code == 2 and "CUDA" in res.stderr, res
