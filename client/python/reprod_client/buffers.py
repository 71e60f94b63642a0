"""BufferPool: reuses the byte buffers of `Run.log()`'s copies.

`log()` copies every tensor (the caller may change it as soon as `log()`
returns), and a tensor's copy lives until the server acks it. Allocating a
fresh buffer for each copy makes the kernel hand out and zero fresh pages
on every call (for tensors of megabytes numpy maps them anew each time):
on a virtual machine that returns freed pages to its host this cost most of
the client's CPU time (perf: 76 % of an ingest client's samples were the
zeroing of fresh huge pages inside the copy). Training logs the same shapes
step after step, so a buffer given back once its tensor is acked is taken
again by a later copy of the same size.

Only buffers of at least `min_bytes` are kept (smaller ones come from
malloc's own free lists), at most `max_bytes` in all, the oldest given back
dropped first. Thread-safe.
"""
import collections
import threading

import numpy as np

__all__ = ["BufferPool"]


class BufferPool:
    def __init__(self, max_bytes, min_bytes=1 << 20):
        self.max_bytes = int(max_bytes)
        self.min_bytes = int(min_bytes)
        self._lock = threading.Lock()
        # Buffers are compared by identity (== on numpy arrays is
        # element-wise): kept by id, with their ids per size and in order.
        self._kept = {}                      # id -> buffer
        self._by_size = {}                   # nbytes -> [id, ...]
        self._order = collections.deque()    # ids, oldest given back first
        self._bytes = 0
        self.reused = 0                      # takes served from the pool

    def take(self, nbytes):
        """A 1-D uint8 array of `nbytes` (contents undefined): one given
        back earlier, else a new one."""
        nbytes = int(nbytes)
        if nbytes >= self.min_bytes:
            with self._lock:
                ids = self._by_size.get(nbytes)
                if ids:
                    key = ids.pop()
                    if not ids:
                        del self._by_size[nbytes]
                    self._order.remove(key)
                    self._bytes -= nbytes
                    self.reused += 1
                    return self._kept.pop(key)
        return np.empty(nbytes, dtype=np.uint8)

    def give(self, buf):
        """Keeps `buf` (from take, no longer read or written by anyone) for
        a later take of its size."""
        n = int(buf.nbytes)
        if n < self.min_bytes or n > self.max_bytes:
            return
        with self._lock:
            if id(buf) in self._kept:
                return  # given back twice: kept once
            while self._order and self._bytes + n > self.max_bytes:
                old = self._kept.pop(self._order.popleft())
                same = self._by_size[old.nbytes]
                same.remove(id(old))
                if not same:
                    del self._by_size[old.nbytes]
                self._bytes -= old.nbytes
            self._kept[id(buf)] = buf
            self._by_size.setdefault(n, []).append(id(buf))
            self._order.append(id(buf))
            self._bytes += n

    def clear(self):
        """Drops every buffer kept."""
        with self._lock:
            self._kept.clear()
            self._by_size.clear()
            self._order.clear()
            self._bytes = 0

    @property
    def kept_bytes(self):
        with self._lock:
            return self._bytes
