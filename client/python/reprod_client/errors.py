"""Exceptions raised by reprod_client, and the one place gRPC errors map to
them.

Every exception is a `ReprodError`. Errors from the server carry the gRPC
status code (`code`, a grpc.StatusCode), the server's message (`details`),
the server address (`address`) and, when known, the run (`run`); the
exception text names all of them.
"""
import grpc

__all__ = [
    "ReprodError", "ServerUnavailable", "NotFound", "AlreadyExists",
    "InvalidArgument", "FailedPrecondition", "ChecksumMismatch", "from_rpc_error",
]


class ReprodError(Exception):
    """Base class of every reprod_client error."""

    def __init__(self, message, *, code=None, details=None, address=None, run=None):
        super().__init__(message)
        self.code = code
        self.details = details
        self.address = address
        self.run = run


class ServerUnavailable(ReprodError):
    """The server could not be reached (UNAVAILABLE, DEADLINE_EXCEEDED), also
    after the reconnect budget of a run was spent. The message names the
    address."""


class NotFound(ReprodError):
    """Unknown run, tensor or report (NOT_FOUND)."""


class AlreadyExists(ReprodError):
    """Different bytes already stored at an address of a run opened without
    overwrite, or a run that exists (ALREADY_EXISTS)."""


class InvalidArgument(ReprodError):
    """The server rejected a request as malformed (INVALID_ARGUMENT)."""


class FailedPrecondition(ReprodError):
    """The run is not in a state that allows the call, e.g. logging to a
    sealed run (FAILED_PRECONDITION)."""


class ChecksumMismatch(ReprodError):
    """Bytes read back from the server do not match their crc32c."""


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServerUnavailable,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
}


def from_rpc_error(err, what, address, run=None):
    """Converts a grpc.RpcError raised while doing `what` ("CreateRun",
    "ingest into run 'a/b'", ...) into the matching ReprodError subclass.
    Non-RPC exceptions are wrapped in a plain ReprodError."""
    code = err.code() if hasattr(err, "code") and callable(err.code) else None
    details = err.details() if hasattr(err, "details") and callable(err.details) else str(err)
    cls = _BY_CODE.get(code, ReprodError)
    code_name = code.name if code is not None else type(err).__name__
    if cls is ServerUnavailable:
        msg = f"reprod server at {address} is unavailable ({code_name}) during {what}: {details}"
    else:
        msg = f"{what} failed on reprod server {address} ({code_name}): {details}"
    return cls(msg, code=code, details=details, address=address, run=run)
