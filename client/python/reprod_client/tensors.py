"""Conversion of user tensors to reprod.v1 wire tensors.

`to_wire(key, value)` turns one numpy array, torch.Tensor, paddle.Tensor,
Python scalar or numpy scalar into a `WireTensor`: the wire dtype (the
reprod.v1 DType enum value), the shape, and an owned copy of its bytes in C
order, little-endian. `flatten(values)` turns nested dicts into
``{"a/b/c": value}``. Neither imports torch or paddle: framework tensors are
recognised by the module of their type.

Dtype rules (nothing is upcast; a bfloat16 tensor travels as bfloat16):

=====================  ====================================================
input                  wire dtype
=====================  ====================================================
bool / int / float     BOOL / INT64 / FLOAT64 (Python scalars)
numpy                  same dtype (bool, int8-64, uint8-64, float16/32/64;
                       ml_dtypes.bfloat16 -> BFLOAT16)
torch                  same dtype; bfloat16 via a bit view (torch 1.13
                       cannot .numpy() bfloat16)
paddle                 same dtype; paddle.bfloat16 (whose .numpy() gives
                       uint16) -> BFLOAT16
=====================  ====================================================

A uint16 array is sent as UINT16; only paddle.bfloat16 tensors (whose
.numpy() is a uint16 view) become BFLOAT16. Every element is compared as a
double, so uint64 and int64 values above 2**53 round to the nearest double
on the server. Complex, string and object arrays raise ValueError naming the
key and the dtype. The bytes are
always copied at conversion time, so the caller may modify the tensor in
place as soon as `to_wire` returns.
"""
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from . import placement as _placement

__all__ = [
    "DTYPE_BOOL", "DTYPE_INT8", "DTYPE_UINT8", "DTYPE_INT16", "DTYPE_INT32",
    "DTYPE_INT64", "DTYPE_FLOAT16", "DTYPE_BFLOAT16", "DTYPE_FLOAT32",
    "DTYPE_FLOAT64", "DTYPE_UINT16", "DTYPE_UINT32", "DTYPE_UINT64", "DTYPE_NAMES", "WireTensor", "to_wire", "flatten",
    "validate_checkpoint", "validate_key", "validate_run_name",
    "numpy_dtype", "supports_numpy_dtype", "bfloat16_to_float32",
]

# reprod.v1.DType values (proto/reprod/v1/tensor.proto); kept here so that
# this module does not need the generated stubs.
DTYPE_BOOL = 1
DTYPE_INT8 = 2
DTYPE_UINT8 = 3
DTYPE_INT16 = 4
DTYPE_INT32 = 5
DTYPE_INT64 = 6
DTYPE_FLOAT16 = 7
DTYPE_BFLOAT16 = 8
DTYPE_FLOAT32 = 9
DTYPE_FLOAT64 = 10
DTYPE_UINT16 = 11
DTYPE_UINT32 = 12
DTYPE_UINT64 = 13

_NUMPY_TO_WIRE = {
    np.dtype(np.bool_): DTYPE_BOOL, np.dtype(np.int8): DTYPE_INT8,
    np.dtype(np.uint8): DTYPE_UINT8, np.dtype(np.int16): DTYPE_INT16,
    np.dtype(np.int32): DTYPE_INT32, np.dtype(np.int64): DTYPE_INT64,
    np.dtype(np.float16): DTYPE_FLOAT16, np.dtype(np.float32): DTYPE_FLOAT32,
    np.dtype(np.float64): DTYPE_FLOAT64, np.dtype(np.uint16): DTYPE_UINT16,
    np.dtype(np.uint32): DTYPE_UINT32, np.dtype(np.uint64): DTYPE_UINT64,
}

#: Wire dtype value -> lowercase name ("bfloat16", "uint16", ...): numpy's
#: names, which are reprod's (common/dtype.h).
DTYPE_NAMES = {wire: dt.name for dt, wire in _NUMPY_TO_WIRE.items()}
DTYPE_NAMES[DTYPE_BFLOAT16] = "bfloat16"

