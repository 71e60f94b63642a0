"""Writers for every file layout reprodctl reads, all done with numpy (or by
hand where numpy has no writer), so the tests never use our own writers."""
import json
import pickle
import struct
import zipfile

import numpy as np


def flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = v
    return out


def save_reprod_log(path, data):
    """What reprod_log.ReprodLogger.save writes: np.save of a dict."""
    np.save(path, data, allow_pickle=True)


def save_pickle(path, data, protocol):
    """paddle.save / raw pickle of a dict of arrays."""
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=protocol)


def save_npz(path, data, compressed):
    flat = flatten(data)
    (np.savez_compressed if compressed else np.savez)(path, **flat)


def save_npy_bare(path, array):
    np.save(path, array)


def save_safetensors(path, data, bf16_keys=()):
    """Hand-written safetensors (the format is 8-byte LE header length + JSON +
    raw little-endian bytes). Keys in bf16_keys hold uint16 bit patterns that
    are written with dtype BF16."""
    codes = {np.dtype("bool"): "BOOL", np.dtype("uint8"): "U8", np.dtype("int8"): "I8",
             np.dtype("int16"): "I16", np.dtype("int32"): "I32", np.dtype("int64"): "I64",
             np.dtype("float16"): "F16", np.dtype("float32"): "F32", np.dtype("float64"): "F64",
             np.dtype("uint16"): "U16", np.dtype("uint32"): "U32", np.dtype("uint64"): "U64"}
    flat = flatten(data)
    header, blobs, offset = {}, [], 0
    for k, v in flat.items():
        a = np.asarray(v)  # not ascontiguousarray: it turns 0-d into 1-d
        raw = a.astype(a.dtype.newbyteorder("<")).tobytes()
        dtype = "BF16" if k in bf16_keys else codes[a.dtype]
        header[k] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hdr = json.dumps(header).encode()
    hdr += b" " * (-len(hdr) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)))
        f.write(hdr)
        for b in blobs:
            f.write(b)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)
