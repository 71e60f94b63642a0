"""Client: the connection to one reprodd server.

Wraps the reprod.v1 gRPC services (RunService, IngestService,
CompareService, ReportService) behind plain Python: runs to log into
(`open_run`), comparisons (`compare`, `watch`), stored tensors
(`read_tensor`, `list_tensors`) and reports (`get_report`). Every gRPC error
becomes a ReprodError subclass naming the server address (errors.py).

A Client is thread-safe and cheap to share; runs opened from it share its
channel. Call close() (or use it as a context manager) to release the
channel.
"""
import dataclasses
import datetime
import ipaddress
import json
import os
import socket
import sys
import time
import types
from typing import Dict, Optional, Tuple

import grpc
import numpy as np

from . import placement as _placement
from . import tensors as _tensors
from .crc32c import crc32c_update
from .errors import (ChecksumMismatch, FailedPrecondition, NotFound, ReprodError,
                     from_rpc_error)
from .report import Report, verdict_to_dict
from .run import DEFAULT_CHUNK_BYTES, DEFAULT_MAX_PENDING_BYTES, Run

try:
    from ._proto import (compare_pb2, compare_pb2_grpc, ingest_pb2,
                         ingest_pb2_grpc, runs_pb2, runs_pb2_grpc, shm_pb2, shm_pb2_grpc,
                         tensor_pb2)
except ImportError as _e:  # pragma: no cover - broken install
    raise ImportError(
        "reprod_client's generated gRPC stubs (reprod_client._proto) are missing: "
        "they are generated from proto/reprod/v1 when the package is built. "
        "Install it with `pip install --no-build-isolation ./client/python` from a "
        f"reprod checkout ({_e})") from _e

__all__ = ["Client", "RunInfo", "TensorInfo", "DEFAULT_ADDRESS"]

#: Address used when neither the argument nor $REPROD_SERVER gives one.
DEFAULT_ADDRESS = "127.0.0.1:50051"

_PB = types.SimpleNamespace(tensor=tensor_pb2, ingest=ingest_pb2, runs=runs_pb2,
                            compare=compare_pb2, shm=shm_pb2)

_STATE_NAMES = {0: "unspecified", 1: "open", 2: "sealed", 3: "aborted"}
_FORMATS = {"json": compare_pb2.REPORT_FORMAT_JSON, "text": compare_pb2.REPORT_FORMAT_TEXT,
            "junit": compare_pb2.REPORT_FORMAT_JUNIT,
            "markdown": compare_pb2.REPORT_FORMAT_MARKDOWN, "html": compare_pb2.REPORT_FORMAT_HTML}

# Channel options: reconnect quickly after a server restart (gRPC's default
# backoff grows to minutes), and no transparent retries (the Run handles
# resends itself). Not grpc.min_reconnect_backoff_ms: despite its name gRPC
# uses it as the time a connection attempt may take (TCP, TLS and the
# server's first HTTP/2 frame; default 20 s), and a short one fails calls
# whenever a busy machine or a distant server needs longer than that.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
]


def channel_target(address):
    """The gRPC target for `address`: "host:port" as it is, or several
    replicas "a:1,b:2" as one ipv4:/ipv6: target, so that gRPC's pick_first
    policy connects to the first that answers and moves to the next when it
    goes away (a run then resends its unacked tensors there). Host names in
    a list are resolved once, here; a single DNS name with several records
    fails over the same way through gRPC's own resolver.

    Raises ValueError naming the part that is not HOST:PORT or does not
    resolve."""
    parts = [p.strip() for p in address.split(",")]
    if len(parts) == 1:
        return address
    v4, v6 = [], []
    for part in parts:
        host, sep, port = part.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"server address {part!r} in {address!r} is not HOST:PORT")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            try:
                infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
            except OSError as e:
                raise ValueError(f"server address {part!r}: {host} does not resolve ({e})") from None
            ip = ipaddress.ip_address(infos[0][4][0])
        (v4 if ip.version == 4 else v6).append(f"{ip}:{port}" if ip.version == 4
                                               else f"[{ip}]:{port}")
    if v4 and v6:
        raise ValueError(f"server addresses {address!r} mix IPv4 and IPv6; "
                         "list replicas of one family")
    return ("ipv4:" + ",".join(v4)) if v4 else ("ipv6:" + ",".join(v6))


