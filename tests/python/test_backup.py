"""Backup, restore and compaction of a running reprodd (RocksDB store).

`reprodctl admin backup` is taken while a client keeps pushing: every tensor
the client saw acknowledged before the backup command started must come
back byte-exact from a store made with `reprodd restore`, and every other
tensor in it too (numpy arrays regenerated from their seeds are the
oracle). Compaction after deleting a run must shrink the store's files.
Refusals (no --backup-root, a taken name, a bad name, a data dir that is
not empty) name the reason and exit 2.
"""
import os
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import REPRODD, Reprodd, run_reprodctl
from reprod_client import Client

TENSOR_ELEMENTS = 256 * 1024  # 1 MiB of float32 each
MAX_TENSORS = 400             # the pusher's bound


def tensor(i):
    return np.random.default_rng(1000 + i).standard_normal(TENSOR_ELEMENTS).astype(np.float32)


class Pusher(threading.Thread):
    """Pushes tensor(i) as fwd/t{i}, one at a time, flushing each: `acked`
    lists (i, time.monotonic() when the ack arrived)."""

    def __init__(self, address, run):
        super().__init__(daemon=True)
        self.address, self.run_name = address, run
        self.acked = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        try:
            with Client(self.address) as client:
                run = client.open_run(self.run_name, framework="torch")
                for i in range(MAX_TENSORS):
                    if self.stop.is_set():
                        break
                    run.log("fwd", {f"t{i}": tensor(i)})
                    run.flush(timeout=60)
                    self.acked.append((i, time.monotonic()))
                run.close()
        except Exception as e:  # reported by the test
            self.error = e


def ctl(server, *args):
    return run_reprodctl("--server", server.address, *args)


def du(path):
    """Bytes of the files under `path` (the store's and its segments/)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


@pytest.fixture
def server(tmp_path):
    s = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data",
                extra_args=["--backup-root", tmp_path / "backups"])
    yield s
    s.stop()


def test_backup_during_ingest_restores_every_acked_tensor_byte_exact(server, tmp_path):
    pusher = Pusher(server.address, "team42/live")
    pusher.start()
    deadline = time.monotonic() + 120
    while len(pusher.acked) < 20 and pusher.error is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pusher.error is None, pusher.error
    assert len(pusher.acked) >= 20, "the pusher did not get going"
    started = time.monotonic()
    acked_before = {i for i, t in pusher.acked if t < started}
    res = ctl(server, "admin", "backup", "live-1", "--format", "json")
    ended = time.monotonic()
    time.sleep(0.5)  # let some more land after the backup
    pusher.stop.set()
    pusher.join(timeout=120)
    assert pusher.error is None, pusher.error
    assert res.code == 0, res
    info = res.json()
    assert info["path"] == str(tmp_path / "backups" / "live-1")
    assert info["runs"] == 1 and info["tensors"] >= len(acked_before), (info, len(acked_before))
    assert info["bytes"] > len(acked_before) * TENSOR_ELEMENTS * 4
    # The pusher went on during and after the backup: ingest was live.
    assert any(t > ended for _, t in pusher.acked), "no tensor was acked after the backup"
    print(f"backup: {len(acked_before)} tensors acked before it, {info['tensors']} in it, "
          f"{len(pusher.acked)} acked in all, {info['seconds']:.2f} s, {info['bytes']} bytes")
    server.stop()

    restored = tmp_path / "restored"
    proc = subprocess.run([str(REPRODD), "restore", info["path"], "--data-dir", str(restored)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"restored 1 runs, {info['tensors']} tensors" in proc.stdout, proc.stdout
    copy = Reprodd(tmp_path, store="rocksdb", data_dir=restored)
    try:
        with Client(copy.address) as client:
            stored = {t.key for t in client.list_tensors("team42/live")}
            assert {f"t{i}" for i in acked_before} <= stored
            assert len(stored) == info["tensors"]
            for key in sorted(stored):
                got = client.read_tensor("team42/live", "fwd", key)
                want = tensor(int(key[1:]))
                assert got.dtype == want.dtype and got.tobytes() == want.tobytes(), key
        # The live store kept everything, including what came after.
        server.start()
        with Client(server.address) as client:
            assert len(client.list_tensors("team42/live")) == len(pusher.acked)
    finally:
        copy.stop()


def test_refusals_name_the_reason_and_exit_2(server, tmp_path):
    assert ctl(server, "admin", "backup", "one").code == 0
    taken = ctl(server, "admin", "backup", "one")
    assert taken.code == 2 and "exists already" in taken.stderr, taken
    bad = ctl(server, "admin", "backup", "../escape")
    assert bad.code == 2 and "backup name must be" in bad.stderr, bad
    assert not (tmp_path / "escape").exists()
    # restore never overwrites a store
    proc = subprocess.run([str(REPRODD), "restore", str(tmp_path / "backups" / "one"),
                           "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not an empty folder" in proc.stderr, proc.stderr
    proc = subprocess.run([str(REPRODD), "restore", str(tmp_path), "--data-dir",
                           str(tmp_path / "new")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "not a reprod store" in proc.stderr, proc.stderr


def test_backups_are_off_without_backup_root(tmp_path):
    s = Reprodd(tmp_path, store="rocksdb", data_dir=tmp_path / "data")
    try:
        res = ctl(s, "admin", "backup")
        assert res.code == 2 and "--backup-root" in res.stderr, res
    finally:
        s.stop()
    # A backup root inside the data dir is refused at start (exit 2).
    proc = subprocess.run([str(REPRODD), "--data-dir", str(tmp_path / "data"), "--backup-root",
                           str(tmp_path / "data" / "b"), "--listen", "127.0.0.1:0",
                           "--http-listen", "off"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "inside --data-dir" in proc.stderr, proc.stderr


def test_compact_gives_back_the_space_of_a_deleted_run(server, tmp_path):
    with Client(server.address) as client:
        for name in ("team42/gone", "team42/kept"):
            run = client.open_run(name, framework="torch")
            for i in range(24):
                run.log("fwd", {f"t{i}": tensor(i if name.endswith("kept") else 100 + i)})
            run.close()
        before = du(tmp_path / "data")
        client.delete_run("team42/gone")
        res = ctl(server, "admin", "compact", "--format", "json")
        assert res.code == 0, res
        info = res.json()
        # The deleted run held 24 MiB; at least 20 of them are given back,
        # by the deletion (its 1 MiB tensors are segment files, unlinked at
        # once) and the compaction together.
        assert before - info["bytes_after"] >= 20 << 20, (before, info)
        assert abs(du(tmp_path / "data") - info["bytes_after"]) < 4 << 20, info
        for i in (0, 23):
            assert client.read_tensor("team42/kept", "fwd", f"t{i}").tobytes() == \
                tensor(i).tobytes()
    text = ctl(server, "admin", "compact")
    assert text.code == 0 and text.stdout.startswith("compacted the store: "), text
    audit = ctl(server, "audit", "ls", "--format", "json")
    assert audit.code == 0, audit
    verbs = [e["verb"] for e in audit.json()]
    assert verbs.count("compact") == 2, verbs
