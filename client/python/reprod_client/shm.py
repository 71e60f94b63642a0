"""Same-host shared-memory ingest: the producer's side of
reprod.v1.SharedMemoryService (proto/reprod/v1/shm.proto).

A Run opened with `shm=True` (Client.open_run) writes each tensor's bytes
into a POSIX shared-memory object it created (`/dev/shm/reprod-<pid>-<hex>`,
mode 0600) and sends reprodd only where they lie; reprodd (started with
--allow-shm, on this host, as this user) reads them from there into its
store. The object is laid out as

    [0, 32)          a random key: registering proves the client can read it
    [4096, ...)      `slots` equal slots, each the size of the largest tensor
                     so far (rounded up to 4 KiB)

A tensor goes into the next slot once the tensor that last used it was
acked, so `slots` tensors can be in flight (the copy of one overlaps the
server's read of the other). A tensor larger than a slot makes a new, larger
region once everything in flight is acked; the old one is released and
unlinked. Closing the run unlinks the region. Its pages are reserved when it
is made (posix_fallocate), so a full /dev/shm raises OSError then. Linux
only (/dev/shm).
"""
import mmap
import os
import secrets

import numpy as np

__all__ = ["ShmRegion", "SHM_DIR", "KEY_BYTES", "SLOTS_OFFSET"]

SHM_DIR = "/dev/shm"
KEY_BYTES = 32
SLOTS_OFFSET = 4096
_PAGE = 4096


def _round_up(n, to=_PAGE):
    return (n + to - 1) // to * to


class ShmRegion:
    """One shared-memory object with `slots` slots of `slot_bytes` each.

    name: the shm_open name ("/reprod-..."), as RegisterRegion wants it.
    key: the 32 random bytes at offset 0.
    byte_size: the object's size.
    """

    def __init__(self, slot_bytes, slots=2):
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if not os.path.isdir(SHM_DIR):
            raise OSError(f"shared-memory ingest needs POSIX shared memory at {SHM_DIR}")
        self.slot_bytes = _round_up(max(int(slot_bytes), _PAGE))
        self.slots = int(slots)
        self.byte_size = SLOTS_OFFSET + self.slots * self.slot_bytes
        self.name = f"/reprod-{os.getpid()}-{secrets.token_hex(16)}"
        self.key = secrets.token_bytes(KEY_BYTES)
        self._path = SHM_DIR + self.name
        fd = os.open(self._path, os.O_CREAT | os.O_EXCL | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            # Reserved now: a full /dev/shm is an OSError here, not a SIGBUS
            # when a page of the mapping is first written.
            os.posix_fallocate(fd, 0, self.byte_size)
            self._mm = mmap.mmap(fd, self.byte_size)  # MAP_SHARED, read + write
        except BaseException:
            os.close(fd)
            os.unlink(self._path)
            raise
        os.close(fd)
        self._mm[0:KEY_BYTES] = self.key

    def slot_offset(self, slot):
        """Byte offset of slot `slot` (0 .. slots-1)."""
        return SLOTS_OFFSET + (slot % self.slots) * self.slot_bytes

    def write(self, offset, data):
        """Copies the bytes-like (or C-contiguous numpy) `data` to `offset`.

        Through numpy, which lets other threads run during the copy (a slice
        assignment to the mmap would hold the GIL for all of it)."""
        src = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        n = src.size
        if offset < SLOTS_OFFSET or offset + n > self.byte_size:
            raise ValueError(f"{n} bytes at {offset} do not fit region {self.name}")
        if n == 0:
            return
        dst = np.frombuffer(self._mm, dtype=np.uint8, count=n, offset=offset)
        try:
            np.copyto(dst, src)
        finally:
            del dst  # the mapping can be closed only once no view is left

    def close(self):
        """Unmaps and unlinks the object (idempotent). reprodd's open copy,
        if any, stays readable until its session releases it."""
        if self._mm is not None:
            mm, self._mm = self._mm, None
            try:
                mm.close()
            except BufferError:  # a view still alive (a traceback's frame): GC unmaps it
                pass
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