@dataclasses.dataclass
class RunInfo:
    """A run as the server describes it (reprod.v1.Run)."""
    name: str
    framework: str
    framework_version: str
    device: str
    labels: Dict[str, str]
    created: Optional[datetime.datetime]
    owner: str
    state: str  # "open", "sealed" or "aborted"
    overwrite: bool
    tensor_count: int
    total_bytes: int
    reference: bool = False  # published as a reference (review server)

    @classmethod
    def from_proto(cls, run):
        created = None
        if run.HasField("created"):
            created = run.created.ToDatetime(tzinfo=datetime.timezone.utc)
        return cls(name=run.name, framework=run.framework,
                   framework_version=run.framework_version, device=run.device,
                   labels=dict(run.labels), created=created, owner=run.owner,
                   state=_STATE_NAMES.get(run.state, str(run.state)),
                   overwrite=run.overwrite, tensor_count=run.tensor_count,
                   total_bytes=run.total_bytes, reference=run.reference)


@dataclasses.dataclass
class TensorInfo:
    """A stored tensor's header (reprod.v1.TensorInfo); dtype is the wire
    dtype's name ("bfloat16", "float32", ...); rank the rank that logged it
    (0 for a single process) and placement its placement.Shard / Replicate
    / Partial, or None."""
    checkpoint: str
    key: str
    step: Optional[int]
    dtype: str
    shape: Tuple[int, ...]
    byte_length: int
    crc32c: int
    sequence: int = 0
    rank: int = 0
    placement: Optional[object] = None

    @classmethod
    def from_header(cls, header, sequence=0):
        a = header.address
        return cls(checkpoint=a.checkpoint, key=a.key,
                   step=a.step if a.HasField("step") else None,
                   dtype=_tensors.DTYPE_NAMES.get(header.dtype, str(header.dtype)),
                   shape=tuple(header.shape), byte_length=header.byte_length,
                   crc32c=header.crc32c, sequence=sequence, rank=int(a.rank),
                   placement=(_placement.from_proto(header.placement)
                              if header.HasField("placement") else None))


def _identity(data):
    return data


def _read_pem(value, name, env):
    """PEM bytes from `value` (a path or PEM bytes/str) or, when None, from
    the file named by $`env`; None when neither is given."""
    if value is None:
        value = os.environ.get(env) or None
        if value is None:
            return None
        name = f"${env}"
    if isinstance(value, (bytes, bytearray)):
        data = bytes(value)
        where = f"{name} (PEM bytes)"
    elif isinstance(value, str) and value.lstrip().startswith("-----BEGIN"):
        data = value.encode()
        where = f"{name} (PEM text)"
    else:
        path = os.fspath(value)
        where = f"{name} {path}"
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as e:
            raise ValueError(f"{where}: cannot read: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{where}: not PEM (expected -----BEGIN ...-----)")
    return data


def _tls_credentials(tls_ca, tls_cert, tls_key):
    """(grpc.ChannelCredentials or None, (tls on, client cert given))."""
    ca = _read_pem(tls_ca, "tls_ca", "REPROD_TLS_CA")
    cert = _read_pem(tls_cert, "tls_cert", "REPROD_TLS_CERT")
    key = _read_pem(tls_key, "tls_key", "REPROD_TLS_KEY")
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together: the client certificate of mutual "
                         "TLS needs its key (or set neither)")
    if ca is None and cert is None:
        return None, (False, False)
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
                                         certificate_chain=cert)
    return creds, (True, cert is not None)


def _framework_version(framework):
    mod = {"torch": "torch", "pytorch": "torch", "paddle": "paddle",
           "paddlepaddle": "paddle"}.get((framework or "").lower())
    m = sys.modules.get(mod) if mod else None  # never imports a framework
    return str(getattr(m, "__version__", "")) if m is not None else ""


