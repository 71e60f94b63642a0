"""reprod_client's ranks and placements (multi-rank runs): what a Run puts
on the wire (TensorAddress.rank, TensorHeader.placement) over Ingest and
over the shared-memory session, as an in-process fake server receives it;
the rank found from a real torch.distributed gloo group (world sizes 1 and
2), from paddle's launch environment, and from stand-in modules; the
checks of Shard / Replicate / Partial and of Run.log's placement argument
(ValueError naming the key, nothing sent); the multi-rank fields of a
Report, present or absent; and a real reprodd keeping two ranks' tensors of
one run apart (list_tensors' rank and placement, read_tensor by rank)."""
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import types
from concurrent import futures

import grpc
import numpy as np
import pytest

import reprod_client
from reprod_client import Client, Partial, Replicate, Shard
from reprod_client import placement as placement_mod
from reprod_client._proto import (compare_pb2, ingest_pb2, ingest_pb2_grpc, runs_pb2,
                                  runs_pb2_grpc, shm_pb2, shm_pb2_grpc, tensor_pb2)
from reprod_client.client import TensorInfo
from reprod_client.crc32c import crc32c

# --- in-process fake server that records every header -----------------------


class FakeRuns(runs_pb2_grpc.RunServiceServicer):
    def CreateRun(self, request, context):
        run = runs_pb2.Run()
        run.CopyFrom(request.run)
        run.state = runs_pb2.RUN_STATE_OPEN
        return run

    def SealRun(self, request, context):
        return runs_pb2.Run(name=request.name, state=runs_pb2.RUN_STATE_SEALED)


class Recorder(ingest_pb2_grpc.IngestServiceServicer, shm_pb2_grpc.SharedMemoryServiceServicer):
    """Acks every tensor and keeps (BeginTensor, bytes or None) per tensor,
    from Ingest and from shared-memory sessions (whose bytes it does not
    read: the header is what these tests look at)."""

    def __init__(self):
        self.begins = []
        self.lock = threading.Lock()

    def headers(self):
        with self.lock:
            return [b.header for b, _ in self.begins]

    def Ingest(self, request_iterator, context):
        begin, parts, size = None, [], 0
        for req in request_iterator:
            if req.HasField("begin"):
                begin, parts, size = req.begin, [], 0
            else:
                parts.append(req.chunk.data)
                size += len(req.chunk.data)
            if begin is not None and size == begin.header.byte_length:
                data = b"".join(parts)
                assert crc32c(data) == begin.header.crc32c
                with self.lock:
                    self.begins.append((begin, data))
                yield ingest_pb2.IngestResponse(tensor_id=begin.tensor_id,
                                                address=begin.header.address,
                                                kind=ingest_pb2.ACK_KIND_STORED)
                begin = None

    def Session(self, request_iterator, context):
        for req in request_iterator:
            if req.HasField("region"):
                yield shm_pb2.ShmResponse(registered=shm_pb2.RegionRegistered(
                    name=req.region.name, object_bytes=req.region.byte_size))
            elif req.HasField("release"):
                yield shm_pb2.ShmResponse(released=shm_pb2.RegionReleased(
                    name=req.release.name))
            else:
                begin = req.tensor.begin
                with self.lock:
                    self.begins.append((begin, None))
                yield shm_pb2.ShmResponse(ack=ingest_pb2.IngestResponse(
                    tensor_id=begin.tensor_id, address=begin.header.address,
                    kind=ingest_pb2.ACK_KIND_STORED))


