"""Tensors logged with reprod_client come back from a real reprodd byte for
byte, with their dtype and shape (RunService.ReadTensor, crc32c checked by
the client and compared with the stored header).

numpy and paddle run in this process; torch runs in a subprocess (it and
paddle are kept out of one process).
"""
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from reprod_client import Client, NotFound, tensors as T
from reprod_client.crc32c import crc32c


@pytest.fixture(scope="module")
def client(reprodd):
    with Client(reprodd.address) as c:
        yield c


def check_stored(client, run, checkpoint, key, step, dtype_name, shape, raw):
    arr, info = client.read_tensor(run, checkpoint, key, step, with_info=True)
    assert info.dtype == dtype_name, key
    assert tuple(arr.shape) == tuple(shape) == info.shape, key
    assert arr.tobytes() == raw, key
    listed = {(t.checkpoint, t.key, t.step): t for t in client.list_tensors(run)}
    assert listed[(checkpoint, key, step)].crc32c == crc32c(raw), key


def test_numpy_round_trip(client, run_ns):
    run_name = f"{run_ns}/np"
    rng = np.random.default_rng(0)
    values = {
        "f32": rng.standard_normal((3, 5)).astype(np.float32),
        "f16": rng.standard_normal(7).astype(np.float16),
        "f64": rng.standard_normal((2, 2, 2)),
        "i64": rng.integers(-2**62, 2**62, 9, dtype=np.int64),
        "i32": rng.integers(-9, 9, 4, dtype=np.int32),
        "i16": np.array([-3, 4], np.int16), "i8": np.array([-1], np.int8),
        "u8": np.arange(5, dtype=np.uint8), "bool": rng.random(11) > 0.5,
        "u16": np.array([0, 1, 2**16 - 1], np.uint16),
        "u32": np.array([[0, 2**31], [2**32 - 2, 2**32 - 1]], np.uint32),
        "u64": np.array([0, 2**53 + 1, 2**63, 2**64 - 1], np.uint64),  # bytes kept exactly
        "empty": np.zeros((0, 3), np.float32), "scalar": np.float32(2.5),
        "big_endian": np.arange(6, dtype=">i4"), "big_endian_u64": np.arange(3, dtype=">u8"),
        "transposed": np.arange(12, dtype=np.float64).reshape(3, 4).T,
        "nested": {"deep": {"w": np.ones(3, np.float32)}},
        "py_int": 3, "py_float": 0.25, "py_bool": True,
    }
    expected = {
        "f32": values["f32"].copy(), "f16": values["f16"], "f64": values["f64"], "i64": values["i64"],
        "i32": values["i32"], "i16": values["i16"], "i8": values["i8"], "u8": values["u8"],
        "bool": values["bool"], "u16": values["u16"], "u32": values["u32"], "u64": values["u64"],
        "empty": values["empty"], "big_endian_u64": np.arange(3, dtype="<u8"),
        "scalar": np.array(2.5, np.float32), "big_endian": np.arange(6, dtype="<i4"),
        "transposed": np.ascontiguousarray(values["transposed"]),
        "nested/deep/w": np.ones(3, np.float32), "py_int": np.array(3, np.int64),
        "py_float": np.array(0.25), "py_bool": np.array(True),
    }
    with client.open_run(run_name, framework="numpy") as run:
        run.log("forward", values, step=3)
        values["f32"][:] = 0  # after log(): must not change what is stored
    assert run.info.state == "sealed"
    for key, want in expected.items():
        check_stored(client, run_name, "forward", key, 3, want.dtype.name, want.shape,
                     want.astype(want.dtype.newbyteorder("<")).tobytes())
    got = client.read_tensor(run_name, "forward", "f32", step=3)
    assert got.dtype == np.float32 and np.array_equal(got, expected["f32"])
    got = client.read_tensor(run_name, "forward", "u64", step=3)
    assert got.dtype == np.uint64 and got.tolist() == [0, 2**53 + 1, 2**63, 2**64 - 1]
    assert client.get_run(run_name).tensor_count == len(expected)
    with pytest.raises(NotFound) as e:
        client.read_tensor(run_name, "forward", "f32")  # no step: another address
    assert client.address in str(e.value)


@pytest.mark.requires_paddle
def test_paddle_round_trip(client, run_ns):
    import paddle  # installed by scripts/setup.sh

    run_name = f"{run_ns}/paddle"
    x = paddle.to_tensor(np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4))
    tensors = {"f32": x, "f16": x.astype("float16"), "bf16": x.astype("bfloat16"),
               "i64": paddle.to_tensor([5, -6, 7]), "bool": paddle.to_tensor([True, False, True])}
    raw = {k: np.ascontiguousarray(v.numpy()).tobytes() for k, v in tensors.items()}
    with client.open_run(run_name, framework="paddle") as run:
        run.log("forward", tensors)
        x[0, 0] = 99.0  # in-place update after log()
    names = {"f32": "float32", "f16": "float16", "bf16": "bfloat16", "i64": "int64", "bool": "bool"}
    for key, name in names.items():
        shape = (3,) if key in ("i64", "bool") else (3, 4)
        check_stored(client, run_name, "forward", key, None, name, shape, raw[key])
    bf = client.read_tensor(run_name, "forward", "bf16")
    assert bf.dtype == np.uint16  # bfloat16 bit patterns
    assert np.allclose(T.bfloat16_to_float32(bf), np.linspace(-3, 3, 12).reshape(3, 4), atol=0.02)
    assert client.get_run(run_name).framework_version == paddle.__version__


TORCH_PRODUCER = textwrap.dedent("""
    import json, sys
    import torch
    from reprod_client import Client
    address, run_name = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    x = torch.randn(4, 6)
    tensors = {
        "f32": x, "f16": x.half(), "bf16": x.bfloat16(),
        "i64": torch.arange(-3, 4), "bool": x > 0,
        "transposed": x.t(), "param": torch.nn.Parameter(torch.ones(5)),
    }
    expect = {}
    for k, t in tensors.items():
        t = t.detach().contiguous()
        b = t.view(torch.int16).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        expect[k] = [str(t.dtype).replace("torch.", ""), list(t.shape), b.hex()]
    client = Client(address)
    with client.open_run(run_name, framework="torch") as run:
        run.log("forward", tensors, step=0)
        with torch.no_grad():
            x.add_(1.0)  # in-place update after log()
    print(json.dumps({"expect": expect, "version": torch.__version__}))
""")


@pytest.mark.requires_torch
def test_torch_round_trip_in_subprocess(client, reprodd, run_ns):
    run_name = f"{run_ns}/torch"
    proc = subprocess.run([sys.executable, "-c", TORCH_PRODUCER, reprodd.address, run_name],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, (dtype, shape, hexbytes) in out["expect"].items():
        check_stored(client, run_name, "forward", key, 0, dtype, shape, bytes.fromhex(hexbytes))
    info = client.get_run(run_name)
    assert (info.framework, info.framework_version, info.state) == ("torch", out["version"], "sealed")
