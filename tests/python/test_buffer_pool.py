"""reprod_client.buffers.BufferPool and to_wire(alloc=...): the reuse of
log()'s copy buffers (oracles: numpy's own copies and hand-counted sizes)."""
import numpy as np

from reprod_client import tensors
from reprod_client.buffers import BufferPool

MiB = 1 << 20


def addr(buf):
    return buf.__array_interface__["data"][0]


def test_a_buffer_given_back_is_taken_again_for_its_size_only():
    pool = BufferPool(max_bytes=16 * MiB)
    a = pool.take(2 * MiB)
    assert a.dtype == np.uint8 and a.shape == (2 * MiB,)
    pool.give(a)
    assert pool.kept_bytes == 2 * MiB
    b = pool.take(3 * MiB)                 # another size: a new buffer
    assert addr(b) != addr(a) and pool.reused == 0
    c = pool.take(2 * MiB)                 # the same size: a again
    assert addr(c) == addr(a) and pool.reused == 1
    assert pool.kept_bytes == 0
    d = pool.take(2 * MiB)                 # none left of that size
    assert addr(d) != addr(a) and pool.reused == 1


def test_small_and_oversized_buffers_are_not_kept():
    pool = BufferPool(max_bytes=4 * MiB, min_bytes=MiB)
    pool.give(pool.take(MiB - 1))
    pool.give(pool.take(5 * MiB))
    assert pool.kept_bytes == 0


def test_the_oldest_buffers_go_first_and_the_bound_holds():
    pool = BufferPool(max_bytes=5 * MiB)
    bufs = [pool.take(2 * MiB) for _ in range(3)]
    for b in bufs:
        pool.give(b)
        assert pool.kept_bytes <= 5 * MiB
    assert pool.kept_bytes == 4 * MiB      # the first was dropped for the third
    kept = {addr(pool.take(2 * MiB)), addr(pool.take(2 * MiB))}
    assert kept == {addr(bufs[1]), addr(bufs[2])}


def test_a_buffer_given_twice_is_kept_once_and_clear_drops_all():
    pool = BufferPool(max_bytes=8 * MiB)
    a = pool.take(2 * MiB)
    pool.give(a)
    pool.give(a)
    assert pool.kept_bytes == 2 * MiB
    pool.clear()
    assert pool.kept_bytes == 0
    assert addr(pool.take(2 * MiB)) != addr(a) or pool.reused == 0


def test_to_wire_copies_into_the_buffer_alloc_gives():
    rng = np.random.default_rng(1)
    given = []

    def alloc(n):
        given.append(np.full(n, 0xAB, dtype=np.uint8))  # stale contents
        return given[-1]

    src = rng.standard_normal((64, 48)).astype(np.float32)
    cases = {
        "contiguous": src,
        "transposed": src.T,                         # not C-contiguous
        "bool": (rng.integers(0, 3, 1000).astype(np.uint8) * 2).view(np.bool_),
        "int64": rng.integers(-9, 9, 333).astype(np.int64),
    }
    for key, arr in cases.items():
        wire = tensors.to_wire(key, arr, alloc=alloc)
        want = tensors.to_wire(key, arr)             # the plain copy
        assert wire.pooled and not want.pooled, key
        assert addr(wire.data) == addr(given[-1]), key
        assert wire.shape == want.shape and wire.dtype == want.dtype, key
        np.testing.assert_array_equal(wire.data, want.data, err_msg=key)
    assert set(np.unique(tensors.to_wire("b", cases["bool"], alloc=alloc).data)) <= {0, 1}
    # The copy is private: changing the source leaves it alone.
    wire = tensors.to_wire("c", src, alloc=alloc)
    before = wire.data.copy()
    src[:] = 0
    np.testing.assert_array_equal(wire.data, before)