class Client:
    """Connection to a reprodd server.

    address: "host:port"; default $REPROD_SERVER, else "127.0.0.1:50051".
        Several replicas of one server (reprodd --store postgres+s3):
        "hostA:port,hostB:port" (or one DNS name with several records):
        calls go to the first that answers, and a run whose replica goes
        away continues on the next, resending what was not acknowledged.
    token: bearer token sent as "authorization: Bearer TOKEN" on every call
        (default $REPROD_TOKEN), required by a reprodd started with
        --auth tokens (else ReprodError with code UNAUTHENTICATED or
        PERMISSION_DENIED).
    timeout: deadline in seconds of each unary call.
    reconnect_timeout: default reconnect budget of runs, in seconds.
    tls_ca: TLS to a reprodd started with --tls-cert/--tls-key: the CA
        certificate(s) that signed the server's certificate, as a file path
        or PEM bytes (default $REPROD_TLS_CA; plaintext when neither this nor
        tls_cert is given).
    tls_cert, tls_key: the client certificate and its key (path or PEM
        bytes; default $REPROD_TLS_CERT, $REPROD_TLS_KEY) for a server with
        --tls-client-ca (mutual TLS); both or neither. Given alone they turn
        TLS on with the system's root certificates.
    credentials: grpc.ChannelCredentials, instead of the tls_* arguments.

    Raises ValueError naming the file for an unreadable or non-PEM tls_*
    file, or tls_cert without tls_key. A TLS mismatch (plaintext client at a
    TLS server and the reverse, an untrusted certificate, a missing client
    certificate) shows at the first call as ServerUnavailable whose message
    says so.
    """

    def __init__(self, address=None, token=None, *, tls_ca=None, tls_cert=None, tls_key=None,
                 timeout=30.0, reconnect_timeout=30.0, credentials=None, options=None):
        self.address = address or os.environ.get("REPROD_SERVER") or DEFAULT_ADDRESS
        token = token if token is not None else os.environ.get("REPROD_TOKEN")
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        opts = list(_CHANNEL_OPTIONS) + list(options or [])
        tls_credentials, self._tls = _tls_credentials(tls_ca, tls_cert, tls_key)
        if credentials is not None and tls_credentials is not None:
            raise ValueError("give either credentials= or tls_ca/tls_cert/tls_key, not both")
        if credentials is not None:
            self._tls = (True, False)
        credentials = credentials if credentials is not None else tls_credentials
        target = channel_target(self.address)
        if credentials is not None:
            self._channel = grpc.secure_channel(target, credentials, options=opts)
        else:
            self._channel = grpc.insecure_channel(target, options=opts)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._pb = _PB
        self._runs_stub = runs_pb2_grpc.RunServiceStub(self._channel)
        self._ingest_stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        # Ingest taking pre-serialized requests (Run encodes chunks itself).
        method = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].methods_by_name["Ingest"]
        self._ingest_raw = self._channel.stream_stream(
            f"/{method.containing_service.full_name}/{method.name}",
            request_serializer=_identity,
            response_deserializer=ingest_pb2.IngestResponse.FromString)
        self._shm_session = shm_pb2_grpc.SharedMemoryServiceStub(self._channel).Session
        self._compare_stub = compare_pb2_grpc.CompareServiceStub(self._channel)
        self._report_stub = compare_pb2_grpc.ReportServiceStub(self._channel)

    # --- lifecycle --------------------------------------------------------

    def close(self):
        """Closes the channel. Runs opened from this client stop working."""
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return f"<reprod_client.Client {self.address}>"

    def _unary(self, what, method, request, run=None, timeout=None):
        try:
            return method(request, timeout=timeout or self.timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise from_rpc_error(e, what, self.address, run=run, tls=self._tls) from None

    # --- runs ---------------------------------------------------------------

    def open_run(self, name, framework=None, labels=None, overwrite=False, *,
                 recreate=False, framework_version=None, device=None,
                 max_pending_bytes=DEFAULT_MAX_PENDING_BYTES, reconnect_timeout=None,
                 chunk_bytes=DEFAULT_CHUNK_BYTES, shm=False, shm_slots=2, rank=None,
                 world_size=None):
        """Creates run `name` ("namespace/name") or reopens it if it exists
        and is open (a restarted producer, or another rank of the same
        job), and returns a Run to log into.

        framework: "torch", "paddle", ...; its version is filled in from the
            already imported module when not given.
        labels: dict of free-form string labels.
        overwrite: let re-logged addresses replace their bytes (else a
            different resend is ALREADY_EXISTS).
        recreate: delete the run first if it exists (any state), so that a
            rerun of a script starts from an empty run.
        max_pending_bytes: bound on queued plus unacknowledged bytes
            (log() blocks beyond it).
        reconnect_timeout: seconds to keep reconnecting during an outage
            (default: the client's).
        shm: hand the tensors over through POSIX shared memory instead of
            sending their bytes (reprodd on this host, as this user, started
            with --allow-shm; docs/shared-memory.md). Checked here: a server
            that refuses it raises FailedPrecondition naming --allow-shm
            (nothing falls back to the wire silently; open the run with
            shm=False for that).
        shm_slots: tensors in flight at once with shm (each slot is as large
            as the largest tensor so far).
        rank: this process's rank in a distributed job (0 to 2^20 - 1);
            every tensor the run logs carries it. None (default): from
            torch.distributed when torch is imported and its process group
            initialised, else from paddle.distributed when paddle is
            imported and its parallel environment initialised (or launched
            with more than one trainer), else 0 (placement.detect_rank).
            The ranks of one job share the run: open it with recreate=True
            on rank 0 only, and let the other ranks open it after a barrier;
            seal it on rank 0 after a final barrier, the others only close().
        world_size: the job's number of ranks (Run.world_size); None: the
            detected one (1 without a distributed environment, unknown when
            `rank` alone is given).

        Raises ValueError for a malformed name or a rank outside 0..2^20-1
        or not below world_size, FailedPrecondition when the
        run exists but is sealed or aborted, or exists with another
        overwrite setting, ServerUnavailable when the server is unreachable.
        """
        _tensors.validate_run_name(name)
        detected_rank, detected_world, source = _placement.detect_rank()
        if rank is None:
            rank = detected_rank
            if world_size is None:
                world_size = detected_world
        else:
            rank = _placement.validate_rank(rank)
            if world_size is None and source is not None:
                world_size = detected_world
            elif world_size is None and rank == 0:
                world_size = 1
        if world_size is not None:
            world_size = _placement.validate_world_size(world_size)
            if rank >= world_size:
                raise ValueError(f"rank {rank} is not below world_size {world_size}")
        if framework_version is None:
            framework_version = _framework_version(framework)
        run = runs_pb2.Run(name=name, framework=framework or "",
                           framework_version=framework_version or "",
                           device=device or "", overwrite=bool(overwrite))
        for k, v in (labels or {}).items():
            run.labels[str(k)] = str(v)
        if shm:
            self._check_shm(name)  # before the run is created
        if recreate:
            try:
                self.delete_run(name)
            except NotFound:
                pass
        created = self._unary(f"CreateRun {name!r}", self._runs_stub.CreateRun,
                              runs_pb2.CreateRunRequest(run=run, exist_ok=True), run=name)
        info = RunInfo.from_proto(created)
        if info.state != "open":
            raise FailedPrecondition(
                f"run {name!r} on {self.address} exists and is {info.state}; it accepts no "
                "more tensors (log into a new run, or delete this one first)",
                address=self.address, run=name)
        if info.overwrite != bool(overwrite):
            raise FailedPrecondition(
                f"run {name!r} on {self.address} exists with overwrite={info.overwrite}, "
                f"opened with overwrite={bool(overwrite)}", address=self.address, run=name)
        return Run(self, info, max_pending_bytes=max_pending_bytes,
                   reconnect_timeout=(self.reconnect_timeout if reconnect_timeout is None
                                      else reconnect_timeout),
                   chunk_bytes=chunk_bytes, shm=shm, shm_slots=shm_slots, rank=rank,
                   world_size=world_size)

    def _check_shm(self, run):
        """An empty SharedMemoryService.Session: raises the server's refusal
        (FailedPrecondition without --allow-shm, UNIMPLEMENTED from an older
        reprodd) before anything is logged."""
        where = f"shared-memory session for run {run!r}"
        try:
            for _ in self._shm_session(iter(()), timeout=self.timeout,
                                       metadata=self._metadata):
                pass
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ReprodError(f"{where}: the server at {self.address} does not implement "
                                  "SharedMemoryService (an older reprodd); open the run with "
                                  "shm=False", code=e.code(), details=e.details(),
                                  address=self.address, run=run) from None
            raise from_rpc_error(e, where, self.address, run=run, tls=self._tls) from None

    def get_run(self, name):
        """The RunInfo of run `name`; NotFound if it does not exist."""
        return RunInfo.from_proto(self._unary(
            f"GetRun {name!r}", self._runs_stub.GetRun, runs_pb2.GetRunRequest(name=name),
            run=name))

    def runs(self, prefix=""):
        """RunInfo of every run whose name starts with `prefix`, by name."""
        resp = self._unary("ListRuns", self._runs_stub.ListRuns,
                           runs_pb2.ListRunsRequest(prefix=prefix))
        return [RunInfo.from_proto(r) for r in resp.runs]

    def seal_run(self, name, abort=False):
        """Marks run `name` SEALED (or ABORTED); returns its RunInfo.
        FailedPrecondition when it is not open."""
        return RunInfo.from_proto(self._unary(
            f"SealRun {name!r}", self._runs_stub.SealRun,
            runs_pb2.SealRunRequest(name=name, abort=abort), run=name))

    def delete_run(self, name):
        """Deletes run `name` and its tensors; returns how many tensors went."""
        return self._unary(f"DeleteRun {name!r}", self._runs_stub.DeleteRun,
                           runs_pb2.DeleteRunRequest(name=name), run=name).tensors_deleted

    def list_tensors(self, run, checkpoint=None):
        """TensorInfo of every stored tensor of `run` (optionally one
        checkpoint), in arrival order."""
        resp = self._unary(f"ListTensors {run!r}", self._runs_stub.ListTensors,
                           runs_pb2.ListTensorsRequest(run=run, checkpoint=checkpoint or ""),
                           run=run)
        return [TensorInfo.from_header(t.header, t.sequence) for t in resp.tensors]

    def read_tensor(self, run, checkpoint, key, step=None, *, rank=0, with_info=False):
        """Reads one stored tensor back as a numpy array of its shape.

        The array has the stored dtype (little-endian); a bfloat16 tensor
        comes back as a uint16 array of its bit patterns (numpy has no
        bfloat16; widen with tensors.bfloat16_to_float32). With
        with_info=True returns (array, TensorInfo), whose .dtype names the
        wire dtype ("bfloat16"). The bytes are checked against the stored
        crc32c (ChecksumMismatch). NotFound when the run or address is
        absent. rank: the rank that logged it (multi-rank runs; default 0).
        """
        rank = _placement.validate_rank(rank)
        address = tensor_pb2.TensorAddress(checkpoint=checkpoint, key=key, rank=rank)
        if step is not None:
            address.step = int(step)
        where = (f"ReadTensor {run}:{checkpoint}/{key}" + ("" if step is None else f"@{step}")
                 + (f" rank {rank}" if rank else ""))
        request = runs_pb2.ReadTensorRequest(run=run, address=address)
        try:
            stream = self._runs_stub.ReadTensor(request, timeout=None,
                                                metadata=self._metadata)
            header, buf, filled, crc = None, None, 0, 0
            for msg in stream:
                if msg.HasField("header"):
                    header = msg.header
                    buf = np.empty(header.byte_length, dtype=np.uint8)
                    continue
                if header is None or msg.chunk.offset != filled:
                    raise ReprodError(f"{where}: malformed response from {self.address} "
                                      "(chunk out of order)", address=self.address, run=run)
                data = msg.chunk.data
                if filled + len(data) > buf.size:
                    raise ReprodError(f"{where}: server {self.address} sent more bytes than "
                                      "the header declares", address=self.address, run=run)
                buf[filled:filled + len(data)] = np.frombuffer(data, dtype=np.uint8)
                crc = crc32c_update(crc, data)
                filled += len(data)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise ReprodError(f"{where}: the server at {self.address} does not implement "
                                  "RunService.ReadTensor (an older reprodd)",
                                  code=e.code(), details=e.details(), address=self.address,
                                  run=run) from None
            raise from_rpc_error(e, where, self.address, run=run, tls=self._tls) from None
        if header is None or filled != header.byte_length:
            raise ReprodError(f"{where}: incomplete response from {self.address}",
                              address=self.address, run=run)
        if crc != header.crc32c:
            raise ChecksumMismatch(
                f"{where}: crc32c of the bytes read from {self.address} is {crc:#010x}, "
                f"the stored header says {header.crc32c:#010x}", address=self.address, run=run)
        arr = buf.view(_tensors.numpy_dtype(header.dtype)).reshape(tuple(header.shape))
        if with_info:
            return arr, TensorInfo.from_header(header)
        return arr

    # --- compare, watch, reports ----------------------------------------------

    @staticmethod
    def _policy_spec(policy, preset, checkpoints):
        spec = compare_pb2.PolicySpec()
        if policy is not None and preset is not None:
            raise ValueError("give either policy or preset, not both")
        if preset is not None:
            spec.preset = preset
        elif policy is not None:
            if isinstance(policy, dict):
                spec.document = json.dumps(policy)
            elif isinstance(policy, os.PathLike) or (
                    isinstance(policy, str) and "\n" not in policy and os.path.isfile(policy)):
                with open(policy, encoding="utf-8") as f:
                    spec.document = f.read()
            elif isinstance(policy, str):
                spec.document = policy
            else:
                raise TypeError("policy must be a dict, a YAML/JSON document or a file path")
        if checkpoints:
            if isinstance(checkpoints, str):
                checkpoints = [checkpoints]
            spec.checkpoints.extend(checkpoints)
        return spec

    def compare(self, ref, cand, policy=None, preset=None, checkpoints=None, *, timeout=None):
        """Compares runs `ref` and `cand` as they are now; returns the stored
        Report (report.passed is False on a failed check: that is not an
        error).

        policy: a policy document (YAML/JSON text), a path to one, or a dict;
        preset: "reprod" (default on the server), "competition", "allclose";
        checkpoints: compare only these. NotFound for an unknown run,
        InvalidArgument for a bad policy.
        """
        request = compare_pb2.CompareRequest(
            ref=ref, cand=cand, policy=self._policy_spec(policy, preset, checkpoints),
            format=compare_pb2.REPORT_FORMAT_JSON)
        proto = self._unary(f"Compare {ref!r} vs {cand!r}", self._compare_stub.Compare,
                            request, timeout=timeout or max(self.timeout, 600))
        return Report(proto, self)

    def watch(self, ref, cand, policy=None, preset=None, checkpoints=None, *, timeout=None,
              wait=None):
        """Follows a comparison while both runs are still training.

        A generator: yields one verdict dict per tensor pair as soon as both
        runs hold it (report.verdict_to_dict: checkpoint, key, step, status,
        reason, stats), then the final Report once both runs are sealed or
        aborted, and stops. `timeout` bounds the whole watch (seconds;
        default none). `wait` (seconds) lets the watch start before the
        training scripts have created the runs: it polls every 0.5 s until
        both exist, then NotFound as without it. Closing the generator early
        cancels the watch.
        """
        if wait:
            self._wait_for_runs((ref, cand), wait)
        request = compare_pb2.WatchRequest(
            ref=ref, cand=cand, policy=self._policy_spec(policy, preset, checkpoints),
            format=compare_pb2.REPORT_FORMAT_JSON)
        call = self._compare_stub.Watch(request, timeout=timeout, metadata=self._metadata)
        try:
            for event in call:
                if event.HasField("verdict"):
                    yield verdict_to_dict(event.verdict)
                elif event.HasField("report"):
                    yield Report(event.report, self)
        except grpc.RpcError as e:
            raise from_rpc_error(e, f"Watch {ref!r} vs {cand!r}", self.address,
                                 tls=self._tls) from None
        finally:
            call.cancel()

    def _wait_for_runs(self, names, seconds):
        deadline = time.monotonic() + seconds
        for name in names:
            while True:
                try:
                    self.get_run(name)
                    break
                except NotFound:
                    if time.monotonic() >= deadline:
                        raise
                    time.sleep(0.5)

    def _get_report_proto(self, report_id, fmt="json"):
        try:
            fmt_value = _FORMATS[fmt]
        except KeyError:
            raise ValueError(f"unknown report format {fmt!r} (json, text, junit, markdown, html)") from None
        return self._unary(f"GetReport {report_id}", self._report_stub.GetReport,
                           compare_pb2.GetReportRequest(id=report_id, format=fmt_value))

    def get_report(self, report_id):
        """The stored report `report_id` ("rpt-..."); NotFound if unknown."""
        return Report(self._get_report_proto(report_id, "json"), self)

    def sign_report(self, report_id):
        """Signs the verdict of report `report_id` (judges and admins on a
        review server); returns the Report, whose `signatures` lists every
        sign-off (signer label and role, time, both runs' digests).
        PermissionDenied for a submitter, NotFound for an unknown report."""
        return Report(self._unary(f"SignReport {report_id}", self._report_stub.SignReport,
                                  compare_pb2.SignReportRequest(
                                      id=report_id, format=_FORMATS["json"])), self)

    def set_reference(self, run, reference=True):
        """Publishes run `run` as a reference (or withdraws it with
        reference=False; judges and admins); returns its RunInfo."""
        return RunInfo.from_proto(self._unary(
            f"SetReference {run!r}", self._runs_stub.SetReference,
            runs_pb2.SetReferenceRequest(name=run, reference=reference), run=run))

    def reports(self, run=None, limit=0):
        """Stored reports involving `run` (all when None), newest first, as
        Reports built from their metadata (fetch the full JSON with
        get_report)."""
        resp = self._unary("ListReports", self._report_stub.ListReports,
                           compare_pb2.ListReportsRequest(run=run or "", limit=limit))
        return [Report(r, self) for r in resp.reports]
