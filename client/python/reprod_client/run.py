"""Run: streams logged tensors to reprodd in the background.

A Run is what `Client.open_run` returns. `log()` converts (copies) the
tensors on the caller's thread and queues them; one background thread keeps
a single bidirectional IngestService.Ingest stream open, sends each queued
tensor as a BeginTensor followed by 1 MiB chunks (crc32c over its bytes,
tensor ids increasing) and drops a tensor once the server acked it.

Memory stays bounded: queued plus sent-but-unacked bytes never exceed
`max_pending_bytes` (a single tensor larger than the bound is let through
alone), and `log()` blocks while they would. That backpressure is the only
time `log()` waits for the server.

Failures:

* UNAVAILABLE (server restarting, connection lost): the sender reconnects
  with backoff for up to `reconnect_timeout` seconds per outage and resends
  every unacked tensor once on the new stream (the server answers
  ALREADY_PRESENT for any it had already committed). When the budget is
  spent the run fails with ServerUnavailable naming the address.
* RESOURCE_EXHAUSTED (disk full, quota or a server limit) fails the run at
  once with ResourceExhausted ("disk full / quota" and the server's
  reason): a retry cannot succeed until someone frees space.
* Any other error (INVALID_ARGUMENT, ALREADY_EXISTS for different bytes at
  an address, FAILED_PRECONDITION for a sealed run, ...) fails the run.

A failed run raises its error from the next `log()`, `flush()`, `close()`
or `seal()` (and every one after): errors are never swallowed.

Shared memory (`shm=True`, a reprodd on this host started with
--allow-shm): the sender keeps a SharedMemoryService.Session open instead
of an Ingest stream, copies each tensor into a slot of a shared-memory
region (shm.py) and sends only (region, offset, length) with the header;
the server reads the bytes from the region. Failures and resends are as
above; each new stream registers the region again.

Thread safety: `log()` may be called from several threads. `flush()`,
`close()` and `seal()` may be called from any thread.
"""
import atexit
import collections
import dataclasses
import sys
import threading
import time
import weakref
from collections.abc import Mapping

import grpc

from . import placement as _placement
from . import tensors as _tensors
from .buffers import BufferPool
from .crc32c import crc32c
from .errors import ReprodError, ServerUnavailable, from_rpc_error
from .shm import ShmRegion

__all__ = ["Run", "RunStats", "DEFAULT_MAX_PENDING_BYTES", "DEFAULT_CHUNK_BYTES"]

DEFAULT_MAX_PENDING_BYTES = 256 << 20
DEFAULT_CHUNK_BYTES = 1 << 20

_RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)
_BACKOFF_FIRST = 0.05
_BACKOFF_MAX = 1.0


@dataclasses.dataclass
class RunStats:
    """Counters of a Run's sender (a snapshot; see `Run.stats`).

    sent: tensors whose last byte was handed to gRPC (resends included).
    acked: tensors the server acknowledged.
    already_present: of those, acks of kind ALREADY_PRESENT.
    resent: tensors sent again on a new stream after a broken one.
    reconnects: streams opened after a broken one (attempts that failed at
        once included).
    peak_pending_bytes: most bytes queued plus unacked at any time.
    bytes_sent: payload bytes handed to gRPC (resends included).
    """
    sent: int = 0
    acked: int = 0
    already_present: int = 0
    resent: int = 0
    reconnects: int = 0
    peak_pending_bytes: int = 0
    bytes_sent: int = 0


def _varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_chunk_request(offset, data):
    """The serialized reprod.v1.IngestRequest{chunk: TensorChunk{offset,
    data}} for a bytes-like `data`, built without protobuf objects.

    Wire format: IngestRequest.chunk is field 2 (length-delimited, tag
    0x12); TensorChunk.offset is field 1 (varint, tag 0x08) and
    TensorChunk.data field 2 (length-delimited, tag 0x12). Checked against
    the generated classes in tests/python/test_client_stream.py.
    """
    n = len(data)
    inner_head = b"\x08" + _varint(offset) + b"\x12" + _varint(n)
    return b"".join((b"\x12", _varint(len(inner_head) + n), inner_head, data))


