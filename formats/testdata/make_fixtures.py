"""Regenerates the fixtures in this folder (run once with numpy 1.x and once
with numpy 2.x; safetensors files need the safetensors package):

    python make_fixtures.py OUTDIR

Files are tagged np1 / np2 by the numpy major version. The values are the ones
formats/*_test.cc expects; keep them small (the folder stays under ~40 KB).
"""
import collections
import io
import os
import pickle
import sys

import numpy as np

out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
tag = "np%d" % int(np.__version__.split(".")[0])


def save(name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def all_dtypes():
    """One small array per supported dtype, plus layout variants."""
    return {
        "b1": np.array([True, False, True]),
        "i1": np.array([-1, 2, -3], dtype=np.int8),
        "u1": np.array([1, 2, 255], dtype=np.uint8),
        "i2": np.array([-300, 2, 3], dtype=np.int16),
        "i4": np.array([-70000, 2, 3], dtype=np.int32),
        "i8": np.array([-(2**40), 2, 3], dtype=np.int64),
        "f2": np.array([0.5, -1.0, 65504.0], dtype=np.float16),
        "f4": np.arange(6, dtype=np.float32).reshape(2, 3),
        "f8": np.array([1.5, -2.25, 1e300]),
        "be_i4": np.array([1, -2, 3], dtype=">i4"),
        "be_f8": np.array([[1.0, 2.0], [3.0, 4.0]], dtype=">f8"),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int32).reshape(2, 3)),
        "fortran3d": np.asfortranarray(np.arange(24, dtype=np.int16).reshape(2, 3, 4)),
        "zero_d": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float32),
    }


def nested():
    od = collections.OrderedDict()
    od["z"] = np.array([1, 2], dtype=np.int64)
    od["y"] = np.array([3.0], dtype=np.float64)
    return {
        "model": {"layer": {"weight": np.arange(4, dtype=np.float32).reshape(2, 2)}},
        "list": [np.array([1], dtype=np.int32), 2, 2.5, True],
        "tuple": (np.float32(1.25), np.int64(-7)),
        "od": od,
        "scalar_f8": np.float64(0.125),
        "scalar_b": np.bool_(True),
        7: np.array([7], dtype=np.uint8),
        "name": "a string",
        "none": None,
        "u2": np.array([1, 2], dtype=np.uint16),
    }


# np.save of a dict: a 0-d object array holding a pickle (reprod_log's files).
b = io.BytesIO()
np.save(b, {"a": np.arange(3, dtype=np.float32)}, allow_pickle=True)
save("%s_save_dict.npy" % tag, b.getvalue())
b = io.BytesIO()
np.save(b, nested(), allow_pickle=True)
save("%s_save_nested.npy" % tag, b.getvalue())

for proto in (2, 3, 4, 5):
    save("%s_dtypes_p%d.pkl" % (tag, proto), pickle.dumps(all_dtypes(), protocol=proto))
    save("%s_nested_p%d.pkl" % (tag, proto), pickle.dumps(nested(), protocol=proto))
# A bare array (protocol 5: numpy >= 1.16 uses _frombuffer with an in-band
# PickleBuffer for contiguous arrays).
save("%s_array_p5.pkl" % tag, pickle.dumps(np.arange(6, dtype=np.float32).reshape(2, 3), protocol=5))
save("%s_fortran_p5.pkl" % tag,
     pickle.dumps(np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3)), protocol=5))


# paddle.save(state_dict): numpy arrays plus the name table, protocol 2 or 4.
class _VarBase:
    """Pickles like a paddle Tensor under paddle.save (reduce_varbase)."""

    def __init__(self, name, data):
        self.name, self.data = name, data

    def __reduce__(self):
        return (tuple, ((self.name, self.data),))


if tag == "np2":
    for proto in (2, 4):
        sd = collections.OrderedDict()
        sd["linear.weight"] = np.arange(6, dtype=np.float32).reshape(3, 2)
        sd["linear.bias"] = np.zeros(2, dtype=np.float32)
        sd["StructuredToParameterName@@"] = {"linear.weight": "linear_0.w_0",
                                            "linear.bias": "linear_0.b_0"}
        save("paddle_state_p%d.pdparams" % proto, pickle.dumps(sd, protocol=proto))
    save("paddle_varbase_p4.pdparams",
         pickle.dumps({"t": _VarBase("tmp_0", np.ones(2, dtype=np.float32))}, protocol=4))

    # npz: stored and deflated.
    b = io.BytesIO()
    np.savez(b, x=np.arange(4, dtype=np.float32), y=np.array([[1, 2], [3, 4]], dtype=np.int64))
    save("savez.npz", b.getvalue())
    b = io.BytesIO()
    np.savez_compressed(b, x=np.arange(4, dtype=np.float32), d=np.array({"k": np.ones(2)}, dtype=object))
    save("savez_compressed.npz", b.getvalue())

    try:
        from safetensors.numpy import save as st_save
        save("dtypes.safetensors", st_save({
            "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
            "f16": np.array([1.0, 2.0], dtype=np.float16),
            "i64": np.array([5], dtype=np.int64),
            "u8": np.array([1, 2, 3], dtype=np.uint8),
            "b": np.array([True, False]),
            "a_first_key_late_data": np.zeros(0, dtype=np.float64),
        }, metadata={"format": "np"}))
    except ImportError:
        pass

    # A deflated member whose zip64 sizes claim 1 TiB uncompressed (written
    # by hand: zipfile only uses zip64 fields when it needs them).
    import struct
    import zlib
    b = io.BytesIO()
    np.lib.format.write_array(b, np.zeros(16, dtype=np.float32))
    raw = b.getvalue()
    co = zlib.compressobj(6, zlib.DEFLATED, -15)
    comp = co.compress(raw) + co.flush()
    crc = zlib.crc32(raw)
    name = b"x.npy"
    tib = 1 << 40
    extra = struct.pack("<HHQQ", 1, 16, tib, len(comp))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, crc,
                        0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra)) + name + extra
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 0x21, crc,
                          0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0,
                          0) + name + extra
    body = local + comp
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(body), 0)
    save("huge_member.npz", body + central + eocd)


# torch.save, zip archive and legacy stream, with the real torch (skipped
# without it). Views of one storage: transposed, a row (storage offset 3),
# every other column (stride 2); a state_dict; a Parameter; one tensor per
# storage type formats/torch_test.cc checks.
try:
    import torch
except ImportError:
    torch = None
if torch is not None:
    w = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    lin = torch.nn.Linear(3, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        lin.bias.copy_(torch.tensor([0.5, -0.5]))
    obj = {
        "w": w, "wt": w.t(), "row": w[1], "cols": w[:, ::2],
        "sd": lin.state_dict(), "p": lin.weight,
        "h": torch.tensor([0.5, -1.0], dtype=torch.float16),
        "bf": torch.tensor([1.5, -2.0], dtype=torch.bfloat16),
        "i": torch.tensor([-(2**40), 7], dtype=torch.int64),
        "b": torch.tensor([True, False]),
        "s": torch.tensor(2.5, dtype=torch.float64),
        "step": 3, "name": "x",
    }
    for legacy in (False, True):
        b = io.BytesIO()
        torch.save(obj, b, _use_new_zipfile_serialization=not legacy)
        save("torch_legacy.pt" if legacy else "torch_zip.pt", b.getvalue())
