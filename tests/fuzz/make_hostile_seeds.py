#!/usr/bin/env python3
"""Writes the hostile seeds of tests/fuzz/corpus (files named hostile_*): small
versions of the attacks the readers refuse (zip bombs, lying zip sizes,
overlapping safetensors offsets, pickle stack/memo/MARK floods, rank 65), so
the fuzzers start next to each refusal. Run from anywhere; deterministic."""
import io
import json
import struct
import zipfile
import zlib
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"


def npy(shape, data, descr="<f4"):
    d = f"{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"
    d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode() + data


def zip_bytes(members, deflate=True):
    buf = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if deflate else zipfile.ZIP_STORED
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members:
            z.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data, method)
    return buf.getvalue()


def patch_sizes(blob, usize):
    """Sets the one member's uncompressed size in its local and central headers."""
    b = bytearray(blob)
    for magic, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = b.find(magic)
        b[at + off:at + off + 4] = struct.pack("<I", usize)
    return bytes(b)


def zip64_member(name, head, csize_zeros, usize):
    """A zip64 member declaring `usize` bytes whose deflate stream holds only
    `head` and csize_zeros zeros (the 11 GiB ask, in small)."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    data = c.compress(head + bytes(csize_zeros)) + c.flush()
    crc = zlib.crc32(head + bytes(csize_zeros))
    name = name.encode()
    extra = struct.pack("<HHQQ", 1, 16, usize, len(data))
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 45, 0, 8, 0, 0x21, crc, 0xFFFFFFFF,
                        0xFFFFFFFF, len(name), len(extra)) + name + extra
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 8, 0, 0x21, crc,
                          0xFFFFFFFF, 0xFFFFFFFF, len(name), len(extra), 0, 0, 0, 0, 0)
    central += name + extra
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                       len(local) + len(data), 0)
    return local + data + central + eocd


def safetensors(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def torch_zip(pickle_bytes, storage):
    return zip_bytes([("m/data.pkl", pickle_bytes), ("m/data/0", storage),
                      ("m/version", b"3\n")])


def torch_pickle(rank):
    """{'t': _rebuild_tensor_v2(('storage', FloatStorage, '0', 'cpu', 1), 0,
    (1,)*rank, (1,)*rank, False, OrderedDict())} as torch.save writes it."""
    ones = b"(" + b"K\x01" * rank + b"t"
    return (b"\x80\x02}X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n("
            b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000"
            b"X\x03\x00\x00\x00cpuK\x01tQK\x00" + ones + ones +
            b"\x89ccollections\nOrderedDict\n)RtRs.")


def main():
    seeds = {
        "npz/hostile_header_smaller_than_member.npz":
            zip_bytes([("x.npy", npy("(1,)", bytes(4 + 65536)))]),
        "npz/hostile_lying_declared_size.npz":
            patch_sizes(zip_bytes([("x.npy", npy("(1,)", bytes(4 + 65536)))]), 132),
        "npz/hostile_zip64_asks_11gib.npz":
            zip64_member("w.npy", npy(f"({(11 << 30) // 4},)", b""), 65536, 11 << 30),
        "npz/hostile_rank65.npz": zip_bytes([("r.npy", npy("(" + "1, " * 65 + ")", bytes(4)))]),
        "npy/hostile_rank65.npy": npy("(" + "1, " * 65 + ")", bytes(4)),
        "safetensors/hostile_overlap.safetensors": safetensors({
            "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
            "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)),
        "safetensors/hostile_rank65.safetensors": safetensors(
            {"deep": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, bytes(4)),
        "pickle/hostile_dup_flood.pkl": b"\x80\x02N" + b"2" * 4096 + b".",
        "pickle/hostile_memo_flood.pkl": b"\x80\x04N" + b"\x94" * 4096 + b".",
        "pickle/hostile_mark_flood.pkl": b"\x80\x02" + b"(" * 4096 + b"N.",
        "torch/hostile_rank65.pt": torch_zip(torch_pickle(65), bytes(4)),
        "torch/hostile_zeros_storage.pt": torch_zip(torch_pickle(1), bytes(4)),
    }
    for name, blob in seeds.items():
        (CORPUS / name).write_bytes(blob)
        print(f"{name}: {len(blob)} bytes")


if __name__ == "__main__":
    main()
