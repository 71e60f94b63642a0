"""Oracle tests: random dicts in every supported layout; the JSON stats of
`reprodctl compare` must equal numpy float64 computations (1e-12 relative),
and mean/max/min must equal reprod_log's own formula (1e-6 relative)."""
import math

import numpy as np
import pytest

import layouts
import oracle
from reprod_log.compare import compute_diff

POLICY = """
defaults:
  - {metric: mean_abs, max: 1.0e-6}
  - {metric: allclose, atol: 1.0e-3, rtol: 1.0e-2}
"""
ATOL, RTOL = 1e-3, 1e-2

FLOATS = ["float32", "float64", "float16"]
INTS = ["int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"]


def random_array(rng, dtype, shape):
    if dtype == "bool":
        return rng.random(shape) < 0.5
    if dtype in INTS:
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -100), min(info.max, 100), size=shape, dtype=dtype)
    return rng.standard_normal(shape).astype(dtype)


def perturb(rng, a):
    if a.dtype == np.bool_:
        b = a.copy()
        if b.size:
            b.flat[0] = not b.flat[0]
        return b
    if np.issubdtype(a.dtype, np.integer):
        return (a + rng.integers(0, 2, size=a.shape).astype(a.dtype)).astype(a.dtype)
    noise = (rng.standard_normal(a.shape) * 1e-3).astype(a.dtype)
    return (a + noise).astype(a.dtype)


def make_pair(seed):
    rng = np.random.default_rng(seed)
    shapes = [(), (0,), (7,), (3, 5), (2, 3, 4), (1000,), (64, 33)]
    ref, cand = {}, {}
    for i, dtype in enumerate(FLOATS + INTS):
        shape = shapes[(i + seed) % len(shapes)]
        a = random_array(rng, dtype, shape)
        ref[f"t{i}_{dtype}"] = a
        cand[f"t{i}_{dtype}"] = perturb(rng, a)
    big = rng.standard_normal(100_003).astype(np.float32)
    ref["big"] = big
    cand["big"] = big + (rng.standard_normal(big.shape) * 1e-4).astype(np.float32)
    ref["nested"] = {"enc": {"w": rng.standard_normal((4, 4))}}
    cand["nested"] = {"enc": {"w": ref["nested"]["enc"]["w"] * 1.001}}
    return ref, cand


def write(layout, path, data):
    if layout == "reprod_log":
        layouts.save_reprod_log(path, data)
    elif layout.startswith("pickle"):
        layouts.save_pickle(path, data, int(layout[-1]))
    elif layout == "npz":
        layouts.save_npz(path, data, compressed=False)
    elif layout == "npz_deflated":
        layouts.save_npz(path, data, compressed=True)
    elif layout == "safetensors":
        layouts.save_safetensors(path, data)
    else:
        raise ValueError(layout)


SUFFIX = {"reprod_log": ".npy", "pickle2": ".pdparams", "pickle3": ".pkl", "pickle4": ".pdparams",
          "pickle5": ".pkl", "npz": ".npz", "npz_deflated": ".npz", "safetensors": ".safetensors"}


def assert_close(ours, theirs, rel, what):
    if theirs is None:
        assert ours is None, what
        return
    if isinstance(theirs, float) and math.isnan(theirs):
        assert ours == "NaN", f"{what}: {ours!r} != NaN"
        return
    if isinstance(theirs, float) and math.isinf(theirs):
        assert ours == ("Infinity" if theirs > 0 else "-Infinity"), f"{what}: {ours!r}"
        return
    assert isinstance(ours, (int, float)), f"{what}: {ours!r}"
    assert ours == pytest.approx(theirs, rel=rel, abs=1e-300), f"{what}: {ours!r} != {theirs!r}"


def check_stats(tensor, ref, cand, transposed=False):
    want = oracle.diff_stats(ref, cand, atol=ATOL, rtol=RTOL, transposed=transposed)
    got = tensor["stats"]
    key = f"{tensor['checkpoint']}/{tensor['key']}"
    for field in ("count", "mismatches", "nan_ref", "nan_cand", "inf_ref", "inf_cand", "histogram"):
        assert got[field] == want[field], f"{key}.{field}: {got[field]} != {want[field]}"
    for field in ("mean_abs", "max_abs", "min_abs", "mean_rel", "max_rel", "rmse", "cosine"):
        assert_close(got[field], want[field], 1e-12, f"{key}.{field}")
    if want["count"]:
        assert got["max_abs_index"] == want["max_abs_index"], key
        assert_close(got["ref_at_max"], want["ref_at_max"], 0, f"{key}.ref_at_max")
        assert_close(got["cand_at_max"], want["cand_at_max"], 0, f"{key}.cand_at_max")


