"""SIGKILL of reprodd during ingest, 20 times, over tensors of mixed sizes.

Each round a fresh reprodd (RocksDB store, the same data dir every round)
takes a push of tensors from 100 bytes to 6 MiB, some through RocksDB's WAL
and some into segment files of their own (--segment-tensor-bytes 1 MiB, so
both write paths are crossed by the kill), and is killed with SIGKILL at a random moment. After
each restart every tensor the client saw acknowledged, in every round so
far, must read back byte-exact (the oracle: numpy arrays regenerated from
their seeds), and every tensor the server lists must be one the client sent,
intact. Nothing acknowledged may be lost; nothing half-written may show.
"""
import random
import signal
import threading
import time

import numpy as np

from conftest import Reprodd
from reprod_client import Client

ROUNDS = 20
SIZES = [100, 40 << 10, 300 << 10, 1536 << 10, 6 << 20]  # bytes
SEGMENT_BYTES = 1 << 20


def tensor(round_no, i):
    n = SIZES[i % len(SIZES)] // 4
    return np.random.default_rng(round_no * 1000 + i).standard_normal(n).astype(np.float32)


class Pusher(threading.Thread):
    """Pushes tensor(round, i) as fwd/t{i} one at a time until the server
    dies; `acked` holds the i whose flush returned."""

    def __init__(self, address, round_no):
        super().__init__(daemon=True)
        self.address, self.round_no = address, round_no
        self.acked = []

    def run(self):
        with Client(self.address) as client:
            try:
                run = client.open_run(f"crash/r{self.round_no}", framework="torch",
                                      reconnect_timeout=0.3)
            except Exception:  # killed before the run was created
                return
            try:
                for i in range(10_000):
                    run.log("fwd", {f"t{i}": tensor(self.round_no, i)})
                    run.flush(timeout=30)
                    self.acked.append(i)
            except Exception:  # the server was killed: expected
                pass
            finally:
                try:
                    run.close()  # raises the run's error; stops its sender first
                except Exception:
                    pass


def check_round(client, round_no, acked):
    """Every acked tensor is there and exact; every listed one is intact."""
    stored = {t.key: t for t in client.list_tensors(f"crash/r{round_no}")}
    missing = [i for i in acked if f"t{i}" not in stored]
    assert not missing, f"round {round_no}: acked tensors lost: {missing[:5]}"
    for key in stored:
        got = client.read_tensor(f"crash/r{round_no}", "fwd", key)
        want = tensor(round_no, int(key[1:]))
        assert got.tobytes() == want.tobytes(), f"round {round_no}: {key} differs"


def test_sigkill_during_ingest_loses_nothing_acked(tmp_path):
    rng = random.Random(5)
    data = tmp_path / "data"
    acked_by_round = {}
    kills_mid_segment = 0
    for round_no in range(ROUNDS):
        server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                         extra_args=["--segment-tensor-bytes", SEGMENT_BYTES])
        try:
            pusher = Pusher(server.address, round_no)
            pusher.start()
            time.sleep(rng.uniform(0.2, 0.8))
            in_flight = len(pusher.acked)  # the tensor being sent when killed
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=30)
            kills_mid_segment += SIZES[in_flight % len(SIZES)] >= SEGMENT_BYTES
            pusher.join(timeout=60)
            assert not pusher.is_alive(), "the client did not give up after the kill"
            acked_by_round[round_no] = list(pusher.acked)
        finally:
            server.kill()
        server = Reprodd(tmp_path, store="rocksdb", data_dir=data,
                         extra_args=["--segment-tensor-bytes", SEGMENT_BYTES])
        try:
            with Client(server.address) as client:
                check_round(client, round_no, acked_by_round[round_no])
                if round_no == ROUNDS - 1:  # and once more, everything
                    for r, acked in acked_by_round.items():
                        check_round(client, r, acked)
        finally:
            server.stop()
    total = sum(len(a) for a in acked_by_round.values())
    print(f"\n{ROUNDS} kills, {total} acked tensors all intact, {kills_mid_segment} kills "
          f"while a segment-file tensor was in flight")
    assert total > ROUNDS, "too few tensors acked to mean anything"
    assert kills_mid_segment > 0, "no kill hit a segment-file upload"
