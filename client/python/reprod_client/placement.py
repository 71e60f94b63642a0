"""Ranks and placements of distributed runs (multi-rank logging).

The processes (ranks) of a distributed job log into one run; every tensor
address carries the rank that logged it (`Client.open_run(rank=...)`, found
from torch.distributed or paddle.distributed when not given). A tensor may
also say how its rank's piece relates to the global tensor, through the
`placement=` argument of `Run.log`:

  Shard(dim, global_shape, offset)
      this rank holds the block of the global tensor (shape `global_shape`)
      that starts at `offset` (one entry per dimension) and has the logged
      tensor's own shape; `dim` is the dimension the job splits. The server
      merges the pieces of all ranks into the global tensor's statistics.
  Replicate()
      every rank holds the same whole tensor (data parallelism: weights,
      all-reduced gradients); the server checks the ranks agree.
  Partial()
      every rank holds a partial sum of the global tensor (before an
      all-reduce); compared rank to rank only.

Example (data parallelism, rank r of 2, a local batch of 4)::

    run.log("forward", {"logits": logits},                    # [4, 2]
            placement=Shard(0, global_shape=(8, 2), offset=(4 * r, 0)))
    run.log("grads", grads, placement=Replicate())

Semantics and wire fields: common/placement.h and reprod.v1.Placement
(proto/reprod/v1/tensor.proto). Every check the server makes is made here
first, so a bad placement raises ValueError naming the tensor's key before
anything is sent.
"""
import sys

__all__ = ["Placement", "Shard", "Replicate", "Partial", "MAX_RANK",
           "KIND_SHARD", "KIND_REPLICATE", "KIND_PARTIAL", "validate_rank",
           "validate_world_size", "check_placement", "from_proto", "detect_rank"]

#: The largest rank a tensor address may carry (common/placement.h kMaxRank).
MAX_RANK = (1 << 20) - 1

# reprod.v1.Placement.Kind values; kept here so that this module does not
# need the generated stubs.
KIND_SHARD = 1
KIND_REPLICATE = 2
KIND_PARTIAL = 3

_INT64_MAX = (1 << 63) - 1


def _int(value, what):
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise ValueError(f"{what} must be an int, got {value!r}")
    return int(value.__index__())


def validate_rank(rank, what="rank"):
    """The rank as an int; ValueError unless it is an int in 0..MAX_RANK."""
    r = _int(rank, what)
    if not 0 <= r <= MAX_RANK:
        raise ValueError(f"invalid {what} {r}: ranks are 0 to {MAX_RANK}")
    return r


def validate_world_size(world_size):
    """The world size as an int; ValueError unless it is an int in
    1..MAX_RANK + 1."""
    n = _int(world_size, "world_size")
    if not 1 <= n <= MAX_RANK + 1:
        raise ValueError(f"invalid world_size {n}: 1 to {MAX_RANK + 1} ranks")
    return n


class Placement:
    """How a rank's piece relates to the global tensor (base class of
    Shard, Replicate and Partial; not instantiated itself)."""

    kind = None  # "shard", "replicate", "partial"
    _wire_kind = 0
    __slots__ = ()

    def validate(self, key, shape):
        """Raises ValueError naming `key` unless this placement fits a piece
        of shape `shape`."""

    def to_proto(self, msg):
        """Fills a reprod.v1.Placement message."""
        msg.kind = self._wire_kind

    def __eq__(self, other):
        return type(self) is type(other) and self._fields() == other._fields()

    def __hash__(self):
        return hash((type(self).__name__, self._fields()))

    def _fields(self):
        return ()

    def __repr__(self):
        return f"{type(self).__name__}()"


class Replicate(Placement):
    """Every rank holds the same whole tensor; the server checks that the
    ranks' copies are identical."""
    kind = "replicate"
    _wire_kind = KIND_REPLICATE
    __slots__ = ()


class Partial(Placement):
    """Every rank holds a partial sum of the global tensor (before an
    all-reduce); compared rank to rank only."""
    kind = "partial"
    _wire_kind = KIND_PARTIAL
    __slots__ = ()