@pytest.mark.parametrize("layout", list(SUFFIX))
def test_stats_equal_numpy_float64(tmp_path, reprodctl, layout):
    ref, cand = make_pair(seed=len(layout))
    if layout == "safetensors":  # no nested dict semantics issue: flattened by the writer
        pass
    rp, cp = tmp_path / f"forward_torch{SUFFIX[layout]}", tmp_path / f"forward_paddle{SUFFIX[layout]}"
    write(layout, rp, ref)
    write(layout, cp, cand)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    res = reprodctl("compare", rp, cp, "--policy", policy, "--format", "json")
    assert res.code in (0, 1), res
    report = res.json()
    flat_ref, flat_cand = layouts.flatten(ref), layouts.flatten(cand)
    tensors = {t["key"]: t for t in report["tensors"]}
    assert set(tensors) == set(flat_ref), res
    for key, t in tensors.items():
        assert t["checkpoint"] == "forward"
        assert t["dtype_ref"] == str(np.asarray(flat_ref[key]).dtype)
        assert t["shape_ref"] == list(np.shape(flat_ref[key]))
        check_stats(t, flat_ref[key], flat_cand[key])


def test_bare_npy_fortran_and_big_endian(tmp_path, reprodctl):
    rng = np.random.default_rng(7)
    a = rng.standard_normal((6, 9))
    b = a + rng.standard_normal((6, 9)) * 1e-5
    np.save(tmp_path / "x_torch.npy", np.asfortranarray(a).astype(">f8"))
    np.save(tmp_path / "x_paddle.npy", np.asfortranarray(b.astype("<f4")))
    res = reprodctl("compare", tmp_path / "x_torch.npy", tmp_path / "x_paddle.npy",
                    "--format", "json", "--atol", ATOL, "--rtol", RTOL)
    assert res.code == 0, res
    (t,) = res.json()["tensors"]
    assert t["key"] == "output" and t["checkpoint"] == "x"
    assert t["dtype_ref"] == "float64" and t["dtype_cand"] == "float32"
    check_stats(t, a, b.astype("<f4"))


def unsigned_extremes(rng, dtype, n):
    """n values of an unsigned dtype: 0, 1, max, max - 1, max // 2 + 1 (and
    2**53 + 1, the first integer float64 cannot hold) among random ones."""
    top = int(np.iinfo(dtype).max)
    special = [0, 1, top, top - 1, top // 2 + 1] + ([2**53 + 1] if top > 2**53 else [])
    a = rng.integers(0, top, size=n, dtype=dtype, endpoint=True)
    a[:len(special)] = special
    a[-len(special):] = special[::-1]
    return a


@pytest.mark.parametrize("dtype", ["uint16", "uint32", "uint64"])
@pytest.mark.parametrize("order", ["<", ">"])
def test_unsigned_npy_extremes_equal_numpy_float64(tmp_path, reprodctl, dtype, order):
    """np.save'd uint16/32/64 (either byte order) against numpy's float64
    stats: every element becomes the nearest float64, so uint64 values past
    2**53 that differ by less than their spacing compare equal."""
    rng = np.random.default_rng(len(dtype) + ord(order))
    ref = unsigned_extremes(rng, dtype, 4099)
    cand = ref.copy()
    pick = rng.integers(0, 6, size=ref.size)
    cand[pick == 1] += 1                                    # wraps at max
    cand[pick == 2] -= 1                                    # wraps at 0
    cand[pick == 3] = np.iinfo(dtype).max
    cand[-1] = 1                                            # ref ends with 0
    np.save(tmp_path / "u_torch.npy", ref.astype(order + ref.dtype.str[1:]))
    np.save(tmp_path / "u_paddle.npy", cand.astype(order + cand.dtype.str[1:]))
    res = reprodctl("compare", tmp_path / "u_torch.npy", tmp_path / "u_paddle.npy",
                    "--format", "json", "--atol", ATOL, "--rtol", RTOL)
    assert res.code == 1, res
    (t,) = res.json()["tensors"]
    assert t["dtype_ref"] == t["dtype_cand"] == dtype
    check_stats(t, ref, cand)
    if dtype == "uint64":  # 2**64 - 1 and 2**64 - 2 are both 2**64 as doubles
        assert float(np.uint64(2**64 - 1)) == float(np.uint64(2**64 - 2))


def test_unsigned_safetensors_from_the_safetensors_package(tmp_path, reprodctl):
    """U16 / U32 / U64 entries written by the real safetensors package."""
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    ref = {dt: unsigned_extremes(rng, dt, 257) for dt in ("uint16", "uint32", "uint64")}
    cand = {k: v.copy() for k, v in ref.items()}
    for v in cand.values():
        v[::7] += 3
    save_file(ref, str(tmp_path / "s_torch.safetensors"))
    save_file(cand, str(tmp_path / "s_paddle.safetensors"))
    res = reprodctl("compare", tmp_path / "s_torch.safetensors", tmp_path / "s_paddle.safetensors",
                    "--format", "json", "--atol", ATOL, "--rtol", RTOL)
    assert res.code == 1, res
    tensors = {t["key"]: t for t in res.json()["tensors"]}
    assert set(tensors) == set(ref)
    for key, t in tensors.items():
        assert t["dtype_ref"] == key
        check_stats(t, ref[key], cand[key])


def test_unsigned_against_float64_file(tmp_path, reprodctl):
    """uint32 ref against its float64 values plus a step: compared by value."""
    ref = np.array([0, 1, 2**31, 2**32 - 1, 4_000_000_000], dtype=np.uint32)
    cand = ref.astype(np.float64)
    cand[3] += 0.5
    np.save(tmp_path / "v_torch.npy", ref)
    np.save(tmp_path / "v_paddle.npy", cand)
    res = reprodctl("compare", tmp_path / "v_torch.npy", tmp_path / "v_paddle.npy",
                    "--format", "json", "--atol", ATOL, "--rtol", RTOL)
    (t,) = res.json()["tensors"]
    assert (t["dtype_ref"], t["dtype_cand"]) == ("uint32", "float64")
    assert t["stats"]["max_abs"] == 0.5 and t["stats"]["ref_at_max"] == 2**32 - 1
    check_stats(t, ref, cand)


def test_bf16_safetensors(tmp_path, reprodctl):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(1000).astype(np.float32)
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)  # truncation to bf16
    special = np.array([0x0001, 0x8000, 0x7f7f, 0xff80, 0x7f80, 0x0000], dtype=np.uint16)
    bits = np.concatenate([bits, special])
    layouts.save_safetensors(tmp_path / "w_torch.safetensors", {"w": bits}, bf16_keys={"w"})
    ref = layouts.bf16_to_f32(bits)
    cand = ref.copy()
    cand[:10] += 0.5
    layouts.save_safetensors(tmp_path / "w_paddle.safetensors", {"w": cand})
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    res = reprodctl("compare", tmp_path / "w_torch.safetensors", tmp_path / "w_paddle.safetensors",
                    "--policy", policy, "--format", "json")
    assert res.code == 1, res
    (t,) = res.json()["tensors"]
    assert t["dtype_ref"] == "bfloat16" and t["dtype_cand"] == "float32"
    check_stats(t, ref, cand)


