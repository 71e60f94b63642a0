"""reprod_client.tensors: conversion of numpy / paddle / Python values to
wire tensors, key validation and dict flattening (no server). torch runs in
a subprocess (importing torch and paddle into one process is avoided)."""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from reprod_client import tensors as T


def wire(value, key="k"):
    return T.to_wire(key, value, checkpoint="forward")


@pytest.mark.parametrize("dtype,wire_dtype", [
    (np.bool_, T.DTYPE_BOOL), (np.int8, T.DTYPE_INT8), (np.uint8, T.DTYPE_UINT8),
    (np.int16, T.DTYPE_INT16), (np.int32, T.DTYPE_INT32), (np.int64, T.DTYPE_INT64),
    (np.float16, T.DTYPE_FLOAT16), (np.float32, T.DTYPE_FLOAT32),
    (np.float64, T.DTYPE_FLOAT64), (np.uint16, T.DTYPE_UINT16), (np.uint32, T.DTYPE_UINT32),
    (np.uint64, T.DTYPE_UINT64)])
def test_numpy_dtypes(dtype, wire_dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    w = wire(a)
    assert (w.dtype, w.shape) == (wire_dtype, (2, 3, 4))
    assert w.data.dtype == np.uint8 and w.data.flags.c_contiguous
    assert w.data.tobytes() == a.astype(a.dtype.newbyteorder("<")).tobytes()


def test_big_endian_and_non_contiguous_become_little_endian_c_order():
    a = np.arange(12, dtype=">f4").reshape(3, 4)
    w = wire(a)
    assert w.dtype == T.DTYPE_FLOAT32
    assert w.data.tobytes() == np.arange(12, dtype="<f4").tobytes()
    b = np.arange(12, dtype=np.int32).reshape(3, 4).T  # Fortran order view
    w = wire(b)
    assert w.shape == (4, 3)
    assert w.data.tobytes() == np.ascontiguousarray(b).tobytes()
    c = np.arange(20, dtype=np.float64)[::3]
    assert wire(c).data.tobytes() == c.copy().tobytes()


def test_python_and_numpy_scalars():
    assert (wire(True).dtype, wire(True).shape, wire(True).data.tobytes()) == (T.DTYPE_BOOL, (), b"\x01")
    w = wire(7)
    assert (w.dtype, w.shape, w.data.tobytes()) == (T.DTYPE_INT64, (), np.int64(7).tobytes())
    w = wire(0.1)
    assert (w.dtype, w.data.tobytes()) == (T.DTYPE_FLOAT64, np.float64(0.1).tobytes())
    w = wire(np.float32(1.5))
    assert (w.dtype, w.shape, w.data.tobytes()) == (T.DTYPE_FLOAT32, (), np.float32(1.5).tobytes())
    assert wire(np.bool_(False)).data.tobytes() == b"\x00"
    with pytest.raises(ValueError, match="does not fit in int64"):
        wire(2**70)


def test_bool_bytes_are_zero_or_one():
    a = np.array([0, 2, 255, 1], dtype=np.uint8).view(np.bool_)
    assert wire(a).data.tobytes() == b"\x00\x01\x01\x01"


def test_copy_is_private():
    a = np.ones(8, dtype=np.float32)
    w = wire(a)
    a[:] = 5
    assert w.data.view(np.float32).tolist() == [1.0] * 8


def test_unsigned_dtypes_keep_their_values_and_byte_order():
    for dt, top in (("u2", 2**16 - 1), ("u4", 2**32 - 1), ("u8", 2**64 - 1)):
        big = np.array([0, 1, top], dtype=">" + dt)
        w = wire(big)
        assert w.dtype == {"u2": T.DTYPE_UINT16, "u4": T.DTYPE_UINT32, "u8": T.DTYPE_UINT64}[dt]
        assert w.data.view("<" + dt).tolist() == [0, 1, top]
        assert T.numpy_dtype(w.dtype) == np.dtype("<" + dt)
    assert T.DTYPE_NAMES[T.DTYPE_UINT64] == "uint64" and T.DTYPE_NAMES[T.DTYPE_BFLOAT16] == "bfloat16"


def test_wire_constants_match_the_proto():
    from reprod_client._proto import tensor_pb2
    for name, value in tensor_pb2.DType.items():
        if name != "DTYPE_UNSPECIFIED":
            assert getattr(T, name) == value, name
            assert T.DTYPE_NAMES[value] == name[len("DTYPE_"):].lower()


@pytest.mark.parametrize("value,name", [
    (np.zeros(3, np.complex64), "complex64"),
    (np.array(["a"]), "<U1"), (np.array([object()]), "object")])
def test_unsupported_dtypes_name_key_and_dtype(value, name):
    with pytest.raises(ValueError) as e:
        T.to_wire("enc/w", value)
    assert "'enc/w'" in str(e.value) and name in str(e.value)


@pytest.mark.parametrize("key", ["", "a//b", "/a", "a/", "has space", "a/b c", "é", "x" * 1025,
                                 "a*b"])
def test_invalid_keys_are_rejected_with_the_key(key):
    with pytest.raises(ValueError) as e:
        T.to_wire(key, 1.0)
    assert repr(key)[:60].rstrip("'") in str(e.value)


@pytest.mark.parametrize("key", ["logits", "encoder/layer0/weight", "a.b:c+d-e_[0]",
                                 "x" * 1024])
def test_valid_keys(key):
    assert T.to_wire(key, 1.0).key == key


@pytest.mark.parametrize("key", ["..", ".", "a/../b", "a/.", "./a"])
def test_dot_segments_refused_in_keys(key):
    with pytest.raises(ValueError, match="'.' and '..' segments"):
        T.validate_key(key)
    assert T.validate_key(key.replace(".", "x.y")) is not None


def test_checkpoint_and_run_name_validation():
    T.validate_checkpoint("bp_align+1.0-x")
    for bad in ["", "a/b", "x" * 129, "sp ace", ".", ".."]:
        with pytest.raises(ValueError, match="checkpoint"):
            T.validate_checkpoint(bad)
    T.validate_run_name("team42/bert-paddle")
    for bad in ["noslash", "a/b/c", "/b", "a/", "a b/c", "a/..", "./b"]:
        with pytest.raises(ValueError, match="run name"):
            T.validate_run_name(bad)


def test_flatten_nested_dicts():
    flat = T.flatten({"logits": 1, "enc": {"w": 2, "layer": {"b": 3}}})
    assert flat == {"logits": 1, "enc/w": 2, "enc/layer/b": 3}
    with pytest.raises(ValueError, match="given twice"):
        T.flatten({"a/b": 1, "a": {"b": 2}})
    with pytest.raises(ValueError, match="strings"):
        T.flatten({1: 2})


def test_bfloat16_helpers():
    bits = np.array([0x3F80, 0xC000, 0x7F80], dtype=np.uint16)
    assert T.bfloat16_to_float32(bits).tolist() == [1.0, -2.0, float("inf")]
    assert T.numpy_dtype(T.DTYPE_BFLOAT16) == np.dtype("<u2")


@pytest.mark.requires_paddle
def test_paddle_tensors():
    import paddle  # installed by scripts/setup.sh; conftest imports it too

    x = paddle.to_tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    w = wire(x)
    assert (w.dtype, w.shape) == (T.DTYPE_FLOAT32, (2, 3))
    assert w.data.tobytes() == np.arange(6, dtype=np.float32).tobytes()
    h = x.astype("float16")
    assert wire(h).dtype == T.DTYPE_FLOAT16
    assert wire(h).data.tobytes() == np.arange(6, dtype=np.float16).tobytes()
    b = x.astype("bfloat16")
    wb = wire(b)
    assert wb.dtype == T.DTYPE_BFLOAT16 and wb.shape == (2, 3)
    assert T.bfloat16_to_float32(wb.data.view(np.uint16)).tolist() == list(range(6))
    assert wire(paddle.to_tensor([True, False])).dtype == T.DTYPE_BOOL
    assert wire(paddle.to_tensor([1, 2])).dtype == T.DTYPE_INT64
    # A parameter (paddle.base.framework.EagerParamBase) and a transposed view.
    p = paddle.create_parameter([3, 2], "float32")
    assert wire(p).shape == (3, 2)
    assert wire(x.T).data.tobytes() == np.arange(6, dtype=np.float32).reshape(2, 3).T.copy().tobytes()
    with pytest.raises(ValueError, match="complex64"):
        wire(paddle.to_tensor(np.zeros(2, np.complex64)))
    # Updating the tensor in place after conversion does not change the copy.
    x[0, 0] = 100.0
    assert w.data.view(np.float32)[0] == 0.0


TORCH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import torch
    from reprod_client import tensors as T
    out = {}
    def w(t):
        r = T.to_wire("k", t)
        return [r.dtype, list(r.shape), r.data.tobytes().hex()]
    x = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    out["f32"] = w(x) + [x.numpy().tobytes().hex()]
    out["f16"] = w(x.half()) + [x.half().numpy().tobytes().hex()]
    bf = x.bfloat16()
    out["bf16"] = w(bf) + [bf.view(torch.int16).numpy().tobytes().hex()]
    out["i64"] = w(torch.tensor([1, -2])) + [np.array([1, -2], np.int64).tobytes().hex()]
    out["bool"] = w(torch.tensor([True, False])) + ["0100"]
    out["T"] = w(x.t()) + [x.t().contiguous().numpy().tobytes().hex()]
    p = torch.nn.Parameter(torch.ones(2))
    r = T.to_wire("p", p * 1)  # requires grad
    out["grad"] = [r.dtype, list(r.shape), r.data.tobytes().hex(), torch.ones(2).numpy().tobytes().hex()]
    # in-place update after conversion (optimizer step) must not leak in
    y = torch.zeros(4)
    r = T.to_wire("y", y)
    y.add_(1)
    out["inplace"] = [r.dtype, list(r.shape), r.data.tobytes().hex(), torch.zeros(4).numpy().tobytes().hex()]
    try:
        T.to_wire("c", torch.zeros(2, dtype=torch.complex64))
        out["complex"] = "accepted"
    except ValueError as e:
        out["complex"] = str(e)
    print(json.dumps(out))
""")


@pytest.mark.requires_torch
def test_torch_tensors_in_subprocess():
    proc = subprocess.run([sys.executable, "-c", TORCH_SCRIPT], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expect_dtype = {"f32": T.DTYPE_FLOAT32, "f16": T.DTYPE_FLOAT16, "bf16": T.DTYPE_BFLOAT16,
                    "i64": T.DTYPE_INT64, "bool": T.DTYPE_BOOL, "T": T.DTYPE_FLOAT32,
                    "grad": T.DTYPE_FLOAT32, "inplace": T.DTYPE_FLOAT32}
    for name, dtype in expect_dtype.items():
        got_dtype, shape, got, want = out[name]
        assert got_dtype == dtype, name
        assert got == want, name
    assert out["T"][1] == [3, 2]
    assert "'c'" in out["complex"] and "complex64" in out["complex"]