class _Item:
    __slots__ = ("tid", "wire", "nbytes", "crc", "sends")

    def __init__(self, tid, wire):
        self.tid = tid
        self.wire = wire
        self.nbytes = wire.nbytes
        self.crc = None
        self.sends = 0


class Run:
    """A run being produced: log tensors into it, then seal it.

    Obtain one from `Client.open_run`. Use it as a context manager to seal
    on success and abort on an exception::

        with client.open_run("team42/bert-torch", framework="torch") as run:
            run.log("forward", {"logits": logits}, step=0)

    rank: the rank of this process in a distributed job (every tensor it
    logs carries it; 0 for a single process); world_size: the job's number
    of ranks (1 for a single process, None when the rank was given without
    it and no distributed environment says). See Client.open_run.
    """

    def __init__(self, client, info, *, max_pending_bytes=DEFAULT_MAX_PENDING_BYTES,
                 reconnect_timeout=30.0, chunk_bytes=DEFAULT_CHUNK_BYTES, shm=False,
                 shm_slots=2, rank=0, world_size=1):
        if max_pending_bytes <= 0:
            raise ValueError("max_pending_bytes must be positive")
        if shm_slots < 1:
            raise ValueError("shm_slots must be >= 1")
        if not 0 < chunk_bytes <= 4 << 20:
            raise ValueError("chunk_bytes must be in (0, 4 MiB]")
        self.rank = _placement.validate_rank(rank)
        if world_size is not None:
            world_size = _placement.validate_world_size(world_size)
            if self.rank >= world_size:
                raise ValueError(f"rank {self.rank} is not below world_size {world_size}")
        self.world_size = world_size
        self._client = client
        self.info = info
        self.name = info.name
        self.max_pending_bytes = int(max_pending_bytes)
        self.reconnect_timeout = float(reconnect_timeout)
        self.chunk_bytes = int(chunk_bytes)
        self._cond = threading.Condition()
        self._pending = collections.deque()        # queued, not begun on this stream
        self._unacked = collections.OrderedDict()  # tid -> _Item begun on this stream
        self._outstanding = 0                      # bytes in _pending + _unacked
        # The buffers of log()'s copies, reused once their tensors are acked
        # (at most max_pending_bytes kept; dropped at close).
        self._buffers = BufferPool(self.max_pending_bytes)
        self._error = None
        self._closing = False
        self._abandoned = False  # abort(): stop without sending the rest
        self._call = None
        self._closed = False
        self._next_tid = 1
        self._epoch = 0
        self._stats = RunStats()
        # Shared memory: the region (made at the first tensor, replaced by a
        # larger one when a tensor does not fit a slot), guarded by
        # _shm_lock, which the request generator holds while it copies.
        self.shm = bool(shm)
        self._shm_slots = int(shm_slots)
        self._shm_lock = threading.Lock()
        self._region = None
        self._thread = threading.Thread(target=self._sender_main, daemon=True,
                                        name=f"reprod-run-{self.name}")
        self._thread.start()
        _open_runs.add(self)

    # --- public API -----------------------------------------------------

    @property
    def address(self):
        """The server address ("host:port")."""
        return self._client.address

    @property
    def stats(self):
        """A RunStats snapshot."""
        with self._cond:
            return dataclasses.replace(self._stats)

    @property
    def pending_bytes(self):
        """Bytes queued or sent but not yet acknowledged."""
        with self._cond:
            return self._outstanding

    def log(self, checkpoint, tensors, step=None, placement=None):
        """Queues `tensors` (a possibly nested dict of key -> tensor) under
        `checkpoint` at `step` (an int, or None for no step), at this run's
        `rank`.

        placement: how each tensor relates to the global tensor of a
        distributed job (reprod_client.Shard / Replicate / Partial): one
        Placement for every tensor of the call, or a dict key -> Placement
        (flat "a/b/c" keys or nested like `tensors`; keys left out have
        none, a key that is not among the tensors is a ValueError). None:
        no placement (tensors pair rank to rank).

        Nested dicts flatten to "a/b/c" keys. Every tensor is validated and
        copied before anything is queued, so an invalid key, dtype or
        placement raises ValueError (naming the key) and logs nothing. Returns once the
        tensors are queued; blocks only while the pending-bytes bound is
        reached. Raises the run's error if it has failed, and ReprodError if
        the run is closed.
        """
        self._check_usable()
        _tensors.validate_checkpoint(checkpoint)
        if step is not None:
            if isinstance(step, bool) or not hasattr(step, "__index__"):
                raise ValueError(f"step must be an int or None, got {step!r}")
            step = int(step.__index__())
        if not isinstance(tensors, Mapping):
            raise TypeError("log() takes a dict of key -> tensor (nested dicts allowed), "
                            f"got {type(tensors).__name__}")
        flat = _tensors.flatten(tensors)
        placements = _placements_of(flat, placement)
        wires = [_tensors.to_wire(key, value, checkpoint=checkpoint, step=step,
                                  rank=self.rank, placement=placements.get(key),
                                  alloc=self._buffers.take)
                 for key, value in flat.items()]
        for wire in wires:
            self._enqueue(wire)

    def flush(self, timeout=None):
        """Waits until every logged tensor is acknowledged by the server.

        Raises the run's error (ServerUnavailable naming the address once the
        reconnect budget is spent, or the server's error), or ReprodError if
        `timeout` seconds pass first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while (self._pending or self._unacked) and self._error is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise ReprodError(
                        f"flush of run {self.name!r} timed out after {timeout} s with "
                        f"{len(self._pending) + len(self._unacked)} tensors "
                        f"({self._outstanding} bytes) not acknowledged by {self.address}",
                        address=self.address, run=self.name)
                self._cond.wait(remaining)
            if self._error is not None:
                raise self._error

    def close(self):
        """Flushes, then stops the sender. Does not seal the run (another
        process may continue it). Idempotent; raises like flush()."""
        try:
            if not self._closed:
                self.flush()
        finally:
            self._stop()
        with self._cond:
            if self._error is not None:
                raise self._error

    def seal(self):
        """Flushes, stops the sender and marks the run SEALED (complete).
        Returns the server's RunInfo. Raises like flush(), or the SealRun
        error (e.g. FailedPrecondition when already sealed)."""
        self.close()
        self.info = self._client.seal_run(self.name)
        return self.info

    def abort(self):
        """Stops the sender without waiting for acks and marks the run
        ABORTED. Returns the server's RunInfo."""
        self._stop(wait=False)
        self.info = self._client.seal_run(self.name, abort=True)
        return self.info

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.seal()
            return False
        # Failing: keep what can be kept, mark the run aborted, re-raise.
        try:
            self.close()
        except Exception:
            pass
        try:
            self.info = self._client.seal_run(self.name, abort=True)
        except Exception as e:
            print(f"reprod_client: could not abort run {self.name!r} on "
                  f"{self.address}: {e}", file=sys.stderr)
        return False

    def __repr__(self):
        with self._cond:
            state = ("failed" if self._error is not None else
                     "closed" if self._closed else "open")
            return (f"<reprod_client.Run {self.name!r} on {self.address} {state}, "
                    f"{len(self._pending) + len(self._unacked)} pending>")

    # --- producer side --------------------------------------------------

    def _check_usable(self):
        with self._cond:
            if self._error is not None:
                raise self._error
            if self._closing or self._closed:
                raise ReprodError(f"run {self.name!r} is closed; open it again to log more",
                                  address=self.address, run=self.name)

    def _enqueue(self, wire):
        n = wire.nbytes
        with self._cond:
            while True:
                if self._error is not None:
                    raise self._error
                if self._closing:
                    raise ReprodError(f"run {self.name!r} was closed while logging",
                                      address=self.address, run=self.name)
                if self._outstanding == 0 or self._outstanding + n <= self.max_pending_bytes:
                    break
                self._cond.wait()
            item = _Item(self._next_tid, wire)
            self._next_tid += 1
            self._pending.append(item)
            self._outstanding += n
            if self._outstanding > self._stats.peak_pending_bytes:
                self._stats.peak_pending_bytes = self._outstanding
            self._cond.notify_all()

    def _stop(self, wait=True):
        with self._cond:
            self._closing = True
            if not wait:
                self._abandoned = True
                self._epoch += 1  # make the request generator stop now
                if self._call is not None:
                    self._call.cancel()
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=30 if wait else 5)
        with self._cond:
            self._closed = True
        self._buffers.clear()
        _open_runs.discard(self)

    # --- sender thread ----------------------------------------------------

    def _fail(self, err):
        with self._cond:
            if self._error is None:
                self._error = err
            self._epoch += 1
            self._cond.notify_all()

    def _sender_main(self):
        try:
            self._sender_loop()
        finally:
            with self._shm_lock:
                if self._region is not None:
                    self._region.close()
                    self._region = None

    def _open_call(self, epoch):
        """The stream of one attempt and an iterator over its acks."""
        if not self.shm:
            call = self._client._ingest_raw(self._requests(epoch),
                                            metadata=self._client._metadata)
            return call, call
        call = self._client._shm_session(self._shm_requests(epoch),
                                         metadata=self._client._metadata)
        return call, (r.ack for r in call if r.HasField("ack"))

    def _sender_loop(self):
        outage_since = None
        backoff = _BACKOFF_FIRST
        broken = False
        while True:
            with self._cond:
                while (not self._pending and not self._unacked and not self._closing
                       and self._error is None):
                    self._cond.wait()
                if self._error is not None or self._abandoned:
                    return
                if not self._pending and not self._unacked:
                    return  # closing, everything acked
                # A new stream: whatever the last one did not get acked goes
                # first, in its original order.
                if self._unacked:
                    self._pending.extendleft(reversed(list(self._unacked.values())))
                    self._unacked.clear()
                if broken:
                    self._stats.reconnects += 1
                self._epoch += 1
                epoch = self._epoch
            progressed = False
            try:
                call, acks = self._open_call(epoch)
                with self._cond:
                    self._call = call
                    if self._abandoned:
                        call.cancel()
                for ack in acks:
                    self._on_ack(ack)
                    progressed = True
                    outage_since = None
                    backoff = _BACKOFF_FIRST
                broken = False
                with self._cond:
                    self._epoch += 1
                    if self._unacked or self._pending:
                        # The server ended the stream cleanly without acking
                        # everything (it should not): retry as an outage.
                        broken = True
                    self._cond.notify_all()
                if not broken:
                    continue
                code, err = grpc.StatusCode.UNAVAILABLE, None
            except grpc.RpcError as e:
                code, err = e.code(), e
                with self._cond:
                    self._epoch += 1
                    self._cond.notify_all()
            except Exception as e:  # pragma: no cover - bug or interpreter exit
                self._fail(ReprodError(
                    f"ingest into run {self.name!r} on {self.address} failed: {e!r}",
                    address=self.address, run=self.name))
                return
            with self._cond:
                idle = not self._pending and not self._unacked
                closing = self._closing
            if code in _RETRYABLE or (code == grpc.StatusCode.CANCELLED and not closing):
                if idle:
                    # Connection lost while idle: nothing to resend yet.
                    broken, outage_since, backoff = False, None, _BACKOFF_FIRST
                    continue
                now = time.monotonic()
                if outage_since is None or progressed:
                    outage_since = now
                if now - outage_since >= self.reconnect_timeout:
                    details = err.details() if err is not None else "stream ended early"
                    self._fail(ServerUnavailable(
                        f"reprod server at {self.address} is unavailable: gave up on run "
                        f"{self.name!r} after retrying for {self.reconnect_timeout:g} s with "
                        f"{self._count_outstanding()} tensors not acknowledged (last error: "
                        f"{code.name}: {details})",
                        code=code, details=details, address=self.address, run=self.name))
                    return
                broken = True
                self._sleep(min(backoff, max(0.0, outage_since + self.reconnect_timeout - now)))
                backoff = min(backoff * 2, _BACKOFF_MAX)
                # Open the next stream only once the channel is connected
                # again, so that failed attempts do not begin (and count as
                # resent) tensors.
                self._wait_for_channel(outage_since + self.reconnect_timeout)
                continue
            if code == grpc.StatusCode.CANCELLED and closing:
                return  # abort()
            what = "shared-memory ingest" if self.shm else "ingest"
            self._fail(from_rpc_error(err, f"{what} into run {self.name!r}",
                                      self.address, run=self.name, tls=self._client._tls))
            return

    def _wait_for_channel(self, deadline):
        """Waits until the channel is READY, the deadline passes or the run
        fails/aborts (checked every 0.1 s)."""
        while time.monotonic() < deadline:
            with self._cond:
                if self._error is not None or self._abandoned:
                    return
            try:
                grpc.channel_ready_future(self._client._channel).result(
                    timeout=min(0.1, max(0.0, deadline - time.monotonic())))
                return
            except grpc.FutureTimeoutError:
                continue

    def _count_outstanding(self):
        with self._cond:
            return len(self._pending) + len(self._unacked)

    def _sleep(self, seconds):
        deadline = time.monotonic() + seconds
        with self._cond:
            while self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                self._cond.wait(remaining)

    def _requests(self, epoch):
        """The request stream of one Ingest call. Runs on gRPC's thread."""
        pb = self._client._pb
        chunk = self.chunk_bytes
        while True:
            item = self._next_item(epoch)
            if item is None:
                return  # stream superseded or failed, or half-close: all sent
            wire = item.wire
            header = self._header(item)
            # Requests travel pre-serialized (Client._ingest_raw): the begin
            # through protobuf, the chunks encoded straight from the tensor's
            # buffer (one copy instead of three).
            yield pb.ingest.IngestRequest(begin=pb.ingest.BeginTensor(
                run=self.name, tensor_id=item.tid, header=header)).SerializeToString()
            data = memoryview(wire.data)
            for off in range(0, item.nbytes, chunk):
                yield encode_chunk_request(off, data[off:off + chunk])
            with self._cond:
                if self._epoch == epoch:
                    self._stats.sent += 1
                    self._stats.bytes_sent += item.nbytes

    def _next_item(self, epoch, in_flight=None):
        """The next pending tensor of stream `epoch`, moved to _unacked, once
        fewer than `in_flight` tensors are unacked (None: no bound); None
        when the stream should end."""
        with self._cond:
            while True:
                if self._epoch != epoch or self._error is not None or self._abandoned:
                    return None
                if self._pending and (in_flight is None or len(self._unacked) < in_flight):
                    item = self._pending.popleft()
                    self._unacked[item.tid] = item
                    if item.sends:
                        self._stats.resent += 1
                    item.sends += 1
                    return item
                if self._closing and not self._pending:
                    return None  # half-close: all sent
                self._cond.wait()

    def _header(self, item):
        pb = self._client._pb
        wire = item.wire
        if item.crc is None:
            item.crc = crc32c(wire.data)
        address = pb.tensor.TensorAddress(checkpoint=wire.checkpoint, key=wire.key,
                                          rank=wire.rank)
        if wire.step is not None:
            address.step = wire.step
        header = pb.tensor.TensorHeader(address=address, dtype=wire.dtype, shape=wire.shape,
                                        byte_length=item.nbytes, crc32c=item.crc)
        if wire.placement is not None:
            wire.placement.to_proto(header.placement)
        return header

    def _shm_requests(self, epoch):
        """The request stream of one shared-memory Session: the region's
        registration, then one ShmTensor per tensor, each copied into the
        next slot once its previous occupant was acked. Runs on gRPC's
        thread."""
        pb = self._client._pb
        slots = self._shm_slots
        with self._shm_lock:
            region = self._region
        if region is not None:
            yield pb.shm.ShmRequest(region=pb.shm.RegisterRegion(
                name=region.name, byte_size=region.byte_size, key=region.key))
        sent = 0
        while True:
            item = self._next_item(epoch, in_flight=slots)
            if item is None:
                return
            n = item.nbytes
            if region is None or n > region.slot_bytes:
                # A larger region, once nothing in flight lies in the old one.
                with self._cond:
                    while (len(self._unacked) > 1 and self._epoch == epoch
                           and self._error is None and not self._abandoned):
                        self._cond.wait()
                    if self._epoch != epoch or self._error is not None or self._abandoned:
                        return
                try:
                    new = ShmRegion(max(n, region.slot_bytes if region else 0), slots)
                except OSError as e:  # e.g. /dev/shm full: final, not an outage
                    self._fail(ReprodError(
                        f"shared-memory ingest into run {self.name!r}: cannot make a region of "
                        f"{slots} x {n} bytes: {e} (free space in /dev/shm, pass a smaller "
                        "shm_slots, or open the run with shm=False)",
                        address=self.address, run=self.name))
                    return
                with self._shm_lock:
                    old, self._region = self._region, new
                    if old is not None:
                        old.close()
                if region is not None:
                    yield pb.shm.ShmRequest(release=pb.shm.ReleaseRegion(name=region.name))
                region = new
                sent = 0
                yield pb.shm.ShmRequest(region=pb.shm.RegisterRegion(
                    name=region.name, byte_size=region.byte_size, key=region.key))
            offset = region.slot_offset(sent)
            sent += 1
            with self._shm_lock:
                if self._region is not region:
                    return  # the sender is closing the region
                region.write(offset, item.wire.data)
            header = self._header(item)
            yield pb.shm.ShmRequest(tensor=pb.shm.ShmTensor(
                begin=pb.ingest.BeginTensor(run=self.name, tensor_id=item.tid, header=header),
                region=region.name, offset=offset, length=n))
            with self._cond:
                if self._epoch == epoch:
                    self._stats.sent += 1
                    self._stats.bytes_sent += n

    def _on_ack(self, ack):
        with self._cond:
            item = self._unacked.pop(ack.tensor_id, None)
            if item is None:
                return  # an ack for a tensor of an earlier stream
            self._outstanding -= item.nbytes
            if item.wire.pooled:
                # Acked: nothing reads these bytes again (the sender copied
                # every chunk out before the server could ack).
                self._buffers.give(item.wire.data)
            item.wire = None
            self._stats.acked += 1
            if ack.kind == self._client._pb.ingest.ACK_KIND_ALREADY_PRESENT:
                self._stats.already_present += 1
            self._cond.notify_all()