def test_transposed_linear_weight(tmp_path, reprodctl):
    rng = np.random.default_rng(11)
    w = rng.standard_normal((8, 3)).astype(np.float32)
    wt = (w.T + 1e-4).astype(np.float32)
    layouts.save_reprod_log(tmp_path / "bp_align_torch.npy", {"fc.weight": w})
    layouts.save_reprod_log(tmp_path / "bp_align_paddle.npy", {"fc.weight": wt})
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    res = reprodctl("compare", tmp_path / "bp_align_torch.npy", tmp_path / "bp_align_paddle.npy",
                    "--policy", policy, "--format", "json")
    (t,) = res.json()["tensors"]
    assert t["transposed"] is True
    check_stats(t, w, wt, transposed=True)


def test_nan_and_inf_semantics(tmp_path, reprodctl):
    ref = {"a": np.array([1.0, np.nan, np.inf, -np.inf, 2.0, np.nan]),
           "b": np.array([np.inf, 1.0, 0.0])}
    cand = {"a": np.array([1.0, np.nan, np.inf, np.inf, 2.5, 3.0]),
            "b": np.array([np.inf, 1.0, 0.0])}
    layouts.save_reprod_log(tmp_path / "loss_torch.npy", ref)
    layouts.save_reprod_log(tmp_path / "loss_paddle.npy", cand)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    res = reprodctl("compare", tmp_path / "loss_torch.npy", tmp_path / "loss_paddle.npy",
                    "--policy", policy, "--format", "json")
    assert res.code == 1, res
    report = res.json()
    tensors = {t["key"]: t for t in report["tensors"]}
    check_stats(tensors["a"], ref["a"], cand["a"])
    check_stats(tensors["b"], ref["b"], cand["b"])
    assert tensors["a"]["status"] == "fail"
    assert tensors["b"]["status"] == "pass"  # matched infinities are equal
    assert report["first_failure"] == {"checkpoint": "loss", "key": "a", "step": None}


@pytest.mark.parametrize("seed", [1, 2])
def test_mean_max_min_match_reprod_log(tmp_path, reprodctl, seed):
    rng = np.random.default_rng(seed)
    ref = {f"k{i}": rng.standard_normal((50, 20)).astype(dt) for i, dt in enumerate(["float32", "float64"] * 3)}
    cand = {k: (v + rng.standard_normal(v.shape) * 10.0 ** -rng.integers(3, 8)).astype(v.dtype) for k, v in ref.items()}
    layouts.save_reprod_log(tmp_path / "forward_torch.npy", ref)
    layouts.save_reprod_log(tmp_path / "forward_paddle.npy", cand)
    res = reprodctl("compare", tmp_path / "forward_torch.npy", tmp_path / "forward_paddle.npy",
                    "--threshold", "1e-6", "--method", "all", "--format", "json")
    assert res.code in (0, 1), res
    theirs = compute_diff(ref, cand)
    for t in res.json()["tensors"]:
        for ours_field, their_field in (("mean_abs", "mean"), ("max_abs", "max"), ("min_abs", "min")):
            want = float(theirs[t["key"]][their_field])
            assert t["stats"][ours_field] == pytest.approx(want, rel=1e-6, abs=1e-12), (t["key"], ours_field)
