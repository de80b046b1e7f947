"""gRPC status -> HTTP status, in one table, and Ollama's JSON error bodies.

The status message set by the service is the exact Ollama error text, so it passes through unchanged.
One status comes from gRPC itself: past the server's maximum_concurrent_rpcs, a call is refused at once
with RESOURCE_EXHAUSTED "Concurrent RPC limit exceeded!"; that is Ollama's full queue, so it becomes 503
with Ollama's text. Our own RESOURCE_EXHAUSTED for a full disk says "no space left on device" (Go's text,
store/errors.py) and becomes 507 Insufficient Storage; any other RESOURCE_EXHAUSTED stays a 500.
"""

import grpc
from flask import Response

from corral.rest_shim.jsonenc import dumps

# Ollama's text when its queue is full (server/sched.go ErrMaxQueue), also the scheduler's (engine/scheduler.py)
BUSY = "server busy, please try again.  maximum pending requests exceeded"
GRPC_CONCURRENCY_LIMIT = "Concurrent RPC limit exceeded!"  # grpc/_server.py's text for maximum_concurrent_rpcs
NO_SPACE = "no space left on device"  # store/errors.py NO_SPACE (the shim may run without the service)

HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class HTTPError(Exception):
    """Raised by request parsing to answer at once with an Ollama error body."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def http_status(code: grpc.StatusCode, details: str | None = None) -> int:
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and NO_SPACE in (details or ""):
        return 507
    return HTTP_STATUS.get(code, 500)


def error_response(status: int, message: str) -> Response:
    return Response(dumps({"error": message}), status=status, content_type="application/json; charset=utf-8")


def busy(error: grpc.RpcError) -> bool:
    """True for gRPC's own refusal past the server's concurrency limit."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and error.details() == GRPC_CONCURRENCY_LIMIT


def rpc_error_response(error: grpc.RpcError) -> Response:
    if busy(error):
        return error_response(503, BUSY)
    details = error.details()
    return error_response(http_status(error.code(), details), details or error.code().name.lower())
