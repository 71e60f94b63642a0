"""reprod_client.crc32c against the standard test vector and an independent
bytewise reference, once with google-crc32c (the client's dependency) and
once with the numpy fallback; the throughput of each on a 64 MiB buffer is
printed (-s) and held to a floor."""
import time

import numpy as np
import pytest

from reprod_client import crc32c as crcmod
from reprod_client.crc32c import crc32c, crc32c_update

GOOGLE = crcmod._google_crc32c


@pytest.fixture(autouse=True, params=["google_crc32c", "numpy"])
def implementation(request, monkeypatch):
    """Every test runs with each implementation."""
    if request.param == "numpy":
        monkeypatch.setattr(crcmod, "_google_crc32c", None)
    elif GOOGLE is None:
        pytest.skip("google_crc32c (a dependency of reprod_client) is not installed "
                    "with its C extension here")
    return request.param


def reference_crc32c(data: bytes) -> int:
    """Bit-at-a-time CRC-32C (reflected 0x82F63B78), written independently
    of the module under test."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_standard_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA          # RFC 3720 B.4: 32 zero bytes
    assert crc32c(b"\xff" * 32) == 0x62A8AB43       # 32 bytes of 0xFF
    assert crc32c(bytes(range(32))) == 0x46DD794E   # incrementing 0..31
    assert reference_crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("size", [1, 2, 3, 7, 15, 16, 17, 63, 127, 128, 129, 255, 1000,
                                  4093, 4096, 4099, 65535, 65537, 100_003, 262_147])
def test_random_odd_sizes_match_reference(size):
    rng = np.random.default_rng(size)
    data = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    assert crc32c(data) == reference_crc32c(data)


def test_large_buffer_matches_reference_via_update():
    # 3 MiB + 5: checked against the reference in pieces small enough for
    # the bytewise loop, chained through crc32c_update's linearity.
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 3 * (1 << 20) + 5, dtype=np.uint8)
    whole = crc32c(data)
    pieces = 0
    for off in range(0, data.size, 1 << 20):
        pieces = crc32c_update(pieces, data[off:off + (1 << 20)])
    assert whole == pieces
    # One independent check on a slice boundary: reference over 200 KiB.
    head = data[:200_000].tobytes()
    assert crc32c(head) == reference_crc32c(head)


def test_accepts_arrays_memoryviews_and_bytearrays():
    arr = np.arange(1000, dtype=np.float32)
    expect = reference_crc32c(arr.tobytes())
    assert crc32c(arr) == expect
    assert crc32c(memoryview(arr.tobytes())) == expect
    assert crc32c(bytearray(arr.tobytes())) == expect
    with pytest.raises(ValueError):
        crc32c(arr.reshape(100, 10).T)  # not C-contiguous


def test_update_chains():
    a, b = b"hello, ", b"world" * 1000
    assert crc32c_update(crc32c(a), b) == crc32c(a + b)
    assert crc32c_update(0, b"") == 0
    # Arrays and memoryviews after a running CRC (combined, not copied).
    arr = np.arange(100_003, dtype=np.uint8)
    for tail in (arr, memoryview(arr), bytearray(arr.tobytes()), arr[:0], arr[:1]):
        assert crc32c_update(crc32c(a), tail) == reference_crc32c(a + bytes(tail))


def test_throughput_64mib(capsys, implementation):
    data = np.random.default_rng(0).integers(0, 256, 64 << 20, dtype=np.uint8)
    crc32c(data[:1 << 20])  # build the tables
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        crc32c(data)
        best = min(best, time.perf_counter() - t0)
    mbps = data.size / best / 1e6
    with capsys.disabled():
        print(f"\ncrc32c ({implementation}): {mbps:.0f} MB/s on 64 MiB")
    # Targets are >= 200 MB/s (numpy) and >= 2 GB/s (google_crc32c); the
    # floors leave room for a busy shared machine.
    floor = 1000 if implementation == "google_crc32c" else 100
    assert mbps >= floor, f"crc32c too slow: {mbps:.0f} MB/s"