@pytest.fixture
def fake():
    recorder = Recorder()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    runs_pb2_grpc.add_RunServiceServicer_to_server(FakeRuns(), server)
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(recorder, server)
    shm_pb2_grpc.add_SharedMemoryServiceServicer_to_server(recorder, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    recorder.address = f"127.0.0.1:{port}"
    yield recorder
    server.stop(0)


def by_key(headers):
    out = {}
    for h in headers:
        assert h.address.key not in out, h.address.key
        out[h.address.key] = h
    return out


def placement_tuple(header):
    """(kind name, dim, global_shape, offset) of a header, from the proto."""
    p = header.placement
    return (tensor_pb2.Placement.Kind.Name(p.kind), p.dim, list(p.global_shape),
            list(p.offset))


NONE = ("KIND_UNSPECIFIED", 0, [], [])


# --- the header a run sends --------------------------------------------------

@pytest.mark.parametrize("shm", [False, True], ids=["ingest", "shm"])
def test_headers_carry_rank_and_placement(fake, shm):
    client = Client(fake.address)
    logits = np.arange(12, dtype=np.float32).reshape(3, 4)
    run = client.open_run("t/mr", rank=3, world_size=4, shm=shm)
    assert (run.rank, run.world_size) == (3, 4)
    # One placement per call; a dict by (nested) key; none.
    run.log("forward", {"logits": logits},
            placement=Shard(0, global_shape=(12, 4), offset=(9, 0)), step=2)
    run.log("grads", {"w": np.ones((2, 2)), "b": np.ones(2), "enc": {"x": np.zeros(3)}},
            placement={"w": Replicate(), "enc": {"x": Partial()}})
    run.log("loss", {"loss": 0.5})
    run.seal()
    headers = by_key(fake.headers())
    assert set(headers) == {"logits", "w", "b", "enc/x", "loss"}
    assert all(h.address.rank == 3 for h in headers.values())
    assert headers["logits"].address.step == 2
    assert placement_tuple(headers["logits"]) == ("KIND_SHARD", 0, [12, 4], [9, 0])
    assert placement_tuple(headers["w"]) == ("KIND_REPLICATE", 0, [], [])
    assert placement_tuple(headers["enc/x"]) == ("KIND_PARTIAL", 0, [], [])
    # Without a placement the field stays unset (a single-process tensor).
    for key in ("b", "loss"):
        assert not headers[key].HasField("placement"), key
        assert placement_tuple(headers[key]) == NONE
    if not shm:
        (data,) = [d for b, d in fake.begins if b.header.address.key == "logits"]
        assert np.array_equal(np.frombuffer(data, np.float32).reshape(3, 4), logits)


def test_single_process_run_sends_rank_0_and_no_placement(fake):
    client = Client(fake.address)
    with client.open_run("t/single") as run:
        assert (run.rank, run.world_size) == (0, 1)
        run.log("forward", {"a": np.ones(3)})
    (h,) = fake.headers()
    assert h.address.rank == 0 and not h.HasField("placement")
    # rank 0 is proto3's default: the serialized address has no rank field.
    assert tensor_pb2.TensorAddress(checkpoint="forward", key="a").SerializeToString() \
        == h.address.SerializeToString()


def test_shard_on_dim_1_and_3d(fake):
    client = Client(fake.address)
    run = client.open_run("t/tp", rank=1, world_size=2)
    x = np.zeros((2, 3, 5), dtype=np.float16)
    run.log("fwd", {"x": x}, placement=Shard(1, (2, 6, 5), (0, 3, 0)))
    run.close()
    (h,) = fake.headers()
    assert placement_tuple(h) == ("KIND_SHARD", 1, [2, 6, 5], [0, 3, 0])
    assert list(h.shape) == [2, 3, 5] and h.address.rank == 1


@pytest.mark.requires_torch
def test_capture_logs_at_the_run_rank(fake):
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    client = Client(fake.address)
    run = client.open_run("t/cap", rank=5, world_size=8)
    with reprod_client.capture(model, run) as cap:
        model(torch.ones(2, 4)).sum().backward()
        assert cap.modules
    run.close()
    headers = fake.headers()
    keys = {h.address.key for h in headers}
    assert any("/forward/" in k for k in keys) and any("/backward/" in k for k in keys), keys
    assert {h.address.rank for h in headers} == {5}
    assert all(h.address.checkpoint == "layers" for h in headers)


# --- validation --------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    ((2, (8, 4), (0, 0)), "dim 2 is not a dimension of the 2-d global shape"),
    ((-1, (8, 4), (0, 0)), "dim -1 is not a dimension"),
    ((0, (8, 4), (0,)), "offset [0] and global_shape [8, 4] need the same number"),
    ((0, (), ()), "at least one dimension"),
    ((0, (8, 4), (9, 0)), "dimension 0 offset 9 is outside 0..8"),
    ((0, (8, 4), (-1, 0)), "dimension 0 offset -1 is outside"),
    ((0, (8, -4), (0, 0)), "dimension 1 is negative"),
    ((0.0, (8, 4), (0, 0)), "Shard dim must be an int"),
    ((0, (8, 4.5), (0, 0)), "global_shape entry must be an int"),
    ((0, 8, (0,)), "sequences of ints"),
    ((True, (8, 4), (0, 0)), "Shard dim must be an int"),
    ((0, (2**32, 2**32), (0, 0)), "more than 2^63-1 elements"),
])
def test_shard_constructor_rejects(args, message):
    with pytest.raises(ValueError) as e:
        Shard(*args)
    assert message in str(e.value)


