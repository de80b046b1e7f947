"""gRPC status -> HTTP status, in one table, and Ollama's JSON error bodies.

The status message set by the service is the exact Ollama error text, so it passes through unchanged.
"""

import json

import grpc
from flask import Response

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


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUS.get(code, 500)


def error_response(status: int, message: str) -> Response:
    body = json.dumps({"error": message}, ensure_ascii=False, separators=(",", ":"))
    return Response(body, status=status, content_type="application/json; charset=utf-8")


def rpc_error_response(error: grpc.RpcError) -> Response:
    return error_response(http_status(error.code()), error.details() or error.code().name.lower())
