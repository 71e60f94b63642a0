"""A byte flipped on disk in a stored tensor is DATA_LOSS naming the tensor,
through every way a user reads it back: the Python client's read_tensor,
`reprodctl compare` of two stored runs, and reprodd stays up.

Both places a tensor's bytes can live are damaged: a segment file of its own
(tensors of --segment-tensor-bytes and more, here 1 MiB) and RocksDB's
chunks (smaller tensors). The chunk is found by its bytes in RocksDB's blob
files (values are stored uncompressed, so the bytes are there as written);
both runs hold the same bytes, and one copy is hit: one run reads back, the
other fails.
"""
import numpy as np
import pytest

reprod_client = pytest.importorskip("reprod_client")
from conftest import Reprodd, run_reprodctl  # noqa: E402
from reprod_client import Client  # noqa: E402

MiB = 1 << 20


def flip_byte(path, at):
    """Flips one bit of the byte at `at`, in place."""
    with open(path, "r+b") as f:
        f.seek(at)
        value = f.read(1)[0]
        f.seek(at)
        f.write(bytes([value ^ 0x10]))


@pytest.mark.parametrize("elements, suffix", [(MiB // 2, ".seg"), (20_000, ".blob")],
                         ids=["segment-file", "rocksdb-chunk"])
def test_flipped_byte_is_data_loss_naming_the_tensor(tmp_path, elements, suffix):
    data_dir = tmp_path / "data"
    server = Reprodd(tmp_path, store="rocksdb", data_dir=data_dir)
    try:
        rng = np.random.default_rng(5)
        weights = rng.standard_normal(elements).astype(np.float32)
        with Client(server.address) as client:
            for name in ("team/ref", "team/cand"):
                run = client.open_run(name, framework="torch")
                run.log("grads", {"w": weights})
                run.close()
            # Flushed to blob files by a restart (the chunks sat in the memtable).
            server.stop()
            server.start()
        with Client(server.address) as client:
            assert np.array_equal(client.read_tensor("team/cand", "grads", "w"), weights)
        # The two runs hold the same bytes: damage the second copy on disk.
        damaged = None
        for path in sorted(data_dir.rglob(f"*{suffix}")):
            if path.read_bytes().count(weights.tobytes()[:4096]) > 0:
                damaged = path
        assert damaged is not None
        blob = damaged.read_bytes()
        at = blob.rfind(weights.tobytes()[:4096]) + 100
        flip_byte(damaged, at)

        failures = []
        with Client(server.address) as client:
            for run in ("team/ref", "team/cand"):
                try:
                    client.read_tensor(run, "grads", "w")
                except reprod_client.ReprodError as e:
                    failures.append(str(e))
        assert len(failures) == 1, failures
        assert "grads/w" in failures[0] and "DATA_LOSS" in failures[0].upper().replace(" ", "_"), \
            failures[0]
        res = run_reprodctl("--server", server.address, "compare", "team/ref", "team/cand")
        assert res.code != 0 and "grads/w" in res.stderr and "crc32c" in res.stderr, res
        assert server.proc.poll() is None, "reprodd died on a damaged tensor"
    finally:
        server.stop()