def test_shard_equality_and_repr():
    assert Shard(0, [8, 4], (4, 0)) == Shard(0, (8, 4), [4, 0])
    assert Shard(0, (8, 4), (4, 0)) != Shard(1, (8, 4), (4, 0))
    assert Replicate() == Replicate() and Replicate() != Partial()
    assert len({Shard(0, (8,), (0,)), Shard(0, (8,), (0,)), Replicate()}) == 2
    assert repr(Shard(0, (8, 4), (4, 0))) == "Shard(0, global_shape=[8, 4], offset=[4, 0])"
    numpy_ints = Shard(np.int64(0), np.array([8]), [np.int32(4)])
    assert numpy_ints == Shard(0, (8,), (4,)) and type(numpy_ints.offset[0]) is int


@pytest.mark.parametrize("tensor, placement, message", [
    (np.zeros((4, 4)), Shard(0, (6, 4), (4, 0)),
     "tensor 'logits' of shape [4, 4]: placement Shard(0, global_shape=[6, 4], offset=[4, 0]): "
     "dimension 0: offset 4 + size 4 exceeds the global size 6"),
    (np.zeros((4, 4)), Shard(1, (4, 4), (0, 1)), "dimension 1: offset 1 + size 4 exceeds"),
    (np.zeros((4, 4)), Shard(0, (8,), (4,)), "the tensor has 2 dimensions, global_shape and "
                                            "offset 1"),
    (np.float32(1.0), Shard(0, (8,), (4,)), "tensor 'logits' of shape []: placement "
                                            "Shard(0, global_shape=[8], offset=[4]): a scalar"),
    (np.zeros(3), "replicate", "tensor 'logits': placement must be Shard(...), Replicate()"),
    (np.zeros(3), placement_mod.Placement(), "placement must be"),
])
def test_log_rejects_a_placement_that_does_not_fit(fake, tensor, placement, message):
    client = Client(fake.address)
    run = client.open_run("t/bad", rank=1, world_size=2)
    with pytest.raises(ValueError) as e:
        run.log("forward", {"ok": np.zeros(2), "logits": tensor},
                placement={"logits": placement})
    assert message in str(e.value)
    # Nothing of the call was queued: the valid tensor before it neither.
    run.log("forward", {"after": np.zeros(1)})
    run.close()
    assert [h.address.key for h in fake.headers()] == ["after"]


def test_log_rejects_placement_keys_not_logged(fake):
    run = Client(fake.address).open_run("t/keys")
    with pytest.raises(ValueError, match=r"placement given for key\(s\) 'enc/y', 'zz' that are "
                                         r"not among the logged tensors \('a', 'enc/x'\)"):
        run.log("fwd", {"a": np.ones(2), "enc": {"x": np.ones(2)}},
                placement={"zz": Replicate(), "enc": {"y": Replicate()}, "a": Replicate()})
    with pytest.raises(ValueError, match="placement must be a Placement"):
        run.log("fwd", {"a": np.ones(2)}, placement=[Replicate()])
    run.close()
    assert fake.headers() == []


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=-1), "invalid rank -1: ranks are 0 to 1048575"),
    (dict(rank=1 << 20), "invalid rank 1048576"),
    (dict(rank=1.0), "rank must be an int"),
    (dict(rank=2, world_size=2), "rank 2 is not below world_size 2"),
    (dict(rank=0, world_size=0), "invalid world_size 0"),
])
def test_open_run_rejects_bad_ranks(fake, kwargs, message):
    with pytest.raises(ValueError) as e:
        Client(fake.address).open_run("t/r", **kwargs)
    assert message in str(e.value)