_WIRE_TO_NUMPY = {v: k.newbyteorder("<") for k, v in _NUMPY_TO_WIRE.items()}
_WIRE_TO_NUMPY[DTYPE_BFLOAT16] = np.dtype("<u2")  # bit pattern

_CHECKPOINT_RE = re.compile(r"[A-Za-z0-9_.+\-]{1,128}")
_SEGMENT_RE = re.compile(r"[A-Za-z0-9_.:+\-\[\]]+")
_RUN_PART_RE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")
_DOT_SEGMENTS = (".", "..")  # common/names.h: names are never relative paths


@dataclass
class WireTensor:
    """One tensor ready to stream: address, dtype, shape and owned bytes.

    `data` is a 1-D C-contiguous uint8 numpy array that nothing else
    references (a private copy of the caller's tensor).
    """
    checkpoint: str
    key: str
    step: Optional[int]
    dtype: int
    shape: Tuple[int, ...]
    data: np.ndarray
    #: The rank of the process that logs it (address.rank; 0 for a single
    #: process) and how its piece relates to the global tensor
    #: (placement.Shard/Replicate/Partial, or None).
    rank: int = 0
    placement: Optional[object] = None
    #: `data` came from the `alloc` given to to_wire (a Run gives it back to
    #: its buffer pool once the tensor is acked).
    pooled: bool = False

    @property
    def nbytes(self) -> int:
        """Number of payload bytes."""
        return int(self.data.nbytes)

    @property
    def address(self) -> str:
        """"checkpoint/key[@step]", as reprod prints addresses."""
        s = f"{self.checkpoint}/{self.key}"
        return s if self.step is None else f"{s}@{self.step}"


def validate_checkpoint(checkpoint):
    """Raises ValueError unless `checkpoint` is 1-128 bytes of
    [A-Za-z0-9_.+-] (reprod.v1.TensorAddress.checkpoint)."""
    if not isinstance(checkpoint, str) or not _CHECKPOINT_RE.fullmatch(checkpoint):
        raise ValueError(
            f"invalid checkpoint name {checkpoint!r}: it must be 1-128 characters "
            "of A-Z a-z 0-9 _ . + -")
    if checkpoint in _DOT_SEGMENTS:
        raise ValueError(f"invalid checkpoint name {checkpoint!r}: '.' and '..' are not names")
    return checkpoint


def validate_key(key):
    """Raises ValueError unless `key` is a valid tensor key: 1-1024 bytes of
    "/"-separated non-empty segments of [A-Za-z0-9_.:+-[]], none "." or ".."."""
    if not isinstance(key, str):
        raise ValueError(f"invalid tensor key {key!r}: keys must be strings")
    if not key or len(key.encode()) > 1024:
        raise ValueError(f"invalid tensor key {key!r}: it must be 1-1024 bytes long")
    for seg in key.split("/"):
        if not seg:
            raise ValueError(f"invalid tensor key {key!r}: empty path segment")
        if seg in _DOT_SEGMENTS:
            raise ValueError(f"invalid tensor key {key!r}: '.' and '..' segments are not "
                             "names (no relative paths)")
        if not _SEGMENT_RE.fullmatch(seg):
            bad = sorted({c for c in seg if not _SEGMENT_RE.fullmatch(c)})
            raise ValueError(
                f"invalid tensor key {key!r}: character(s) {''.join(bad)!r} not allowed "
                "(use A-Z a-z 0-9 _ . : + - [ ] and '/' between segments)")
    return key


def validate_run_name(name):
    """Raises ValueError unless `name` is "namespace/name", each part 1-128
    characters of [A-Za-z0-9_.-]."""
    parts = name.split("/") if isinstance(name, str) else []
    if len(parts) != 2 or not all(_RUN_PART_RE.fullmatch(p) and p not in _DOT_SEGMENTS
                                  for p in parts):
        raise ValueError(
            f"invalid run name {name!r}: expected \"namespace/name\", each part "
            "1-128 characters of A-Z a-z 0-9 _ . -, not '.' or '..'")
    return name