def _placements_of(flat, placement):
    """{flat key: Placement} for Run.log's `placement` argument."""
    if placement is None:
        return {}
    if isinstance(placement, _placement.Placement):
        return dict.fromkeys(flat, placement)
    if not isinstance(placement, Mapping):
        raise ValueError("placement must be a Placement (Shard(...), Replicate(), Partial()), "
                         f"a dict of key -> Placement, or None; got {type(placement).__name__}")
    by_key = _tensors.flatten(placement)
    unknown = sorted(k for k in by_key if k not in flat)
    if unknown:
        raise ValueError(f"placement given for key(s) {', '.join(map(repr, unknown))} that are "
                         f"not among the logged tensors ({', '.join(map(repr, flat))})")
    return by_key


# Runs not closed by the program are flushed (not sealed) at interpreter
# exit, so that a script that forgets close() does not lose its last tensors.
_open_runs = weakref.WeakSet()


@atexit.register
def _flush_open_runs():
    for run in list(_open_runs):
        try:
            with run._cond:
                n = len(run._pending) + len(run._unacked)
                failed = run._error is not None
            if n and not failed:
                print(f"reprod_client: run {run.name!r} was not closed; flushing {n} "
                      "tensor(s) (call run.seal() or run.close())", file=sys.stderr)
            run.close()
        except Exception as e:
            print(f"reprod_client: run {run.name!r}: {e}", file=sys.stderr)