def test_largest_rank_and_read_tensor_rank_check(fake):
    run = Client(fake.address).open_run("t/max", rank=(1 << 20) - 1)
    assert run.world_size is None  # a rank alone, no distributed environment
    run.log("f", {"a": np.ones(1)})
    run.close()
    assert fake.headers()[0].address.rank == (1 << 20) - 1
    with pytest.raises(ValueError, match="invalid rank 1048576"):
        Client(fake.address).read_tensor("t/max", "f", "a", rank=1 << 20)


def test_tensor_info_reads_rank_and_placement():
    h = tensor_pb2.TensorHeader(address=tensor_pb2.TensorAddress(
        checkpoint="forward", key="logits", step=1, rank=7), dtype=tensor_pb2.DTYPE_FLOAT32,
        shape=[4, 2], byte_length=32)
    Shard(0, (8, 2), (4, 0)).to_proto(h.placement)
    info = TensorInfo.from_header(h)
    assert (info.rank, info.placement, info.step) == (7, Shard(0, (8, 2), (4, 0)), 1)
    h2 = tensor_pb2.TensorHeader(address=tensor_pb2.TensorAddress(checkpoint="c", key="k"))
    assert (TensorInfo.from_header(h2).rank, TensorInfo.from_header(h2).placement) == (0, None)
    h2.placement.kind = tensor_pb2.Placement.KIND_REPLICATE
    assert TensorInfo.from_header(h2).placement == Replicate()


# --- the rank found from torch.distributed / paddle.distributed --------------


def _fake_module(monkeypatch, name, dist):
    mod = types.ModuleType(name)
    mod.distributed = dist
    monkeypatch.setitem(sys.modules, name, mod)


def test_rank_from_stand_in_torch_and_paddle(fake, monkeypatch):
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    monkeypatch.delitem(sys.modules, "paddle", raising=False)
    assert placement_mod.detect_rank() == (0, 1, None)

    paddle_dist = types.SimpleNamespace(is_initialized=lambda: False,
                                        get_world_size=lambda: 1, get_rank=lambda: 0)
    _fake_module(monkeypatch, "paddle", paddle_dist)
    assert placement_mod.detect_rank() == (0, 1, None)  # paddle, not distributed
    # Launched with 4 trainers (PADDLE_TRAINERS_NUM), before init_parallel_env.
    paddle_dist.get_world_size, paddle_dist.get_rank = (lambda: 4), (lambda: 2)
    assert placement_mod.detect_rank() == (2, 4, "paddle.distributed")

    torch_dist = types.SimpleNamespace(is_available=lambda: True, is_initialized=lambda: False,
                                       get_rank=lambda: 5, get_world_size=lambda: 8)
    _fake_module(monkeypatch, "torch", torch_dist)
    # torch imported, no process group: paddle's says.
    assert placement_mod.detect_rank() == (2, 4, "paddle.distributed")
    torch_dist.is_initialized = lambda: True
    assert placement_mod.detect_rank() == (5, 8, "torch.distributed")  # torch first

    client = Client(fake.address)
    run = client.open_run("t/auto")
    assert (run.rank, run.world_size) == (5, 8)
    run.log("f", {"a": np.ones(1)})
    run.close()
    # An explicit rank wins over the detected one; the world size is kept.
    run = client.open_run("t/auto", rank=6)
    assert (run.rank, run.world_size) == (6, 8)
    run.log("f", {"b": np.ones(1)})
    run.close()
    assert {h.address.key: h.address.rank for h in fake.headers()} == {"a": 5, "b": 6}
    with pytest.raises(ValueError, match="rank 9 is not below world_size 8"):
        client.open_run("t/auto", rank=9)

    # A framework whose distributed module misbehaves is not a reason to fail.
    def boom():
        raise RuntimeError("no backend")
    torch_dist.is_initialized = boom
    paddle_dist.get_world_size = boom
    assert placement_mod.detect_rank() == (0, 1, None)
    monkeypatch.setattr(torch_dist, "is_available", lambda: False)
    assert placement_mod.detect_rank() == (0, 1, None)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TORCH_RANK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import torch.distributed as dist
    import reprod_client
    from reprod_client import placement

    address, port, rank, world = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    before = placement.detect_rank()
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            init_method=f"tcp://127.0.0.1:{port}")
    after = placement.detect_rank()
    run = reprod_client.Client(address).open_run("t/torch-dist")
    run.log("forward", {"x": torch.full((2, 3), float(rank))},
            placement=reprod_client.Shard(0, (2 * world, 3), (2 * rank, 0)))
    run.close()
    dist.barrier()
    dist.destroy_process_group()
    print(json.dumps({"before": before, "after": after, "rank": run.rank,
                      "world_size": run.world_size}))
