"""reprod_client: stream PyTorch / PaddlePaddle tensors to a reprod server
and compare runs.

Example::

    from reprod_client import Client

    client = Client("127.0.0.1:50051")            # default: $REPROD_SERVER
    with client.open_run("team42/bert-torch", framework="torch") as run:
        for step, batch in enumerate(loader):
            logits = model(batch)
            run.log("forward", {"logits": logits}, step=step)  # returns at once
            run.log("loss", {"loss": loss}, step=step)
    # leaving the block flushed and sealed the run (aborted it on an exception)
    report = client.compare("team42/bert-torch", "team42/bert-paddle", preset="competition")
    print(report.passed, report.first_failure)
    print(report.text())                            # reprod_log's log lines

Tensors may be numpy arrays, torch.Tensor (any device; bf16/fp16 kept),
paddle.Tensor, or Python/numpy scalars; nested dicts flatten to "a/b/c"
keys. torch and paddle are never imported by this package. Logging happens
on a background thread with a bounded queue (`max_pending_bytes`); errors
from the server are raised by the next log()/flush()/close()/seal().

`reprod_client.capture(model, run)` hooks every module of a torch or paddle
model and logs its outputs and their gradients, to find the first module
where a port diverges (capture.py).

Distributed jobs: every rank logs into the same run; `open_run` takes the
rank from torch.distributed / paddle.distributed (or `rank=`), and
`run.log(..., placement=Shard(dim, global_shape, offset) | Replicate() |
Partial())` says how a rank's piece relates to the global tensor
(placement.py).

`reprod_client.compat` (also exported here) is a drop-in for reprod_log's
ReprodLogger and ReprodDiffHelper that can stream to the server as well.
"""
from .capture import Capture, capture
from .client import Client, RunInfo, TensorInfo
from .compat import ReprodDiffHelper, ReprodLogger
from .errors import (AlreadyExists, ChecksumMismatch, FailedPrecondition,
                     InvalidArgument, NotFound, ReprodError, ResourceExhausted,
                     ServerUnavailable)
from .placement import Partial, Placement, Replicate, Shard
from .report import Report
from .run import Run, RunStats

__version__ = "0.1.0"

__all__ = [
    "Client", "Run", "RunStats", "Report", "RunInfo", "TensorInfo",
    "ReprodError", "ServerUnavailable", "NotFound", "AlreadyExists",
    "InvalidArgument", "FailedPrecondition", "ChecksumMismatch", "ResourceExhausted",
    "ReprodLogger", "ReprodDiffHelper", "capture", "Capture",
    "Placement", "Shard", "Replicate", "Partial",
]