def flatten(values, prefix=""):
    """Flattens nested mappings into {"a/b/c": leaf}; keys must be strings.

    Raises ValueError for a non-string key or when two paths collide.
    """
    out = {}
    _flatten_into(values, prefix, out)
    return out


def _flatten_into(values, prefix, out):
    for k, v in values.items():
        if not isinstance(k, str):
            raise ValueError(f"invalid tensor key {k!r} under {prefix or 'the top level'!r}: "
                             "keys must be strings")
        path = f"{prefix}/{k}" if prefix else k
        if isinstance(v, Mapping):
            _flatten_into(v, path, out)
        else:
            if path in out:
                raise ValueError(f"tensor key {path!r} given twice")
            out[path] = v


def supports_numpy_dtype(dtype):
    """Whether numpy arrays of `dtype` (any byte order) have a wire dtype of
    their own: bool, int8-64, uint8-64, float16/32/64. (ml_dtypes.bfloat16,
    which to_wire also takes, is not counted here.)"""
    dt = np.dtype(dtype)
    return dt.byteorder in "<>=|" and dt.newbyteorder("=") in _NUMPY_TO_WIRE


def numpy_dtype(wire_dtype):
    """The little-endian numpy dtype holding a wire dtype's bytes (uint16 for
    bfloat16)."""
    try:
        return _WIRE_TO_NUMPY[int(wire_dtype)]
    except KeyError:
        raise ValueError(f"unknown wire dtype {wire_dtype}") from None