""")


@pytest.mark.requires_torch
@pytest.mark.parametrize("world", [1, 2])
def test_rank_from_a_real_torch_gloo_group(fake, world):
    port = free_port()
    procs = [subprocess.Popen([sys.executable, "-c", TORCH_RANK_SCRIPT, fake.address,
                               str(port), str(r), str(world)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in range(world)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    for r, o in enumerate(outs):
        assert o["before"] == [0, 1, None]  # torch imported, no process group yet
        assert o["after"] == [r, world, "torch.distributed"]
        assert (o["rank"], o["world_size"]) == (r, world)
    headers = fake.headers()
    assert sorted(h.address.rank for h in headers) == list(range(world))
    for h in headers:
        assert placement_tuple(h) == ("KIND_SHARD", 0, [2 * world, 3], [2 * h.address.rank, 0])


@pytest.mark.requires_paddle
def test_rank_from_paddle_launch_environment(fake):
    """paddle imported in a process launched as trainer 1 of 2 (the
    variables paddle.distributed.launch sets), before init_parallel_env."""
    script = textwrap.dedent("""
        import json, sys, warnings
        warnings.filterwarnings("ignore")
        import paddle
        import reprod_client
        from reprod_client import placement
        run = reprod_client.Client(sys.argv[1]).open_run("t/paddle-dist")
        run.log("f", {"x": paddle.ones([2])})
        run.close()
        print(json.dumps([placement.detect_rank(), run.rank, run.world_size]))
    """)
    env = dict(os.environ, PADDLE_TRAINER_ID="1", PADDLE_TRAINERS_NUM="2",
               PADDLE_TRAINER_ENDPOINTS="127.0.0.1:1,127.0.0.1:2",
               PADDLE_CURRENT_ENDPOINT="127.0.0.1:2")
    proc = subprocess.run([sys.executable, "-c", script, fake.address], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    detected, rank, world = json.loads(proc.stdout.strip().splitlines()[-1])
    assert detected == [1, 2, "paddle.distributed"] and (rank, world) == (1, 2)
    assert [h.address.rank for h in fake.headers()] == [1]

    # The same without those variables: a single process.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PADDLE_")}
    proc = subprocess.run([sys.executable, "-c", script, fake.address], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    detected, rank, world = json.loads(proc.stdout.strip().splitlines()[-1])
    assert detected == [0, 1, None] and (rank, world) == (0, 1)


# --- the report's multi-rank fields ------------------------------------------


def _report(doc):
    return reprod_client.Report(compare_pb2.Report(id="rpt-0", rendered=json.dumps(doc),
                                                   passed=doc["passed"]))


def test_report_multi_rank_fields():
    fd = {"checkpoint": "layers", "module": "m", "direction": "forward", "step": 0,
          "key": "m/forward/output/0", "reason": "max_abs", "inputs": "not_captured",
          "passed_before": [], "unmatched": [], "rank": 1}
    doc = {
        "passed": False, "summary": {"tensors": 2, "passed": 1, "failed": 1},
        "tensors": [{"checkpoint": "f", "key": "x", "step": None, "rank": 0, "status": "pass"},
                    {"checkpoint": "f", "key": "x", "step": None, "rank": 1, "status": "fail"}],
        "ranks": [{"rank": 0, "tensors": 1, "passed": 1, "failed": 0, "first_failure": None,
                   "first_divergence": None},
                  {"rank": 1, "tensors": 1, "passed": 0, "failed": 1,
                   "first_failure": {"checkpoint": "f", "key": "x", "step": None},
                   "first_divergence": fd}],
        "global_tensors": [{"checkpoint": "f", "key": "x", "step": None, "ranks": [0, 1],
                            "status": "fail", "stats": {"max_abs": 1.0}}],
        "replica_mismatches": [{"run": "cand", "checkpoint": "g", "key": "w", "step": None,
                                "rank": 1, "against_rank": 0, "reason": "differs"}],
        "first_divergence": fd,
    }
    r = _report(doc)
    assert [x["rank"] for x in r.ranks] == [0, 1]
    assert r.rank(1)["first_divergence"]["rank"] == 1 and r.rank(0)["failed"] == 0
    with pytest.raises(KeyError):
        r.rank(2)
    assert r.global_tensors[0]["ranks"] == [0, 1]
    assert r.replica_mismatches[0]["against_rank"] == 0
    assert r.first_divergence["rank"] == 1
    assert [t["status"] for t in r.tensors_of_rank(1)] == ["fail"]
    assert [reprod_client.Report.tensor_rank(t) for t in r["tensors"]] == [0, 1]
    # Copies: the report cannot be changed through them.
    r.ranks[0]["rank"] = 9
    assert r.ranks[0]["rank"] == 0


def test_report_single_rank_has_empty_multi_rank_fields():
    r = _report({"passed": True, "summary": {"tensors": 1, "passed": 1},
                 "tensors": [{"checkpoint": "f", "key": "x", "step": None, "status": "pass"}],
                 "first_failure": None, "first_divergence": None})
    assert (r.ranks, r.global_tensors, r.replica_mismatches) == ([], [], [])
    assert [t["key"] for t in r.tensors_of_rank(0)] == ["x"] and r.tensors_of_rank(1) == []
    assert r.first_divergence is None
    with pytest.raises(KeyError):
        r.rank(0)


def test_address_to_dict_names_a_nonzero_rank_only():
    from reprod_client.report import address_to_dict
    a = tensor_pb2.TensorAddress(checkpoint="c", key="k", step=3)
    assert address_to_dict(a) == {"checkpoint": "c", "key": "k", "step": 3}
    a.rank = 2
    assert address_to_dict(a) == {"checkpoint": "c", "key": "k", "step": 3, "rank": 2}


# --- through a real reprodd ----------------------------------------------------

@pytest.fixture(scope="module")
def shm_reprodd(tmp_path_factory):
    from conftest import Reprodd
    server = Reprodd(tmp_path_factory.mktemp("reprodd-ranks"), extra_args=["--allow-shm"])
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.parametrize("shm", [False, True], ids=["ingest", "shm"])
def test_ranks_and_placements_round_trip_through_reprodd(shm_reprodd, shm):
    """Two ranks log the same keys into one run; reprodd keeps them apart by
    rank, lists each with its placement, and reads each rank's bytes back."""
    client = Client(shm_reprodd.address)
    name = f"t/roundtrip-{'shm' if shm else 'ingest'}"
    rng = np.random.default_rng(7)
    full = rng.standard_normal((6, 3)).astype(np.float32)
    weights = rng.standard_normal(4)
    runs = [client.open_run(name, rank=r, world_size=2, shm=shm, recreate=(r == 0))
            for r in range(2)]
    for r, run in enumerate(runs):
        run.log("forward", {"logits": full[3 * r:3 * r + 3]}, step=0,
                placement=Shard(0, (6, 3), (3 * r, 0)))
        run.log("grads", {"w": weights, "local": weights * (r + 1)}, step=0,
                placement={"w": Replicate(), "local": Partial()})
        run.log("loss", {"loss": float(r)})
    runs[1].close()
    runs[0].seal()
    infos = client.list_tensors(name)
    got = {(t.rank, t.checkpoint, t.key): t for t in infos}
    assert len(infos) == len(got) == 8
    for r in range(2):
        assert got[(r, "forward", "logits")].placement == Shard(0, (6, 3), (3 * r, 0))
        assert got[(r, "forward", "logits")].shape == (3, 3)
        assert got[(r, "grads", "w")].placement == Replicate()
        assert got[(r, "grads", "local")].placement == Partial()
        assert got[(r, "loss", "loss")].placement is None
        assert np.array_equal(client.read_tensor(name, "forward", "logits", 0, rank=r),
                              full[3 * r:3 * r + 3])
        assert np.array_equal(client.read_tensor(name, "grads", "local", 0, rank=r),
                              weights * (r + 1))
        assert client.read_tensor(name, "loss", "loss", rank=r) == float(r)
    with pytest.raises(reprod_client.NotFound):
        client.read_tensor(name, "loss", "loss", rank=2)
