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
    "InvalidArgument", "FailedPrecondition", "ChecksumMismatch", "ResourceExhausted",
    "from_rpc_error",
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


class ResourceExhausted(ReprodError):
    """The server refused the request for lack of room (RESOURCE_EXHAUSTED):
    its disk is (nearly) full, a quota or a limit (tensor size, streams) is
    reached. Final, never retried: retrying cannot help until an operator
    frees space. The message says "disk full / quota" and carries the
    server's reason (free and needed bytes, the limit)."""


class ChecksumMismatch(ReprodError):
    """Bytes read back from the server do not match their crc32c."""


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: ServerUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: ServerUnavailable,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _mentions(text, needles):
    text = text.lower()
    return any(n in text for n in needles)


def tls_hint(details, tls, client_cert):
    """A sentence explaining a failed connection as a TLS mismatch, from
    gRPC's error `details` and whether the client used TLS (`tls`) with a
    client certificate (`client_cert`); "" when the text shows no TLS cause.
    The same rules as the C++ client's TlsHint (client/cpp/remote_client.h):
    a connection the server closed points at TLS only while connecting
    ("failed to connect" in the details); later it is an ordinary outage."""
    closed = (_mentions(details, ("failed to connect",))
              and _mentions(details, ("socket closed", "connection reset", "end of tcp stream",
                                      "connection closed")))
    if not tls:
        if closed:
            return ("the server probably requires TLS: pass tls_ca= (or set REPROD_TLS_CA) "
                    "naming the CA that signed its certificate")
        return ""
    if _mentions(details, ("wrong version number", "wrong_version_number", "http_request",
                           "packet length too long")):
        return ("the server does not speak TLS (plaintext reprodd): drop tls_ca/tls_cert, or "
                "start reprodd with --tls-cert and --tls-key")
    if _mentions(details, ("peer name", "hostname", "subject alternative")):
        return ("the server's certificate is not issued for this address: connect by a name "
                "or IP in its subjectAltName")
    if _mentions(details, ("certificate verify failed", "certificate_verify_failed",
                           "unable to get local issuer", "self signed", "self-signed")):
        return ("the server's certificate is not trusted: it is not signed by the CA in "
                "tls_ca (or it has expired)")
    if closed or _mentions(details, ("certificate required", "certificate_required",
                                     "unknown ca", "unknown_ca", "bad certificate",
                                     "bad_certificate", "handshake failure",
                                     "handshake_failure")):
        if client_cert:
            return ("the server refused the TLS connection: its --tls-client-ca probably did "
                    "not sign the client certificate in tls_cert")
        return ("the server probably requires a client certificate (mutual TLS): pass "
                "tls_cert= and tls_key=")
    return ""


def from_rpc_error(err, what, address, run=None, tls=(False, False)):
    """Converts a grpc.RpcError raised while doing `what` ("CreateRun",
    "ingest into run 'a/b'", ...) into the matching ReprodError subclass.
    Non-RPC exceptions are wrapped in a plain ReprodError. `tls`: (TLS on,
    client certificate given), for the hint of a TLS mismatch."""
    code = err.code() if hasattr(err, "code") and callable(err.code) else None
    details = err.details() if hasattr(err, "details") and callable(err.details) else str(err)
    cls = _BY_CODE.get(code, ReprodError)
    code_name = code.name if code is not None else type(err).__name__
    if cls is ServerUnavailable:
        hint = tls_hint(details or "", *tls)
        reason = f"{hint} ({details})" if hint else details
        msg = f"reprod server at {address} is unavailable ({code_name}) during {what}: {reason}"
    elif cls is ResourceExhausted:
        msg = (f"{what} refused by reprod server {address}: disk full / quota "
               f"({code_name}): {details}")
    else:
        msg = f"{what} failed on reprod server {address} ({code_name}): {details}"
    return cls(msg, code=code, details=details, address=address, run=run)