class Shard(Placement):
    """This rank holds the block of the global tensor of shape
    `global_shape` that starts at `offset` and has the logged tensor's
    shape; `dim` is the dimension the job splits.

    Shard(0, global_shape=(8, 2), offset=(4, 0)) on a [4, 2] tensor: rows
    4..7 of an 8 x 2 global tensor. The constructor checks what it can
    alone (ints, global_shape and offset of the same length, 0 <= dim <
    that length, offsets within the global shape); `Run.log` checks the
    rest against the tensor's shape (ValueError naming the key).
    """
    kind = "shard"
    _wire_kind = KIND_SHARD
    __slots__ = ("dim", "global_shape", "offset")

    def __init__(self, dim, global_shape, offset):
        dim = _int(dim, "Shard dim")
        try:
            gs = tuple(_int(d, "Shard global_shape entry") for d in global_shape)
            off = tuple(_int(o, "Shard offset entry") for o in offset)
        except TypeError:
            raise ValueError("Shard global_shape and offset must be sequences of ints, got "
                             f"{global_shape!r} and {offset!r}") from None
        if not gs:
            raise ValueError("Shard global_shape must have at least one dimension "
                             "(a scalar cannot be sharded)")
        if len(off) != len(gs):
            raise ValueError(f"Shard offset {list(off)} and global_shape {list(gs)} need the "
                             "same number of dimensions")
        if not 0 <= dim < len(gs):
            raise ValueError(f"Shard dim {dim} is not a dimension of the {len(gs)}-d global "
                             f"shape {list(gs)}")
        n = 1
        for d, (o, g) in enumerate(zip(off, gs)):
            if g < 0:
                raise ValueError(f"Shard global_shape {list(gs)}: dimension {d} is negative")
            if not 0 <= o <= g:
                raise ValueError(f"Shard offset {list(off)}: dimension {d} offset {o} is "
                                 f"outside 0..{g} of global_shape {list(gs)}")
            n *= g
        if n > _INT64_MAX:
            raise ValueError(f"Shard global_shape {list(gs)} has more than 2^63-1 elements")
        self.dim = dim
        self.global_shape = gs
        self.offset = off

    def validate(self, key, shape):
        shape = tuple(int(s) for s in shape)
        where = f"tensor {key!r} of shape {list(shape)}: placement {self!r}"
        if not shape:
            raise ValueError(f"{where}: a scalar cannot be sharded")
        if len(shape) != len(self.global_shape):
            raise ValueError(f"{where}: the tensor has {len(shape)} dimensions, global_shape "
                             f"and offset {len(self.global_shape)}")
        for d, (s, o, g) in enumerate(zip(shape, self.offset, self.global_shape)):
            if o + s > g:
                raise ValueError(f"{where}: dimension {d}: offset {o} + size {s} exceeds the "
                                 f"global size {g}")

    def to_proto(self, msg):
        msg.kind = KIND_SHARD
        msg.dim = self.dim
        msg.global_shape.extend(self.global_shape)
        msg.offset.extend(self.offset)

    def _fields(self):
        return (self.dim, self.global_shape, self.offset)

    def __repr__(self):
        return (f"Shard({self.dim}, global_shape={list(self.global_shape)}, "
                f"offset={list(self.offset)})")


def check_placement(key, placement, shape):
    """`placement` (a Placement or None) checked against a tensor of `shape`;
    ValueError naming `key` otherwise."""
    if placement is None:
        return None
    if not isinstance(placement, Placement) or type(placement) is Placement:
        raise ValueError(f"tensor {key!r}: placement must be Shard(...), Replicate(), "
                         f"Partial() or None, got {placement!r}")
    placement.validate(key, shape)
    return placement


def from_proto(msg):
    """The Placement of a reprod.v1.Placement message (None for
    KIND_UNSPECIFIED)."""
    if msg.kind == KIND_SHARD:
        return Shard(msg.dim, tuple(msg.global_shape), tuple(msg.offset))
    if msg.kind == KIND_REPLICATE:
        return Replicate()
    if msg.kind == KIND_PARTIAL:
        return Partial()
    return None


def detect_rank():
    """(rank, world_size, source) of this process in a distributed job that
    is already set up, without importing anything:

    * torch.distributed when torch is imported, dist.is_available() and
      dist.is_initialized(): its get_rank() / get_world_size();
    * else paddle.distributed when paddle is imported and its parallel
      environment is initialised (init_parallel_env) or its world size,
      read from the PADDLE_* launch variables, is above 1;
    * else (0, 1, None): a single process.

    source is "torch.distributed", "paddle.distributed" or None.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        try:
            dist = getattr(torch, "distributed", None)
            if dist is not None and dist.is_available() and dist.is_initialized():
                return int(dist.get_rank()), int(dist.get_world_size()), "torch.distributed"
        except Exception:
            pass
    paddle = sys.modules.get("paddle")
    if paddle is not None:
        try:
            dist = getattr(paddle, "distributed", None)
            if dist is not None:
                initialised = bool(getattr(dist, "is_initialized", lambda: False)())
                world = int(dist.get_world_size())
                if initialised or world > 1:
                    return int(dist.get_rank()), world, "paddle.distributed"
        except Exception:
            pass
    return 0, 1, None
