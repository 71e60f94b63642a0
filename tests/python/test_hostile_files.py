"""Hostile tensor files: zip bombs, overlapping safetensors, pickle stack and
memo floods, absurd ranks. reprodctl refuses each with exit 2, naming the
file, the member or key and the reason, within small time and memory."""
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest

from conftest import REPRODCTL

CHUNK = 64 << 20  # zeros deflated once and repeated


def crc32_combine(crc1, crc2, len2):
    """zlib's crc32_combine: the CRC-32 of A + B from crc(A), crc(B), len(B)."""
    def times(mat, vec):
        out, i = 0, 0
        while vec:
            if vec & 1:
                out ^= mat[i]
            vec >>= 1
            i += 1
        return out

    def square(mat):
        return [times(mat, mat[n]) for n in range(32)]

    if len2 == 0:
        return crc1
    odd = [0xEDB88320] + [1 << (n - 1) for n in range(1, 32)]
    even = square(odd)
    odd = square(even)
    while True:
        even = square(odd)
        if len2 & 1:
            crc1 = times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = square(even)
        if len2 & 1:
            crc1 = times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def npy_header(shape):
    d = f"{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"
    d += " " * ((64 - (10 + len(d) + 1) % 64) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(d)) + d.encode()


def deflated_zeros_member(head, chunks):
    """`head` then chunks * CHUNK zero bytes as one raw deflate stream (level 1,
    as a careless writer makes it), its CRC-32 and uncompressed size. One
    chunk is compressed after a full flush and its blocks are repeated: each
    copy starts with an empty window, so the stream stays valid."""
    c = zlib.compressobj(1, zlib.DEFLATED, -15)
    first = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = bytes(CHUNK)
    block = c.compress(zeros) + c.flush(zlib.Z_FULL_FLUSH)
    last = c.flush()
    crc_chunk = zlib.crc32(zeros)
    crc = zlib.crc32(head)
    for _ in range(chunks):
        crc = crc32_combine(crc, crc_chunk, CHUNK)
    return [first] + [block] * chunks + [last], crc, len(head) + chunks * CHUNK


def write_zip(path, name, parts, crc, usize):
    """A one-member zip of deflated `parts`, with zip64 extra fields when the
    size needs them (sizes as Python's zipfile and numpy write them)."""
    csize = sum(len(p) for p in parts)
    name = name.encode()
    big = usize >= 0xFFFFFFFF
    extra = struct.pack("<HHQQ", 1, 16, usize, csize) if big else b""
    small = (0xFFFFFFFF, 0xFFFFFFFF) if big else (csize, usize)
    version = 45 if big else 20
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, version, 0, 8, 0, 0x21, crc, *small,
                            len(name), len(extra)) + name + extra)
        for p in parts:
            f.write(p)
        cd_offset = f.tell()
        central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, version, version, 0, 8, 0, 0x21,
                              crc, *small, len(name), len(extra), 0, 0, 0, 0, 0) + name + extra
        f.write(central)
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), cd_offset, 0))


def test_repeated_deflate_blocks_make_a_valid_stream():
    # The builder's trick, checked against zlib itself at a small size.
    global CHUNK
    saved, CHUNK = CHUNK, 1 << 16
    try:
        parts, crc, usize = deflated_zeros_member(b"head", 5)
    finally:
        CHUNK = saved
    out = zlib.decompress(b"".join(parts), -15)
    assert out == b"head" + bytes(5 << 16) and usize == len(out)
    assert crc == zlib.crc32(out)
    assert crc32_combine(zlib.crc32(b"ab"), zlib.crc32(b"cde"), 3) == zlib.crc32(b"abcde")


def run_measured(*args):
    """Runs reprodctl in a fresh Python whose only child it is: exit code,
    stderr, wall seconds and the child's peak RSS in bytes."""
    probe = (
        "import resource, subprocess, sys, time\n"
        "t = time.monotonic()\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)\n"
        "dt = time.monotonic() - t\n"
        "rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(p.returncode, dt, rss)\n"
        "sys.stderr.write(p.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", probe, str(REPRODCTL), *map(str, args)],
                          capture_output=True, text=True, timeout=180)
    code, secs, rss = proc.stdout.split()
    return int(code), proc.stderr, float(secs), int(rss)


@pytest.fixture(scope="module")
def bomb_3gib(tmp_path_factory):
    # The header says (1,) float32; the member inflates to 3 GiB of zeros.
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    parts, crc, usize = deflated_zeros_member(npy_header("(1,)") + bytes(4), 48)
    write_zip(path, "x.npy", parts, crc, usize)
    return path, usize


def test_npz_bomb_is_refused_fast_in_little_memory(bomb_3gib, reprodctl):
    path, usize = bomb_3gib
    assert 13e6 < path.stat().st_size < 15e6 and usize > 3 << 30
    for cmd in (["inspect", path], ["compare", path, path]):
        code, err, secs, rss = run_measured(*cmd)
        print(f"{cmd[0]}: exit {code} in {secs:.3f} s, peak RSS {rss / 2**20:.1f} MiB")
        assert code == 2, err
        assert f"{path}:x.npy: npy header declares shape (1,) of '<f4'" in err, err
        assert f"the zip declares {usize} bytes" in err, err
        assert secs < 1.0 and rss < 64 << 20, (secs, rss)