def bfloat16_to_float32(bits):
    """Widens bfloat16 bit patterns (a uint16 array) to float32 exactly."""
    bits = np.asarray(bits, dtype=np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _framework(value):
    mod = type(value).__module__ or ""
    root = mod.split(".", 1)[0]
    if root == "torch":
        return "torch"
    if root == "paddle":
        return "paddle"
    return None


def _unsupported(key, dtype):
    return ValueError(
        f"tensor {key!r}: unsupported dtype {dtype} (reprod stores "
        f"{', '.join(DTYPE_NAMES[w] for w in sorted(DTYPE_NAMES))})")


def _from_torch(key, t):
    import torch  # already imported by the caller's program

    t = t.detach()
    if t.layout != torch.strided:
        raise ValueError(f"tensor {key!r}: only dense (strided) torch tensors are supported, "
                         f"got layout {t.layout}")
    if hasattr(t, "resolve_conj"):
        t = t.resolve_conj().resolve_neg()
    # Only a contiguous CPU tensor's .numpy() shares the caller's memory:
    # .cpu() of a device tensor and .contiguous() of a strided one are fresh.
    needs_copy = t.device.type == "cpu" and t.is_contiguous()
    if t.dtype == torch.bfloat16:
        # torch cannot .numpy() bfloat16: move the bits through int16.
        arr = t.cpu().contiguous().view(torch.int16).numpy().view(np.uint16)
        wire = DTYPE_BFLOAT16
    else:
        try:
            arr = t.cpu().contiguous().numpy()
        except TypeError:
            raise _unsupported(key, t.dtype) from None
        wire = _NUMPY_TO_WIRE.get(arr.dtype)
        if wire is None:
            raise _unsupported(key, t.dtype)
    # Where it is shared, copy so that the caller may update the tensor in
    # place (optimizer step) right after log().
    return wire, tuple(t.shape), arr, needs_copy


def _from_paddle(key, t):
    dtype_name = str(t.dtype)  # "paddle.float32", "paddle.bfloat16", ...
    if dtype_name.endswith("bfloat16"):
        arr = np.asarray(t.numpy())
        if arr.dtype != np.uint16:  # pragma: no cover - future paddle versions
            raise _unsupported(key, dtype_name)
        return DTYPE_BFLOAT16, tuple(arr.shape), arr, False
    arr = np.asarray(t.numpy())
    wire = _NUMPY_TO_WIRE.get(arr.dtype.newbyteorder("="))
    if wire is None:
        raise _unsupported(key, dtype_name)
    # paddle's .numpy() returns a fresh host copy (tested by
    # test_client_tensors.py::test_inplace_update_after_log).
    return wire, tuple(arr.shape), arr, False


def _from_numpy_like(key, value):
    if isinstance(value, (bool, np.bool_)):
        arr = np.array(bool(value), dtype=np.bool_)
    elif isinstance(value, int) and not isinstance(value, np.integer):
        if not -2**63 <= value < 2**63:
            raise ValueError(f"tensor {key!r}: integer {value} does not fit in int64")
        arr = np.array(value, dtype=np.int64)
    elif isinstance(value, float):
        arr = np.array(value, dtype=np.float64)
    else:
        try:
            arr = np.asarray(value)
        except Exception as e:
            raise ValueError(f"tensor {key!r}: cannot convert {type(value).__name__} "
                             f"to an array ({e})") from None
    dt = arr.dtype
    if dt.name == "bfloat16" and dt.itemsize == 2:  # ml_dtypes.bfloat16
        return DTYPE_BFLOAT16, arr.shape, arr.view(np.uint16) if dt.isnative else arr.view(">u2"), True
    wire = _NUMPY_TO_WIRE.get(dt.newbyteorder("=")) if dt.byteorder in "<>=|" else None
    if wire is None:
        raise _unsupported(key, dt)
    return wire, arr.shape, arr, True


def to_wire(key, value, checkpoint="", step=None, rank=0, placement=None, alloc=None):
    """Converts one value to a WireTensor (validating `key`).

    Accepts numpy arrays and scalars, torch.Tensor (any device; detached and
    copied to host), paddle.Tensor, Python bool/int/float and anything
    numpy.asarray turns into a supported dtype. Raises ValueError naming the
    key for an invalid key, an unsupported dtype, a rank outside
    0..placement.MAX_RANK or a placement that does not fit the tensor's
    shape (placement.Shard/Replicate/Partial or None). The returned bytes
    are a private copy; `alloc(nbytes)`, when given, supplies the uint8
    buffer a copy goes into (the WireTensor is then marked `pooled`).
    """
    validate_key(key)
    rank = _placement.validate_rank(rank, f"rank of tensor {key!r}")
    fw = _framework(value)
    if fw == "torch":
        wire, shape, arr, needs_copy = _from_torch(key, value)
    elif fw == "paddle":
        wire, shape, arr, needs_copy = _from_paddle(key, value)
    else:
        wire, shape, arr, needs_copy = _from_numpy_like(key, value)
    shape = tuple(int(d) for d in shape)
    placement = _placement.check_placement(key, placement, shape)
    data, pooled = _owned_le_bytes(arr, needs_copy, alloc)
    return WireTensor(checkpoint=checkpoint, key=key, step=step, dtype=wire,
                      shape=shape, data=data, rank=rank, placement=placement, pooled=pooled)


def _owned_le_bytes(arr, needs_copy, alloc=None):
    """(C-order little-endian bytes of arr as a flat uint8 array, copied when
    `needs_copy` or when a conversion is needed anyway; whether they are in
    a buffer from `alloc(nbytes)`, which a plain copy goes into when given)."""
    dt = arr.dtype
    big = dt.byteorder == ">" or (dt.byteorder == "=" and sys.byteorder == "big")
    pooled = False
    if big:
        out = arr.astype(dt.newbyteorder("<"), order="C")  # always a new array
    elif (needs_copy or not arr.flags.c_contiguous) and alloc is not None and arr.size:
        buf = alloc(arr.nbytes)
        out = buf.view(dt).reshape(arr.shape)
        np.copyto(out, arr, casting="no")
        pooled = True
    elif needs_copy or not arr.flags.c_contiguous:
        out = np.array(arr, order="C", copy=True)
    else:
        out = arr
    out = out.reshape(-1)
    if out.dtype == np.bool_:
        # Any nonzero byte in a numpy bool is True; the wire wants 0 or 1.
        out = out.view(np.uint8)
        if out.size and out.max() > 1:
            if pooled:
                np.not_equal(out, 0, out=out.view(np.bool_))
            else:
                out = (out != 0).astype(np.uint8)
    return out.view(np.uint8), pooled