def test_npz_asking_11_gib_is_refused_without_allocating(tmp_path, reprodctl):
    # Header and zip agree on 11 GiB of float32, deflated from a 51 MB file.
    n = (11 << 30) // 4
    parts, crc, usize = deflated_zeros_member(npy_header(f"({n},)"), 176)
    path = tmp_path / "huge.npz"
    write_zip(path, "w.npy", parts, crc, usize)
    assert 50e6 < path.stat().st_size < 53e6
    code, err, secs, rss = run_measured("inspect", path)
    print(f"inspect: exit {code} in {secs:.3f} s, peak RSS {rss / 2**20:.1f} MiB")
    assert code == 2, err
    assert f"{path}:w.npy: member expands" in err and "over the 100:1 limit" in err, err
    assert secs < 1.0 and rss < 64 << 20, (secs, rss)


def safetensors_bytes(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_safetensors_overlap_exits_2_naming_both(tmp_path, reprodctl):
    path = tmp_path / "overlap.safetensors"
    path.write_bytes(safetensors_bytes({
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12)))
    res = reprodctl("inspect", path)
    assert res.code == 2, res
    assert f"{path}: tensors 'a' [0, 8) and 'b' [4, 12) overlap" in res.stderr, res


def test_pickle_stack_flood_exits_2_naming_the_limit(tmp_path, reprodctl):
    # 4 MB of DUP after one None: 4 M stack entries without the input bound.
    path = tmp_path / "flood.pdparams"
    blob = b"\x80\x02N" + b"2" * (4 << 20) + b"."
    path.write_bytes(blob)
    code, err, secs, rss = run_measured("inspect", path)
    assert code == 2, err
    bound = len(blob) // 4 + 65536
    assert f"{path}: pickle stack deeper than {bound} (bound for a {len(blob)}-byte pickle" in err
    assert rss < 256 << 20, rss


def rank65_files(tmp_path):
    ones = "(" + "1, " * 65 + ")"
    npy = tmp_path / "deep.npy"
    npy.write_bytes(npy_header(ones) + bytes(4))
    st = tmp_path / "deep.safetensors"
    st.write_bytes(safetensors_bytes(
        {"deep": {"dtype": "F32", "shape": [1] * 65, "data_offsets": [0, 4]}}, bytes(4)))
    # numpy cannot make a 65-d array: the pickle is written by hand, as
    # numpy.core.multiarray._reconstruct + ndarray.__setstate__ would be.
    tup = b"(" + b"K\x01" * 65 + b"t"
    pkl = (b"\x80\x02}X\x04\x00\x00\x00deep"
           b"cnumpy.core.multiarray\n_reconstruct\n"
           b"cnumpy\nndarray\nK\x00\x85C\x01b\x87R"
           b"(K\x01" + tup + b"cnumpy\ndtype\nX\x02\x00\x00\x00f4K\x00K\x01\x87R"
           b"(K\x03X\x01\x00\x00\x00<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
           b"\x89C\x04\x00\x00\x00\x00tbs.")
    pd = tmp_path / "deep.pdparams"
    pd.write_bytes(pkl)
    return {"npy": npy, "safetensors": st, "pdparams": pd}


@pytest.mark.parametrize("kind", ["npy", "safetensors", "pdparams"])
def test_rank_over_64_exits_2(tmp_path, reprodctl, kind):
    path = rank65_files(tmp_path)[kind]
    res = reprodctl("inspect", path)
    assert res.code == 2, res
    assert str(path) in res.stderr and "65" in res.stderr and "64" in res.stderr, res
    if kind == "safetensors":
        assert "key 'deep'" in res.stderr, res


def test_real_all_zero_npz_member_needs_max_expansion_ratio(tmp_path, reprodctl):
    # numpy deflates 80 MiB of float32 zeros ~1000:1: past the 100:1 guard.
    zeros = np.zeros((80 << 20) // 4, dtype=np.float32)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, w=zeros)
    assert path.stat().st_size * 100 < zeros.nbytes
    refused = reprodctl("inspect", path)
    assert refused.code == 2, refused
    assert f"{path}:w.npy: member expands" in refused.stderr, refused
    assert "over the 100:1 limit" in refused.stderr, refused
    assert "--max-expansion-ratio" in refused.stderr, refused
    assert reprodctl("compare", path, path).code == 2

    res = reprodctl("inspect", path, "--format", "json", "--max-expansion-ratio", "0")
    assert res.code == 0, res
    [tensor] = res.json()["tensors"]
    assert tensor["key"] == "w" and tensor["shape"] == list(zeros.shape), tensor
    assert tensor["min"] == tensor["max"] == 0.0, tensor
    # A limit above the member's ratio admits it too.
    ratio = zeros.nbytes // path.stat().st_size
    assert reprodctl("compare", path, path, "--max-expansion-ratio", 2 * ratio).code == 0
    assert reprodctl("compare", path, path, "--max-expansion-ratio", ratio // 2).code == 2


def test_push_takes_max_expansion_ratio(tmp_path, reprodctl, reprodd):
    zeros = np.zeros((80 << 20) // 4, dtype=np.float32)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, w=zeros)
    server = ("--server", reprodd.address)
    refused = reprodctl(*server, "push", path, "--run", "hostile/zeros")
    assert refused.code == 2 and "--max-expansion-ratio" in refused.stderr, refused
    res = reprodctl(*server, "push", path, "--run", "hostile/zeros", "--max-expansion-ratio", "0")
    assert res.code == 0, res
    pushed = reprodctl(*server, "compare", "--remote", "hostile/zeros", "hostile/zeros",
                       "--format", "json")
    assert pushed.code == 0, pushed
    assert pushed.json()["summary"]["tensors"] == 1, pushed.stdout[:2000]
